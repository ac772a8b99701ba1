"""LocalAgreement: which words of the open chunk may be committed before the chunk ends.

Each interim hypothesis of the open chunk is compared with the one before it,
both taken after the last word already settled; the longest prefix they agree
on (word by word, ignoring case and punctuation, each word confident in both)
is settled: shown as committed and never rewritten (ufal/whisper_streaming's
LocalAgreement-2, plus the confidence test), once the caller says enough audio
was heard after it; until then it must keep being agreed on.  When the chunk
is cut, its final decode (beam search) supplies the words after the last
settled one, and the settled words join the final segments they fall in.

All times here are stream seconds (session time), so settled words stay valid
when the open chunk's start moves.
"""

from __future__ import annotations

from typing import Optional

from whispersg.repetition import word_key
from whispersg.types import Segment, Word

MAX_REPEAT_NGRAM = 5  # how many settled words a new hypothesis may repeat at its start (timestamp drift)
REPEAT_WINDOW = 0.3  # s: a repeat counts only if it starts this close to the last settled word's end
# Word probability a word needs in both hypotheses to be settled: greedy interims of partial audio
# agree on some wrong words, and below 0.5 they cost accuracy (docs/decisions.md#live-agreement-score).
MIN_SCORE = 0.5


def word_keys(text: str) -> set[str]:
    return {word_key(w) for w in text.split()} - {""}


def _midpoint(word: Word) -> float:
    return (word.start + word.end) / 2


def _confident(word: Word) -> bool:
    return word.score is None or word.score >= MIN_SCORE


def _timed(words: list[Word]) -> list[Word]:
    return [w for w in words if w.start is not None and w.end is not None and word_key(w.word)]


class StablePrefix:
    """The settled words of the open chunk and the unsettled tail of the last hypothesis."""

    def __init__(self) -> None:
        self.settled: list[Word] = []
        self._previous: list[Word] = []  # the unsettled tail of the last hypothesis
        self._waiting = 0  # how many words at its start were agreed on but not yet settled (too young)
        self.forced_count = 0  # how many of the words the last update settled were forced (the last ones)

    @property
    def text(self) -> str:
        """The settled words as shown."""
        return " ".join(w.word for w in self.settled)

    @property
    def boundary(self) -> Optional[float]:
        """End (stream seconds) of the last settled word, or None."""
        return self.settled[-1].end if self.settled else None

    @property
    def oldest_unagreed_end(self) -> Optional[float]:
        """End (stream seconds) of the first unsettled word of the last hypothesis that the two
        hypotheses did not agree on (agreed words wait only for audio after them), or None."""
        return self._previous[self._waiting].end if len(self._previous) > self._waiting else None

    def update(self, hypothesis: list[Word], settle_until: Optional[float] = None,
               agree_until: Optional[float] = None) -> tuple[list[Word], list[Word]]:
        """Compare a new hypothesis (timed words, stream seconds) with the previous one.

        Agreed words are settled only if they end by ``agree_until`` (the caller's demand for audio
        after them); a younger one stays unsettled and must agree again with the next hypothesis.
        Words that end by ``settle_until`` are settled whether or not the hypotheses agree (the
        caller's bound on latency, for a hypothesis decoded as carefully as the chunk's final one).
        Returns (words settled now, the hypothesis's still unsettled tail).
        """
        tail = self._after_boundary(_timed(hypothesis))
        agreed = waiting = 0
        for before, now in zip(self._previous, tail):
            if word_key(before.word) != word_key(now.word) or not (_confident(before) and _confident(now)):
                break
            if waiting or (agree_until is not None and now.end > agree_until):
                waiting += 1
            else:
                agreed += 1
        settle = agreed
        if settle_until is not None:
            while settle < len(tail) and tail[settle].end <= settle_until:
                settle += 1
        # Waiting words the bound settles were agreed on: only the ones after them count as forced.
        self.forced_count = max(0, settle - agreed - waiting)
        self._waiting = max(0, agreed + waiting - settle)
        settled_now, tail = tail[:settle], tail[settle:]
        self.settled.extend(settled_now)
        self._previous = tail
        return settled_now, tail

    def finish_chunk(self, segments: list[Segment], chunk_end: float) -> list[Segment]:
        """The chunk's final segments (stream seconds) with the settled words in place of their own.

        Settled words up to ``chunk_end`` are merged and forgotten; any later ones (a hard cut
        can fall before a settled word's end) stay settled for the next chunk.
        """
        inside = [w for w in self.settled if _midpoint(w) <= chunk_end]
        self.settled = self.settled[len(inside):]
        self._previous = []
        self._waiting = 0
        if not inside:
            return segments
        boundary = inside[-1].end
        if not segments:
            return [Segment(inside[0].start, boundary, " ".join(w.word for w in inside), words=list(inside))]
        if any(not s.words for s in segments):
            # No word timing: keep the final segments that start after the settled words.
            later = [s for s in segments if s.start >= boundary]
            return [Segment(inside[0].start, boundary, " ".join(w.word for w in inside), words=list(inside)), *later]
        remainder = self._drop_repeated_start([w for s in segments for w in s.words if _midpoint(w) > boundary], inside)
        keep = {id(w) for w in remainder}
        attached: dict[int, list[Word]] = {index: [] for index in range(len(segments))}
        for word in inside:
            attached[_nearest_segment(segments, _midpoint(word))].append(word)
        merged = []
        for index, segment in enumerate(segments):
            words = attached[index] + [w for w in segment.words if id(w) in keep]
            if words:
                merged.append(segment.with_words(words))
        return merged

    def _after_boundary(self, words: list[Word]) -> list[Word]:
        if self.boundary is None:
            return words
        return self._drop_repeated_start([w for w in words if _midpoint(w) > self.boundary], self.settled)

    @staticmethod
    def _drop_repeated_start(words: list[Word], settled: list[Word]) -> list[Word]:
        """Drop the first n words if they repeat the last n settled ones right where those ended
        (the same words with timestamps drifted past the boundary, not a speaker's repetition)."""
        if not words or not settled or words[0].start > settled[-1].end + REPEAT_WINDOW:
            return words
        for n in range(min(MAX_REPEAT_NGRAM, len(words), len(settled)), 0, -1):
            if [word_key(w.word) for w in settled[-n:]] == [word_key(w.word) for w in words[:n]]:
                return words[n:]
        return words


def _nearest_segment(segments: list[Segment], time: float) -> int:
    def distance(segment: Segment) -> float:
        return 0.0 if segment.start <= time <= segment.end else min(abs(time - segment.start), abs(time - segment.end))

    return min(range(len(segments)), key=lambda index: distance(segments[index]))
