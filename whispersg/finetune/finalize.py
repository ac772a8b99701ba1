"""From interchange files to a ``datasets`` DatasetDict ready for training.

Joins ids (orphans reported), drops duplicate transcripts (one seeded-random
example kept per normalised sentence), clips over 30 s and labels longer than
Whisper's decoder allows, splits train/test with a seed, and saves the audio
*bytes* (not features) beside each sentence, so the dataset on disk is about
the size of its audio.  Features are computed on the fly at training time.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from whispersg.errors import DataError
from whispersg.finetune.interchange import Example, ReadReport, read_interchange

logger = logging.getLogger(__name__)

MAX_CLIP_SECONDS = 30.0  # Whisper's input window
MAX_LABEL_TOKENS = 448  # Whisper's decoder positions
PROMPT_TOKENS = 5  # <|startoftranscript|> <|lang|> <|task|> <|notimestamps|> ... <|endoftext|>
SAMPLING_RATE = 16000
REPORT_FILE = "whispersg_finalize.json"


@dataclass
class FinalizeReport:
    """Counts and sizes of a finalised dataset; saved beside it as ``whispersg_finalize.json``."""

    output: str
    train: int = 0
    test: int = 0
    audio_bytes: int = 0
    dataset_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        """Prepared dataset size ÷ size of the audio it holds."""
        return self.dataset_bytes / self.audio_bytes if self.audio_bytes else float("nan")


def audio_duration(path: str) -> float:
    """Duration from the file header (fast: no decoding, except for files whose header says nothing);
    raises DataError if the file is unreadable."""
    import soundfile

    from whispersg.audio import decode_file, probe_duration
    from whispersg.errors import AudioError

    try:
        return float(soundfile.info(path).duration)
    except (RuntimeError, OSError, ValueError):  # not a format libsndfile reads (mp3 on old builds, m4a, …)
        pass
    duration = probe_duration(path)
    if duration is not None:
        return duration
    try:
        return decode_file(path).duration
    except AudioError as error:
        raise DataError(str(error)) from error


def label_token_counter(tokenizer_file: Optional[str | Path] = None):
    """A function counting a sentence's Whisper tokens (incl. the prompt tokens).

    Uses the Whisper tokenizer shipped with the built-in model unless another ``tokenizer.json`` is given.
    """
    from tokenizers import Tokenizer

    if tokenizer_file is None:
        from whispersg.models import builtin_model_path

        builtin = builtin_model_path()
        if builtin is None:
            raise DataError("no tokenizer: pass --tokenizer PATH/tokenizer.json (the built-in model is not installed)")
        tokenizer_file = builtin / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    return lambda text: len(tokenizer.encode(" " + text, add_special_tokens=False).ids) + PROMPT_TOKENS


def drop_duplicates(examples: list[Example], seed: int, report: ReadReport) -> list[Example]:
    """Keep one seeded-random example per normalised transcript, in the input order."""
    from whispersg.metrics import normalize

    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(normalize(example.text) or example.text, []).append(index)
    chooser = random.Random(seed)
    keep = sorted(chooser.choice(indices) for indices in groups.values())
    if len(keep) < len(examples):
        report.skip("duplicate transcript", len(examples) - len(keep))
    return [examples[i] for i in keep]


def split_train_test(examples: list[Example], test_size: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded random split; with two or more examples both sides get at least one."""
    if not 0.0 <= test_size < 1.0:
        raise DataError(f"--test_size must be in [0, 1), got {test_size}")
    order = list(examples)
    random.Random(seed).shuffle(order)
    count = round(len(order) * test_size)
    if test_size > 0 and len(order) >= 2:
        count = min(max(count, 1), len(order) - 1)
    return order[count:], order[:count]


