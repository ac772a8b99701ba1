"""Watching the live loop: the events it reports, and the latency of every committed word measured from them.

A ``LiveObserver`` is told of every decode, every hypothesis shown and every word committed;
``LatencyRecorder`` turns those into one ``WordTiming`` per committed word (what the live benchmark
and the tests measure). The loop itself keeps none of this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

from whispersg.live.agreement import word_key
from whispersg.live.decoder import DecodeRequest
from whispersg.live.policy import CommitKind


class CommittedWord(NamedTuple):
    word: str
    end: float  # when it ended in the stream (session seconds)
    how: CommitKind


class LiveObserver:
    """Base of the live loop's observers: override what you watch; every event is a no-op here."""

    def decoded(self, request: DecodeRequest, began: float, seconds: float) -> None:
        """A decode finished: what was asked, when it began (``time.monotonic``) and how long it took."""

    def shown(self, at: float, words: set[str]) -> None:
        """A hypothesis of the open chunk was shown at session time ``at``; ``words`` are its word keys."""

    def committed(self, words: Sequence[CommittedWord], at: float) -> None:
        """``words`` were committed at session time ``at``, in order."""

    def chunk_ended(self) -> None:
        """The open chunk was committed whole; the next hypotheses are of a new chunk."""


@dataclass
class WordTiming:
    """When a committed word ended in the stream, and when it was shown and committed (session seconds)."""

    word: str
    end: float
    shown: float
    committed: float
    how: CommitKind = CommitKind.CHUNK

    @property
    def early(self) -> bool:
        """Committed before its chunk ended."""
        return self.how is not CommitKind.CHUNK


class LatencyRecorder(LiveObserver):
    """One ``WordTiming`` per committed word, in commit order: shown at the first hypothesis after the
    word ended that already held it (or when committed, if none did)."""

    def __init__(self) -> None:
        self.timings: list[WordTiming] = []
        self._shown: list[tuple[float, set[str]]] = []  # (session time shown, word keys) of the open chunk

    def shown(self, at: float, words: set[str]) -> None:
        self._shown.append((at, words))

    def committed(self, words: Sequence[CommittedWord], at: float) -> None:
        for word, ended, how in words:
            key = word_key(word)
            shown = next((when for when, keys in self._shown if when >= ended and key in keys), at)
            self.timings.append(WordTiming(word, ended, min(shown, at), at, how))

    def chunk_ended(self) -> None:
        self._shown = []
