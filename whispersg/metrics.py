"""Scoring shared by tests, benchmarks and fine-tuning: WER after Whisper's English normaliser.

Needs the ``[test]`` extra (jiwer, whisper-normalizer); imported only by code that scores.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Optional

from whispersg.types import SpeakerTurn


@functools.lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Lower-case, strip punctuation, spell numbers consistently (Whisper's English normaliser)."""
    return " ".join(_normalizer()(text).split())


def corpus_wer(references: Iterable[str], hypotheses: Iterable[str],
               scorer: Optional[Callable[[list[str], list[str]], float]] = None) -> float:
    """Word error rate over a whole corpus (total errors / total reference words), normalised.

    References that normalise to nothing are left out.  ``scorer(references, hypotheses)`` computes
    the rate on the normalised texts (default: jiwer; fine-tuning passes its ``evaluate`` metric).
    """
    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    if not keep:
        raise ValueError("no reference words to score against")
    if scorer is None:
        import jiwer

        scorer = jiwer.wer
    return float(scorer([refs[i] for i in keep], [hyps[i] for i in keep]))


def read_rttm(path) -> list:
    """Speaker turns from an RTTM file."""
    from pathlib import Path

    turns = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] == "SPEAKER":
            start, duration = float(parts[3]), float(parts[4])
            turns.append(SpeakerTurn(start, start + duration, parts[7]))
    return turns


def read_stm(path) -> list[tuple[float, float, str, str]]:
    """(start, end, speaker, text) rows of an STM reference transcript."""
    from pathlib import Path

    rows = []
    for line in Path(path).read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            rows.append((float(parts[3]), float(parts[4]), parts[2], parts[5]))
    return rows


def diarization_error_rate(reference: list, hypothesis: list, collar: float = 0.25) -> float:
    """DER (pyannote.metrics) between two lists of SpeakerTurn, with a forgiveness collar in seconds."""
    from pyannote.core import Annotation
    from pyannote.core import Segment as Span
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns) -> Annotation:
        result = Annotation()
        for index, turn in enumerate(turns):
            result[Span(turn.start, turn.end), index] = turn.speaker
        return result

    return float(DiarizationErrorRate(collar=collar)(annotation(reference), annotation(hypothesis)))