def finalize(
    sources: Iterable[str | Path],
    output: str | Path,
    test_size: float = 0.2,
    seed: int = 42,
    deduplicate: bool = True,
    max_seconds: float = MAX_CLIP_SECONDS,
    tokenizer_file: Optional[str | Path] = None,
    progress: bool = True,
    overwrite: bool = False,
) -> FinalizeReport:
    """Build and save the DatasetDict (``train``/``test``: ``id``, ``audio``, ``sentence``, ``duration``).

    ``output`` must be new or empty; an earlier dataset of ours (``whispersg_finalize.json``) is replaced only
    with ``overwrite``."""
    from tqdm import tqdm

    from whispersg.writers import check_output_folder

    check_output_folder(output, REPORT_FILE, overwrite, "prepared dataset")
    report = ReadReport()
    examples: list[Example] = []
    for source in sources:
        joined, joined_report = read_interchange(source)
        examples.extend(joined)
        for reason, count in joined_report.skipped.items():
            report.skip(reason, count)
    ids = [example.id for example in examples]
    if len(set(ids)) != len(ids):
        raise DataError("the same utterance id appears in two sources; ids must be unique across sources")
    if deduplicate:
        examples = drop_duplicates(examples, seed, report)
    count_tokens = label_token_counter(tokenizer_file)
    usable: list[tuple[Example, float]] = []
    for example in tqdm(examples, desc="checking clips", unit="clip", disable=not progress):
        try:
            duration = audio_duration(example.audio_path)
        except DataError as error:
            logger.warning("%s (id %s); skipped", error, example.id)
            report.skip("audio missing or unreadable")
            continue
        if duration <= 0 or duration > max_seconds:
            report.skip(f"clip empty or over {max_seconds:g} s")
            continue
        if count_tokens(example.text) > MAX_LABEL_TOKENS:
            report.skip(f"label over {MAX_LABEL_TOKENS} tokens")
            continue
        usable.append((example, duration))
    if not usable:
        raise DataError(f"no usable examples left ({report.summary()}); check the interchange files")
    durations = {example.id: duration for example, duration in usable}
    train, test = split_train_test([example for example, _ in usable], test_size, seed)
    return _save(train, test, durations, Path(output), progress, dict(report.skipped))


def _rows(examples: list[Example], durations: dict[str, float]):
    for example in examples:
        with open(example.audio_path, "rb") as handle:
            data = handle.read()
        yield {
            "id": example.id,
            "audio": {"bytes": data, "path": os.path.basename(example.audio_path)},
            "sentence": example.text,
            "duration": durations[example.id],
        }


def _save(train: list[Example], test: list[Example], durations: dict[str, float], output: Path, progress: bool,
          skipped: dict[str, int]) -> FinalizeReport:
    import datasets
    from datasets import Audio, Dataset, DatasetDict

    from whispersg.writers import remove_replaced_folder

    if not progress:
        datasets.disable_progress_bars()
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        splits = {}
        for name, examples in (("train", train), ("test", test)):
            # Built from raw bytes and cast (no audio encoder needed); the cache lives in the staging folder.
            if examples:
                split = Dataset.from_generator(
                    _rows,
                    gen_kwargs={"examples": examples, "durations": durations},
                    cache_dir=str(staging / "cache"),
                    features=_plain_features(),
                )
            else:  # e.g. --test_size 0 for a corpus used only for training
                split = Dataset.from_dict({name: [] for name in _plain_features()}, features=_plain_features())
            splits[name] = split.cast_column("audio", Audio(sampling_rate=SAMPLING_RATE))
        saved = staging / "dataset"
        DatasetDict(splits).save_to_disk(str(saved))
        audio_bytes = sum(os.path.getsize(example.audio_path) for example in train + test)
        dataset_bytes = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
        result = FinalizeReport(str(output), train=len(train), test=len(test), audio_bytes=audio_bytes,
                                dataset_bytes=dataset_bytes, skipped=skipped)
        # The marker goes in before the rename: a dataset in place always says it is ours.
        (saved / REPORT_FILE).write_text(json.dumps(asdict(result) | {"size_ratio": result.size_ratio}, indent=2))
        remove_replaced_folder(output, REPORT_FILE)
        saved.replace(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _plain_features():
    from datasets import Features, Value

    return Features(
        {
            "id": Value("string"),
            "audio": {"bytes": Value("binary"), "path": Value("string")},
            "sentence": Value("string"),
            "duration": Value("float32"),
        }
    )
