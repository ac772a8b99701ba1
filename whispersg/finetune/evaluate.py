"""Word error rate of a model on prepared test data or a manifest, for before/after comparisons.

A model is either a Hugging Face Whisper checkpoint (a training output or
checkpoint folder, or a hub id such as ``openai/whisper-small.en`` from the local
cache: transcribed with ``transformers`` generate, clips over 30 s with its
long-form decoding, as the pipeline transcribes whole clips) or a CTranslate2
folder / model name (transcribed by ``WhisperSGPipeline``, exactly as ``whispersg`` would).  Test data is a prepared dataset's split or a JSON-lines
manifest of ``{"audio": path, "text": reference}`` (paths relative to the manifest).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from whispersg.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class Utterance:
    id: str
    samples: np.ndarray
    reference: str


@dataclass
class EvaluationResult:
    model: str
    wer: float
    utterances: int
    hypotheses: list[str]


def load_test_data(source: str | Path, split: str = "test", limit: Optional[int] = None) -> list[Utterance]:
    """Utterances from a prepared dataset folder (its ``split``) or a ``.jsonl`` manifest."""
    source = Path(source)
    items = list(_manifest(source) if source.suffix == ".jsonl" else _prepared(source, split))
    if not items:
        raise DataError(f"{source}: no utterances to evaluate on")
    return items[:limit] if limit else items


def _manifest(path: Path) -> Iterator[Utterance]:
    from whispersg.audio import load_audio

    if not path.is_file():
        raise DataError(f"{path}: no such manifest")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            audio, text = entry["audio"], entry["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{path}:{number}: expected a JSON object with 'audio' and 'text' ({error})") from error
        audio_path = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        yield Utterance(str(entry.get("id", audio)), load_audio(audio_path), text)


def _prepared(path: Path, split: str) -> Iterator[Utterance]:
    from whispersg.finetune.data import decode_row_audio, load_prepared

    prepared = load_prepared(path)
    if split not in prepared:
        raise DataError(f"{path}: has no {split!r} split (has {sorted(prepared)})")
    for index, row in enumerate(prepared[split]):
        yield Utterance(str(row.get("id", index)), decode_row_audio(row), row["sentence"])


def is_transformers_checkpoint(model: str | Path) -> bool:
    """A local folder with ``config.json`` and safetensors weights, or a hub id that is not a CTranslate2 model.

    Hub ids (``owner/name``) are Hugging Face checkpoints unless the local cache holds that repository as a
    CTranslate2 conversion (``model.bin``); WhisperSG model names (``tiny.en``) and other folders are CTranslate2.
    """
    folder = Path(model)
    if folder.exists():
        return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    name = str(model)
    if name.count("/") != 1 or name.startswith((".", "/")):
        return False
    from huggingface_hub import try_to_load_from_cache

    return not isinstance(try_to_load_from_cache(name, "model.bin"), str)


LONG_FORM_SECONDS = 30.0  # Whisper's window: longer clips are decoded window by window


def transcribe_with_checkpoint(model: str | Path, utterances: list[Utterance], batch_size: int = 8, max_length: int = 225,
                               language: Optional[str] = None, task: str = "transcribe") -> list[str]:
    """Greedy transcripts from a Hugging Face Whisper checkpoint (CPU or CUDA); clips over 30 s go through
    transformers' sequential long-form generation (30 s windows moved by the predicted timestamps), not cut."""
    import torch

    from whispersg.finetune.train import load_base

    whisper, processor = load_base(str(model), language, task)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    whisper.to(device).eval()
    texts: dict[int, str] = {}
    short = [i for i, u in enumerate(utterances) if len(u.samples) <= LONG_FORM_SECONDS * 16000]
    for start in range(0, len(short), batch_size):
        indices = short[start : start + batch_size]
        features = processor.feature_extractor(
            [utterances[i].samples for i in indices], sampling_rate=16000, return_tensors="pt"
        ).input_features.to(device)
        with torch.inference_mode():
            tokens = whisper.generate(features, max_new_tokens=max_length)
        for index, text in zip(indices, processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)):
            texts[index] = text.strip()
    for index in sorted(set(range(len(utterances))) - set(short)):
        inputs = processor.feature_extractor(utterances[index].samples, sampling_rate=16000, return_tensors="pt",
                                             truncation=False, padding="longest", return_attention_mask=True)
        with torch.inference_mode():
            tokens = whisper.generate(inputs.input_features.to(device), attention_mask=inputs.attention_mask.to(device),
                                      return_timestamps=True, condition_on_prev_tokens=False)
        texts[index] = processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)[0].strip()
    return [texts[i] for i in range(len(utterances))]


def transcribe_with_pipeline(model: str, utterances: list[Utterance], **options) -> list[str]:
    """Transcripts from a CTranslate2 model through the same pipeline users run."""
    from whispersg.pipeline import WhisperSGPipeline

    pipeline = WhisperSGPipeline(model=model, align=False, diarize=False, **options)
    # Utterances share decoding batches, as a folder of files does in `whispersg`.
    return [transcript.text.strip() for transcript in pipeline.transcribe_all([u.samples for u in utterances])]


def evaluate_model(model: str | Path, utterances: list[Utterance], language: Optional[str] = None,
                   task: str = "transcribe", **options) -> EvaluationResult:
    """WER (Whisper English normaliser, offline ``evaluate`` metric) of one model on the utterances.

    ``language``/``task`` matter for multilingual models (default: English, as in training)."""
    from whispersg.finetune.train import normalized_wer

    if is_transformers_checkpoint(model):
        hypotheses = transcribe_with_checkpoint(model, utterances, language=language, task=task)
    else:
        hypotheses = transcribe_with_pipeline(str(model), utterances, language=language, task=task, **options)
    wer = normalized_wer([u.reference for u in utterances], hypotheses)
    return EvaluationResult(str(model), wer, len(utterances), hypotheses)


def comparison_table(results: list[EvaluationResult]) -> str:
    """A markdown table of the models' WER, with the change relative to the first (the baseline)."""
    lines = ["| model | utterances | WER | vs first |", "|---|---:|---:|---:|"]
    for result in results:
        change = f"{result.wer - results[0].wer:+.4f}" if result is not results[0] else "—"
        lines.append(f"| {result.model} | {result.utterances} | {result.wer:.4f} | {change} |")
    return "\n".join(lines)
