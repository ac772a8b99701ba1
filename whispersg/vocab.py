"""Vocabulary biasing: a list of terms (the shipped Singapore lexicon or the user's) turned into
Whisper ``hotwords`` for the decoder prompt.

The prompt is short (Whisper allows 223 tokens of context and every prompt token costs decoding
time), so only the terms that fit ``MAX_VOCAB_TOKENS`` are used: list the most useful first in
each ``#`` section; sections take turns.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

from whispersg.errors import OptionError

BUILTIN_VOCABULARIES = {"sg": "sg_vocabulary.txt"}
VOCAB_NONE = "none"
MAX_VOCAB_TOKENS = 120


def vocabulary_path(spec: str) -> Path:
    """The file behind a --vocab value: a built-in name or a path to a text file."""
    if spec in BUILTIN_VOCABULARIES:
        return Path(__file__).resolve().parent / "data" / BUILTIN_VOCABULARIES[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise OptionError(
            f"--vocab {spec}: no such file; pass {', '.join(BUILTIN_VOCABULARIES)}, {VOCAB_NONE}, "
            "or a UTF-8 text file with one term per line"
        )
    return path


@functools.lru_cache(maxsize=8)
def _read_terms(path: Path, modified: float) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise OptionError(f"--vocab {path}: cannot be read as UTF-8 text ({error})") from error
    # Lines starting with '#' head sections (e.g. particles, places, food); terms are drawn from the
    # sections in turn so that a short prompt still covers every kind of word.
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.lstrip().startswith("#"):
            if sections[-1]:
                sections.append([])
            continue
        term = " ".join(line.split())
        if term:
            sections[-1].append(term)
    terms: list[str] = []
    for rank in range(max(len(section) for section in sections)):
        for section in sections:
            if rank < len(section) and section[rank] not in terms:
                terms.append(section[rank])
    return tuple(terms)


def load_vocabulary(spec: Optional[str]) -> tuple[str, ...]:
    """Terms of a --vocab value (empty for none)."""
    if not spec or spec == VOCAB_NONE:
        return ()
    path = vocabulary_path(spec)
    return _read_terms(path, path.stat().st_mtime)


def vocabulary_hotwords(spec: Optional[str], user_hotwords: Optional[str], count_tokens) -> Optional[str]:
    """The hotwords text for the prompt: the user's own hotwords first, then vocabulary terms while they fit."""
    terms = load_vocabulary(spec)
    if not terms:
        return user_hotwords
    text = user_hotwords.strip() if user_hotwords else ""
    for term in terms:
        candidate = f"{text}, {term}" if text else term
        if count_tokens(candidate) > MAX_VOCAB_TOKENS:
            break
        text = candidate
    return text or None
