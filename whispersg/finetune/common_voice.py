"""Reader for a Mozilla Common Voice release (``<split>.tsv`` + ``clips/``).

Sentences keep their case and punctuation, which is what Whisper is trained to
output; by default they get the original WhisperSG clean-up (``clean_sentence``:
quotation marks removed, a final full stop added where no end mark is).
The speaker is the row's ``client_id``.  The mp3 clips are used in place; ``finalize`` stores their
bytes and training decodes them on the fly.
"""

from __future__ import annotations

import csv
import logging
import random
from pathlib import Path
from typing import Optional

from whispersg.errors import DataError
from whispersg.finetune.interchange import Example, ReadReport

logger = logging.getLogger(__name__)

_QUOTES = str.maketrans("", "", '"\u201c\u201d\u201e\u00ab\u00bb')  # double quotation marks
_END_MARKS = ".?!\u2026"


def clean_sentence(text: str) -> str:
    """The original recipe's Common Voice clean-up: double quotation marks out (apostrophes stay), a final full stop."""
    text = " ".join(text.translate(_QUOTES).split())
    if text and text[-1] not in _END_MARKS:
        text = text.rstrip(",;:- ") + "."
    return text


def read_common_voice(
    corpus: str | Path,
    split: str = "validated",
    sample: Optional[int] = None,
    seed: int = 0,
    min_up_votes: int = 0,
    max_down_votes: Optional[int] = None,
    clean_text: bool = True,
) -> tuple[list[Example], ReadReport]:
    """Examples from ``<corpus>/<split>.tsv``, optionally vote-filtered and a seeded random sample of N."""
    corpus = Path(corpus)
    table = corpus / f"{split}.tsv"
    clips = corpus / "clips"
    if not table.is_file():
        raise DataError(f"{table}: no such file; pass the Common Voice language folder (with {split}.tsv and clips/)")
    if not clips.is_dir():
        raise DataError(f"{clips}: no clips folder next to {table.name}")
    csv.field_size_limit(1 << 24)
    clips_root = clips.resolve()
    report = ReadReport()
    examples: list[Example] = []
    with open(table, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"path", "sentence"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{table}:1: header lacks column(s) {sorted(missing)}; is this a Common Voice TSV?")
        for number, row in enumerate(reader, start=2):
            text = " ".join((row.get("sentence") or "").split())
            text = clean_sentence(text) if clean_text else text
            if not row.get("path") or not text:
                report.skip("row without a clip or sentence")
                continue
            try:
                up = int(row.get("up_votes") or 0)
                down = int(row.get("down_votes") or 0)
            except ValueError:
                logger.warning("%s:%d: vote counts are not numbers; row skipped", table, number)
                report.skip("malformed row")
                continue
            if up < min_up_votes or (max_down_votes is not None and down > max_down_votes):
                report.skip("vote filter")
                continue
            audio = clips / row["path"]
            # A row names a clip in clips/: an absolute or ../ path (or a link out) must not read other files.
            if not audio.resolve().is_relative_to(clips_root):
                logger.warning("%s:%d: clip path %r is outside %s; row skipped", table, number, row["path"], clips)
                report.skip("clip path outside clips/")
                continue
            if not audio.is_file():
                report.skip("clip file missing")
                continue
            speaker = (row.get("client_id") or "").strip()
            examples.append(Example(Path(row["path"]).stem, str(audio.resolve()), text,
                                    f"common_voice/{speaker}" if speaker else None))
    if sample is not None and sample < len(examples):
        report.skip("not in the random sample", len(examples) - sample)
        examples = random.Random(seed).sample(examples, sample)
    report.kept = len(examples)
    return examples, report
