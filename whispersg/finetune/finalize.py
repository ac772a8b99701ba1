"""From interchange files to a ``datasets`` DatasetDict ready for training.

Joins ids (orphans reported); filters first (unreadable audio, clips over 30 s,
empty labels, labels longer than Whisper's decoder allows); then drops repeated
transcripts within a speaker (one seeded-random example kept); splits train/test
with a seed by speaker, conversation or clip so no speaker (conversation) is on
both sides; and saves the audio *bytes* (not features) beside each sentence, so
the dataset on disk is about the size of its audio.  The audio column is
``Audio(decode=False)``: plain ``datasets.load_from_disk`` reads it without an
audio decoder (torchcodec); our collator decodes with PyAV.  An empty split is
not saved (``datasets`` cannot load one back), so a dataset may be train-only or test-only.
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
DEDUPLICATE_MODES = ("speaker", "text", "off")
SPLIT_MODES = ("speaker", "conversation", "clip")


@dataclass
class FinalizeReport:
    """Counts and sizes of a finalised dataset; saved beside it as ``whispersg_finalize.json``."""

    output: str
    train: int = 0
    test: int = 0
    split_by: str = "clip"
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


def drop_duplicates(examples: list[Example], seed: int, report: ReadReport, mode: str = "speaker") -> list[Example]:
    """Keep one seeded-random example per normalised transcript, in the input order.

    ``speaker``: repeats by the same speaker only (other speakers reading the same
    prompt are new voices; examples without a speaker are never duplicates);
    ``text``: repeats anywhere; ``off``: keep all.
    """
    from whispersg.metrics import normalize

    if mode not in DEDUPLICATE_MODES:
        raise DataError(f"--deduplicate must be one of {', '.join(DEDUPLICATE_MODES)}, not {mode!r}")
    if mode == "off":
        return examples
    groups: dict[tuple, list[int]] = {}
    for index, example in enumerate(examples):
        text = normalize(example.text) or example.text
        key = (text,) if mode == "text" else (example.speaker or f"id:{example.id}", text)
        groups.setdefault(key, []).append(index)
    chooser = random.Random(seed)
    keep = sorted(chooser.choice(indices) for indices in groups.values())
    if len(keep) < len(examples):
        report.skip("duplicate transcript" + (" of the same speaker" if mode == "speaker" else ""), len(examples) - len(keep))
    return [examples[i] for i in keep]


def split_groups(examples: list[Example], split_by: str) -> list[list[Example]]:
    """Examples that must land on the same side of the split, in first-seen order.

    ``speaker``: a speaker's examples stay together, and so do a conversation's (a
    boundary-mic clip holds both voices); ``conversation``: a conversation's examples
    (a speaker's when there is no conversation); ``clip``: each example alone.
    """
    if split_by not in SPLIT_MODES:
        raise DataError(f"--split_by must be one of {', '.join(SPLIT_MODES)}, not {split_by!r}")
    parent = list(range(len(examples)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def keys(example: Example) -> list[str]:
        if split_by == "clip":
            return []
        if split_by == "conversation":
            key = example.conversation or example.speaker
            return [f"c:{key}"] if key else []
        return [f"{kind}:{key}" for kind, key in (("s", example.speaker), ("c", example.conversation)) if key]

    first: dict[str, int] = {}
    for index, example in enumerate(examples):
        for key in keys(example):
            if key in first:
                parent[root(index)] = root(first[key])
            else:
                first[key] = index
    groups: dict[int, list[Example]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(root(index), []).append(example)
    return list(groups.values())


def default_split_by(examples: list[Example]) -> str:
    """By speaker when every example names one, else by clip."""
    return "speaker" if examples and all(example.speaker for example in examples) else "clip"


def split_train_test(examples: list[Example], test_size: float, seed: int,
                     split_by: str = "clip") -> tuple[list[Example], list[Example]]:
    """Seeded random split of whole groups (``split_groups``) until the test side holds about ``test_size``.

    0 makes a train-only dataset, 1 a test-only one; otherwise, with two or more groups, both sides get one.
    """
    if not 0.0 <= test_size <= 1.0:
        raise DataError(f"--test_size must be in [0, 1], got {test_size}")
    groups = split_groups(examples, split_by)
    random.Random(seed).shuffle(groups)
    if test_size in (0.0, 1.0):
        everything = [example for group in groups for example in group]
        return (everything, []) if test_size == 0.0 else ([], everything)
    if len(groups) < 2:
        raise DataError(f"all {len(examples)} examples belong to one {split_by if split_by != 'clip' else 'clip'}, "
                        "so no held-out test split can be made; pass --split_by clip, or --test_size 0 (train only)")
    target = max(1, round(len(examples) * test_size))
    test: list[list[Example]] = []
    held = 0
    for group in groups:
        if held >= target:
            break
        if test and held + len(group) - target > target - held:  # overshooting is worse than stopping short
            continue
        test.append(group)
        held += len(group)
    if len(test) == len(groups):  # a train split is wanted too
        test.pop()
    chosen = {id(group) for group in test}
    train = [example for group in groups if id(group) not in chosen for example in group]
    return train, [example for group in test for example in group]


def finalize(
    sources: Iterable[str | Path],
    output: str | Path,
    test_size: float = 0.2,
    seed: int = 42,
    deduplicate: str = "speaker",
    max_seconds: float = MAX_CLIP_SECONDS,
    tokenizer_file: Optional[str | Path] = None,
    progress: bool = True,
    overwrite: bool = False,
    split_by: Optional[str] = None,
) -> FinalizeReport:
    """Build and save the DatasetDict (``train``/``test``: ``id``, ``audio``, ``sentence``, ``duration``, ``speaker``).

    ``deduplicate`` is a ``drop_duplicates`` mode; ``split_by`` a ``split_groups`` mode (default: speaker when
    every example names one, else clip).  ``output`` must be new or empty; an earlier dataset of ours
    (``whispersg_finalize.json``) is replaced only with ``overwrite``."""
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
    if split_by is not None and split_by not in SPLIT_MODES:
        raise DataError(f"--split_by must be one of {', '.join(SPLIT_MODES)}, not {split_by!r}")
    if deduplicate not in DEDUPLICATE_MODES:
        raise DataError(f"--deduplicate must be one of {', '.join(DEDUPLICATE_MODES)}, not {deduplicate!r}")
    if not 0.0 <= test_size <= 1.0:
        raise DataError(f"--test_size must be in [0, 1], got {test_size}")
    count_tokens = label_token_counter(tokenizer_file)
    usable: list[tuple[Example, float]] = []
    # Filters come before de-duplication, so the copy a duplicate group keeps is one that is usable.
    for example in tqdm(examples, desc="checking clips", unit="clip", disable=not progress):
        if not example.text.strip():
            report.skip("empty transcript")
            continue
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
    kept = drop_duplicates([example for example, _ in usable], seed, report, deduplicate)
    split_by = split_by or default_split_by(kept)
    train, test = split_train_test(kept, test_size, seed, split_by)
    return _save(train, test, durations, Path(output), progress, dict(report.skipped), split_by)


def _rows(examples: list[Example], durations: dict[str, float]):
    for example in examples:
        with open(example.audio_path, "rb") as handle:
            data = handle.read()
        yield {
            "id": example.id,
            "audio": {"bytes": data, "path": os.path.basename(example.audio_path)},
            "sentence": example.text,
            "duration": durations[example.id],
            "speaker": example.speaker or "",
        }


def _save(train: list[Example], test: list[Example], durations: dict[str, float], output: Path, progress: bool,
          skipped: dict[str, int], split_by: str) -> FinalizeReport:
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
            if not examples:  # datasets cannot load a saved empty split back (IndexError), so none is saved
                continue
            # Built from raw bytes and cast (no audio encoder needed); the cache lives in the staging folder.
            split = Dataset.from_generator(
                _rows,
                gen_kwargs={"examples": examples, "durations": durations},
                cache_dir=str(staging / "cache"),
                features=_plain_features(),
            )
            # decode=False: reading rows needs no torchcodec; the collator decodes with PyAV.
            splits[name] = split.cast_column("audio", Audio(sampling_rate=SAMPLING_RATE, decode=False))
        saved = staging / "dataset"
        DatasetDict(splits).save_to_disk(str(saved))
        audio_bytes = sum(os.path.getsize(example.audio_path) for example in train + test)
        dataset_bytes = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
        result = FinalizeReport(str(output), train=len(train), test=len(test), split_by=split_by,
                                audio_bytes=audio_bytes, dataset_bytes=dataset_bytes, skipped=skipped)
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
            "speaker": Value("string"),
        }
    )
