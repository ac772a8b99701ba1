"""The original WhisperSG data recipe as one step: corpora in, prepared datasets out.

IMDA NSC part 1 (phone channel 2) and part 2 (headset channel 0) labelled with
the prompts as written (case and punctuation, so the model keeps writing them),
plus a seeded Common Voice sample with its clean-up (double quotation marks out,
a final full stop).  Part 3 is left out, as in the original: its transcripts
exist only in normalised form (lower case, no punctuation), and training on
them teaches the model to drop both.  Adding it is an explicit choice
(``part3=``), and its labels stay normalised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from whispersg.errors import DataError
from whispersg.finetune.finalize import FinalizeReport, finalize
from whispersg.finetune.interchange import ReadReport, write_interchange

logger = logging.getLogger(__name__)

PART1_CHANNEL = 2  # mobile phone: the original's choice for part 1
PART2_CHANNEL = 0  # headset: the original's choice for part 2
COMMON_VOICE_SAMPLE = 20000


@dataclass
class RecipeResult:
    """What each corpus gave and the prepared datasets written (``imda`` and ``common_voice``)."""

    reads: dict[str, str] = field(default_factory=dict)  # corpus → kept/skipped summary
    datasets: dict[str, FinalizeReport] = field(default_factory=dict)

    def train_command(self) -> str:
        folders = " ".join(report.output for report in self.datasets.values())
        return f"python finetuning/train.py {folders} --output_dir runs/whispersg_small.en"


def prepare_original_recipe(
    output_dir: str | Path,
    part1: Optional[str | Path] = None,
    part2: Optional[str | Path] = None,
    common_voice: Optional[str | Path] = None,
    common_voice_sample: Optional[int] = COMMON_VOICE_SAMPLE,
    part3: Optional[str | Path] = None,
    test_size: float = 0.2,
    seed: int = 42,
    progress: bool = True,
    overwrite: bool = False,
) -> RecipeResult:
    """Prepare ``output_dir/prep/<corpus>`` interchange folders and finalise ``output_dir/imda`` (parts 1, 2
    and, only if given, 3) and ``output_dir/common_voice``, each split by speaker with ``test_size``."""
    from whispersg.finetune.common_voice import read_common_voice
    from whispersg.finetune.imda import read_part3, read_part12

    if not (part1 or part2 or common_voice or part3):
        raise DataError("the recipe needs at least one corpus: --part1, --part2, --common_voice (or --part3)")
    output = Path(output_dir)
    prep = output / "prep"
    result = RecipeResult()
    imda_sources: list[Path] = []

    def keep(name: str, examples, report: ReadReport) -> Path:
        folder = prep / name
        write_interchange(folder, examples)
        result.reads[name] = report.summary()
        logger.info("%s: %s", name, report.summary())
        return folder

    if part1:
        imda_sources.append(keep("part1", *read_part12(part1, prep / "part1", PART1_CHANNEL, "original", progress=progress)))
    if part2:
        imda_sources.append(keep("part2", *read_part12(part2, prep / "part2", PART2_CHANNEL, "original", progress=progress)))
    if part3:
        logger.warning("part 3 added by choice: its labels are normalised (lower case, no punctuation), unlike parts 1/2")
        imda_sources.append(keep("part3", *read_part3(part3, prep / "part3", progress=progress)))
    if imda_sources:
        result.datasets["imda"] = finalize(imda_sources, output / "imda", test_size, seed, progress=progress,
                                           overwrite=overwrite)
    if common_voice:
        examples, report = read_common_voice(common_voice, sample=common_voice_sample, seed=seed, clean_text=True)
        result.datasets["common_voice"] = finalize([keep("common_voice", examples, report)], output / "common_voice",
                                                   test_size, seed, progress=progress, overwrite=overwrite)
    return result
