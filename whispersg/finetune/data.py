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
    """A DatasetDict written by ``finalize`` (a split may be absent: train-only or test-only data), audio left encoded."""
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


def prepared_splits(paths: Sequence[str | Path], split: str) -> list:
    """The ``split`` of each prepared dataset that has one (train-only or test-only datasets are skipped for the other)."""
    if not paths:
        raise DataError("no prepared dataset given")
    parts = []
    for path in paths:
        prepared = load_prepared(path)
        if split in prepared and len(prepared[split]):
            parts.append(prepared[split].select_columns(["audio", "sentence"]))
        else:
            logger.info("%s: no %r split; not used for %s", path, split, "training" if split == "train" else "evaluation")
    return parts


def mix_datasets(paths: Sequence[str | Path], split: str, weights: Optional[Sequence[float]] = None, seed: int = 42,
                 oversample: bool = False):
    """One dataset from the ``split`` of several prepared datasets (None when none has that split).

    Without weights the sources are concatenated and shuffled.  A weight is a
    source's share of the mix (weights are normalised to sum to 1).  By default no
    example repeats: the mix is the largest one with those shares (the source that
    runs out first limits it; the unused rest of the others is logged).  With
    ``oversample``, every example of every source is used and the smaller shares are
    filled by repeating examples (``interleave_datasets(stopping_strategy="all_exhausted")``).
    """
    from datasets import concatenate_datasets, interleave_datasets

    parts = prepared_splits(paths, split)
    if not parts:
        return None
    if weights is None or len(paths) == 1:
        return concatenate_datasets(parts).shuffle(seed=seed, keep_in_memory=True)
    if len(weights) != len(paths) or any(w < 0 for w in weights) or not sum(weights):
        raise DataError(f"need one non-negative weight per dataset ({len(paths)}), got {list(weights)}")
    if len(parts) != len(paths):
        raise DataError(f"weights need a {split!r} split in every dataset; drop the weights or the test-only dataset")
    shares = [w / float(sum(weights)) for w in weights]
    shuffled = [part.shuffle(seed=seed, keep_in_memory=True) for part in parts]
    if oversample:
        return interleave_datasets(shuffled, probabilities=shares, seed=seed, stopping_strategy="all_exhausted")
    total = min(len(part) / share for part, share in zip(shuffled, shares) if share > 0)
    counts = [min(len(part), round(total * share)) for part, share in zip(shuffled, shares)]
    for path, part, count in zip(paths, shuffled, counts):
        if count < len(part):
            logger.warning("%s: %d of %d %s examples used to keep the weights without repeats (--oversample repeats "
                           "the smaller sources instead)", path, count, len(part), split)
    mixed = concatenate_datasets([part.select(range(count), keep_in_memory=True)
                                  for part, count in zip(shuffled, counts) if count])
    return mixed.shuffle(seed=seed, keep_in_memory=True)


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
