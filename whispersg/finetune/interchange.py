"""The interchange format between corpus readers and ``finalize``.

Two UTF-8 files in one folder, same ids in the same order, one example per line:

* ``audio_paths.txt``: ``<id>\\t<absolute path to the audio file>``
* ``text.txt``: ``<id>\\t<transcript>``
* ``speakers.txt`` (optional): ``<id>\\t<speaker>[\\t<conversation>]``, which ``finalize``
  uses to de-duplicate within a speaker and to keep speakers and conversations on one side of the split

Any corpus can be brought into the fine-tuning chain by writing these two files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from whispersg.errors import DataError

AUDIO_PATHS_FILE = "audio_paths.txt"
TEXT_FILE = "text.txt"
SPEAKERS_FILE = "speakers.txt"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One utterance: a unique id, its audio file and its transcript."""

    id: str
    audio_path: str
    text: str
    speaker: Optional[str] = None  # who speaks (unique across corpora), when the corpus says
    conversation: Optional[str] = None  # the recording session it was cut from (conversational corpora)


@dataclass
class ReadReport:
    """What a reader or the joiner kept and what it skipped, with the reasons (shown to the user)."""

    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def summary(self) -> str:
        parts = [f"kept {self.kept}"] + [f"skipped {count} ({reason})" for reason, count in sorted(self.skipped.items())]
        return ", ".join(parts)


def write_interchange(folder: str | Path, examples: Iterable[Example]) -> int:
    """Write the two interchange files atomically; returns the number of examples written."""
    from whispersg.writers import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = list(examples)
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise DataError(f"{folder}: duplicate utterance id {example.id!r}; ids must be unique")
        seen.add(example.id)
        for value, what in ((example.id, "id"), (example.audio_path, "audio path"), (example.text, "transcript"),
                            (example.speaker or "", "speaker"), (example.conversation or "", "conversation")):
            if "\t" in value or "\n" in value:
                raise DataError(f"{folder}: the {what} of {example.id!r} contains a tab or newline")
    atomic_write_text(folder / AUDIO_PATHS_FILE, "".join(f"{e.id}\t{e.audio_path}\n" for e in examples))
    atomic_write_text(folder / TEXT_FILE, "".join(f"{e.id}\t{e.text}\n" for e in examples))
    if any(e.speaker for e in examples):
        atomic_write_text(folder / SPEAKERS_FILE, "".join(
            f"{e.id}\t{e.speaker}" + (f"\t{e.conversation}" if e.conversation else "") + "\n" for e in examples if e.speaker))
    else:
        (folder / SPEAKERS_FILE).unlink(missing_ok=True)  # an earlier run's file would describe other examples
    return len(examples)


def read_pairs(path: str | Path) -> dict[str, str]:
    """Read one interchange file into ``{id: value}``; malformed lines name file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; run a data preparation script first or write it yourself")
    pairs: dict[str, str] = {}
    with open(path, "rb") as handle:  # decoded line by line, so a bad byte is reported with its line
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}:{number}: not valid UTF-8 (byte {error.start + 1} of the line); "
                                "save the file as UTF-8") from None
            if not line.strip():
                continue
            key, tab, value = line.partition("\t")
            if not tab or not key.strip():
                raise DataError(f"{path}:{number}: expected '<id>\\t<value>', got {line[:60]!r}")
            key = key.strip()
            if key in pairs:
                raise DataError(f"{path}:{number}: id {key!r} appears twice (first value {pairs[key][:40]!r})")
            pairs[key] = value.strip()
    return pairs


def read_interchange(folder: str | Path) -> tuple[list[Example], ReadReport]:
    """Join ``audio_paths.txt`` and ``text.txt`` by id, dropping (and reporting) orphans on either side."""
    folder = Path(folder)
    audio_paths = read_pairs(folder / AUDIO_PATHS_FILE)
    texts = read_pairs(folder / TEXT_FILE)
    speakers = read_pairs(folder / SPEAKERS_FILE) if (folder / SPEAKERS_FILE).is_file() else {}
    report = ReadReport()
    examples = []
    for key, audio_path in audio_paths.items():
        if key not in texts:
            report.skip(f"id in {AUDIO_PATHS_FILE} without a transcript in {TEXT_FILE}")
            continue
        speaker, _, conversation = speakers.get(key, "").partition("\t")
        examples.append(Example(key, audio_path, texts[key], speaker.strip() or None, conversation.strip() or None))
    orphan_texts = len(set(texts) - set(audio_paths))
    if orphan_texts:
        report.skip(f"id in {TEXT_FILE} without audio in {AUDIO_PATHS_FILE}", orphan_texts)
    report.kept = len(examples)
    for reason, count in report.skipped.items():
        logger.warning("%s: %d %s", folder, count, reason)
    return examples, report
