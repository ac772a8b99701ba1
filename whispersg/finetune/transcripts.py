"""Cleaning IMDA NSC transcripts: annotation marks out, words in, unusable utterances dropped.

The corpus marks noise, pauses, paralinguistics, fillers, discourse particles,
interjections, foreign words, spelled acronyms and cut-off words inline (see
``IMDA_NSC_FORMAT.md``).  A Whisper training label wants plain words, so each
mark is either removed, unwrapped to its word, or makes the utterance unusable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An utterance containing one of these is unintelligible or unusable as a label.
DEFAULT_DROP_MARKERS = ("<Z>", "<UNK>", "<NEN>", "**")

_TAG = re.compile(r"<[^<>]*>")  # <S>, <FIL/>, <SPK/>, <NON/>, <s/>, …
_PARALINGUISTIC = re.compile(r"\((?:ppb|ppc|ppl|ppo)\)", re.IGNORECASE)
_FILLER = re.compile(r"\(([^()]*)\)")  # (uh), (um)
_PARTICLE = re.compile(r"\[([^\[\]]*)\]")  # [ah], [lah]
_INTERJECTION = re.compile(r"!([^!]*)!")  # !walao!
_FOREIGN = re.compile(r"#([^#]*)#")  # #pasar malam#
_ACRONYM = re.compile(r"\b(?:[A-Za-z]_)+[A-Za-z]\b")  # N_A_F_A
_CUT_OFF = re.compile(r"\S*~")  # abbre~
_UNBALANCED = frozenset("<>[]()!#~*_/\\")


@dataclass(frozen=True)
class CleaningRules:
    """How marks become words.  Particles (lah, leh, lor) are Singaporean speech: kept by default."""

    keep_particles: bool = True
    keep_fillers: bool = False
    drop_markers: tuple[str, ...] = DEFAULT_DROP_MARKERS


def clean_transcript(text: str, rules: CleaningRules = CleaningRules()) -> str | None:
    """Return the label for an annotated transcript, or None when the utterance must be dropped."""
    if any(marker in text for marker in rules.drop_markers):
        return None
    text = _PARALINGUISTIC.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _FILLER.sub(lambda m: f" {m.group(1)} " if rules.keep_fillers else " ", text)
    text = _PARTICLE.sub(lambda m: f" {m.group(1)} " if rules.keep_particles else " ", text)
    text = _INTERJECTION.sub(r" \1 ", text)
    text = _FOREIGN.sub(r" \1 ", text)
    text = _ACRONYM.sub(lambda m: m.group(0).replace("_", ""), text)
    text = _CUT_OFF.sub(" ", text)
    text = text.replace("-", " ")
    if any(character in _UNBALANCED for character in text):
        return None  # a mark left open or unknown: the label cannot be trusted
    words = text.split()
    return " ".join(words) if words else None


def has_markup(prompt: str) -> bool:
    """A written prompt with markup characters cannot be used verbatim as a label."""
    return any(character in prompt for character in "<>/\\")
