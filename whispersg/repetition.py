"""Repetition the model invents, found with the word times and removed where results are built.

tiny.en int8 on some CPUs' kernels hears "Hello? Hello? Oh, hello." as six "Hello." with the last
three packed into 0.14 s (issue #25).  A run of copies with one too short to have been said is
suspect; the decoder hears the run's audio again alone and keeps as many copies as it hears there,
so real repetitions ("no, no, no", "words words words") stay.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

from whispersg.types import Word

# Nobody speaks faster than this (characters of text per second of speech, spaces included);
# fast speech runs at about 15-20. More text than that in a span is Whisper inventing it.
MAX_CHARS_PER_SECOND = 30.0
# Two copies are left as they are: two is what people say ("Hello? Hello?"), and a copy squeezed to no
# length is as often a real word ("did I. I thought") that a second, short decode hears no better.
MIN_SUSPECT_COPIES = 3
# A run of this many words the window already has, found again in a re-decoded stretch, is the
# window's text heard twice (two words alone, "in the", repeat by chance); so is a whole re-decode.
MIN_REPEATED_RUN = 3



def word_key(word: str) -> str:
    """A word as compared between hypotheses and for repetition: lower case, letters and digits only."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


def too_short_to_say(words: Sequence[Word]) -> bool:
    """Whether ``words`` span less time than the fastest speaker needs to say them."""
    if any(w.start is None or w.end is None for w in words):
        return False  # no times, no evidence
    letters = sum(len(word_key(w.word)) for w in words) + len(words) - 1
    return words[-1].end - words[0].start < letters / MAX_CHARS_PER_SECOND


def _copies(keys: list[str], start: int, size: int) -> int:
    """How many times ``keys[start:start + size]`` follows itself, from ``start``."""
    phrase = keys[start:start + size]
    if not all(phrase):
        return 0
    count = 1
    while keys[start + count * size:start + (count + 1) * size] == phrase:
        count += 1
    return count


@dataclass(frozen=True)
class Run:
    """``count`` consecutive copies of the ``size``-word phrase that starts at word ``first``."""

    first: int
    size: int
    count: int

    def copies(self) -> list[range]:
        return [range(self.first + c * self.size, self.first + (c + 1) * self.size) for c in range(self.count)]


def suspect_runs(words: list[Word]) -> list[Run]:
    """Runs of a repeated word or phrase with a copy too short to have been said.

    Attention timing alone cannot tell such a copy from a real one it squeezed ("words words
    words words" said at 3 a second got four copies of no length on AVX2 kernels), so these runs
    are heard again (``copies_heard``) before anything is dropped.
    """
    keys = [word_key(w.word) for w in words]
    runs = []
    index = 0
    while index < len(words):
        step = 1
        for size in range(1, (len(words) - index) // 2 + 1):
            count = _copies(keys, index, size)
            if count >= MIN_SUSPECT_COPIES:
                run = Run(index, size, count)
                if any(too_short_to_say([words[i] for i in copy]) for copy in run.copies()):
                    runs.append(run)
                step = count * size
                break
        index += step
    return runs


def copies_heard(words: list[Word], run: Run, heard: list[Word]) -> int:
    """How often ``run``'s phrase occurs in ``heard`` (its audio decoded alone; "Oh, hello" counts)."""
    phrase = [word_key(w.word) for w in words[run.first:run.first + run.size]]
    keys = [word_key(w.word) for w in heard]
    count = index = 0
    while index + run.size <= len(keys):
        if keys[index:index + run.size] == phrase:
            count += 1
            index += run.size
        else:
            index += 1
    return count


def drop_copies(words: list[Word], run: Run, keep: int) -> list[Word]:
    """``words`` with only ``keep`` copies of ``run`` left: the shortest copies go."""
    by_length = sorted(run.copies(), key=lambda copy: _span(words, copy))
    dropped = {i for copy in by_length[:max(0, run.count - keep)] for i in copy}
    return [word for i, word in enumerate(words) if i not in dropped]


def _span(words: list[Word], copy: range) -> float:
    first, last = words[copy[0]], words[copy[-1]]
    return (last.end or 0.0) - (first.start or 0.0)


def new_words(found: list[Word], existing: list[Word]) -> list[Word]:
    """The words of a re-decoded stretch (``found``) the window's own words (``existing``) lack.

    A whole re-decode the window already has, or a run of ``MIN_REPEATED_RUN`` words of it in the
    same order, is the window's text heard again, not new speech.
    """
    found_keys = [word_key(w.word) for w in found]
    existing_keys = [word_key(w.word) for w in existing]
    matcher = difflib.SequenceMatcher(None, existing_keys, found_keys, autojunk=False)
    repeated: set[int] = set()
    for block in matcher.get_matching_blocks():
        if block.size >= MIN_REPEATED_RUN or (block.size >= 2 and block.size == len(found)):
            repeated.update(range(block.b, block.b + block.size))
    return [word for i, word in enumerate(found) if i not in repeated]

