"""Prepared datasets at training time: loading, weighted mixing, and on-the-fly features.

The DatasetDicts written by ``finalize`` hold encoded audio bytes.  Rows stay
encoded until a batch is built: ``SpeechCollator`` decodes (PyAV), computes
log-Mel features with the model's feature extractor and tokenises the labels,
so nothing larger than the audio is ever stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from whispersg.errors import DataError

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16000


def load_prepared(path: str | Path):
    """A DatasetDict written by ``finalize``, with audio left encoded (decoded by the collator)."""
    import datasets
    from datasets import Audio

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise DataError(f"{path}: not a prepared dataset (no dataset_dict.json); run finalize_data.py first")
    prepared = datasets.load_from_disk(str(path))
    for name, split in prepared.items():
        missing = {"audio", "sentence"} - set(split.column_names)
        if missing:
            raise DataError(f"{path}: split {name!r} lacks column(s) {sorted(missing)}")
    return prepared.cast_column("audio", Audio(sampling_rate=SAMPLING_RATE, decode=False))


def mix_datasets(paths: Sequence[str | Path], split: str, weights: Optional[Sequence[float]] = None, seed: int = 42):
    """One dataset from the ``split`` of several prepared datasets.

    With weights, examples are drawn from each source with those probabilities
    (seeded) until every source is used up; without, sources are concatenated and shuffled.
    """
    from datasets import concatenate_datasets, interleave_datasets

    if not paths:
        raise DataError("no prepared dataset given")
    parts = []
    for path in paths:
        prepared = load_prepared(path)
        if split not in prepared:
            raise DataError(f"{path}: has no {split!r} split (has {sorted(prepared)})")
        parts.append(prepared[split].select_columns(["audio", "sentence"]))
    if weights is None or len(parts) == 1:
        return concatenate_datasets(parts).shuffle(seed=seed)
    if len(weights) != len(parts) or any(w < 0 for w in weights) or not sum(weights):
        raise DataError(f"need one non-negative weight per dataset ({len(parts)}), got {list(weights)}")
    total = float(sum(weights))
    return interleave_datasets(
        [part.shuffle(seed=seed) for part in parts],
        probabilities=[w / total for w in weights],
        seed=seed,
        stopping_strategy="all_exhausted",
    )


def decode_row_audio(row: dict) -> Any:
    """The 16 kHz float32 samples of a prepared row's encoded audio."""
    from whispersg.audio import decode_bytes

    audio = row["audio"]
    return decode_bytes(audio["bytes"], audio.get("path") or "dataset row", SAMPLING_RATE).samples


@dataclass
class SpeechCollator:
    """Batches prepared rows into ``input_features`` (log-Mel) and ``labels`` (token ids, padding = -100)."""

    processor: Any
    decoder_start_token_id: int

    def __call__(self, rows: list[dict]) -> dict:
        features = self.processor.feature_extractor(
            [decode_row_audio(row) for row in rows], sampling_rate=SAMPLING_RATE, return_tensors="pt"
        ).input_features
        tokens = self.processor.tokenizer([row["sentence"] for row in rows], padding=True, return_tensors="pt")
        labels = tokens.input_ids.masked_fill(tokens.attention_mask.ne(1), -100)
        # The model prepends the start token itself when it shifts labels right.
        if (labels[:, 0] == self.decoder_start_token_id).all():
            labels = labels[:, 1:]
        return {"input_features": features, "labels": labels}
