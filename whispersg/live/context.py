"""What a live decode hears besides the open chunk: the last committed chunks' audio (their text as the
forced start of the transcript) and, as the prompt, the user's prompt and the committed text before them.

A 4 s chunk heard alone is heard worse than among its neighbours (docs/decisions.md#live-audio-context);
openai-whisper likewise conditions on previous text (docs/decisions.md#live-text-prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from whispersg.audio import SAMPLE_RATE
from whispersg.types import Segment


@dataclass
class CommittedChunk:
    """A committed chunk as later decodes use it: its text, and its audio while it may still be context."""

    text: str
    audio: Optional[np.ndarray]


@dataclass(frozen=True)
class Heard:
    """The audio a decode is given and what it is told about it."""

    audio: np.ndarray
    context_seconds: float  # committed audio before the new audio
    initial_prompt: Optional[str]
    prefix: Optional[str]


class ContextWindow:
    """The last committed chunks, oldest first (bounded), and how a decode hears them."""

    def __init__(self, context_seconds: float, context_chars: int, user_prompt: str, max_prefix_chars: int,
                 history_chunks: int) -> None:
        self.context_seconds = context_seconds  # how much committed audio is kept for the decodes that hear it
        self.context_chars = context_chars
        self.user_prompt = user_prompt
        self.max_prefix_chars = max_prefix_chars
        self.history_chunks = history_chunks
        self.history: list[CommittedChunk] = []

    def heard(self, chunk_audio: np.ndarray, context_seconds: float) -> Heard:
        """What a decode of ``chunk_audio`` (the open chunk, or the part of it being committed) is given:
        the audio of the last committed chunks that fit in ``context_seconds`` with it, then it; that
        context's text as the ``prefix``; and as ``initial_prompt`` the user's prompt, then the tail of
        what was committed before the context (``context_chars`` at most, cut at a word boundary)."""
        window = len(chunk_audio) / SAMPLE_RATE
        characters = 0
        first = len(self.history)
        while first > 0:
            previous = self.history[first - 1]
            if previous.audio is None or not previous.text:
                break  # a chunk in which nothing was heard ends the context: its audio says nothing we know
            window += len(previous.audio) / SAMPLE_RATE
            characters += len(previous.text) + 1
            if window > context_seconds or characters > self.max_prefix_chars:
                break
            first -= 1
        context = self.history[first:]
        prompt = " ".join(part for part in (self.user_prompt, self._tail(first)) if part) or None
        if not context:
            return Heard(chunk_audio, 0.0, prompt, None)
        audio = np.concatenate([chunk.audio for chunk in context] + [chunk_audio])
        return Heard(audio, (len(audio) - len(chunk_audio)) / SAMPLE_RATE, prompt,
                     " ".join(chunk.text for chunk in context))

    def _tail(self, before: int) -> str:
        """The last ``context_chars`` characters committed before chunk ``before``, from a word boundary."""
        limit = self.context_chars
        tail = ""
        for chunk in reversed(self.history[:before] if limit else []):
            tail = f"{chunk.text} {tail}".strip()
            if len(tail) > limit:
                tail = tail[-limit:]
                return tail.split(" ", 1)[1] if " " in tail else ""
        return tail

    def remember(self, audio: np.ndarray, segments: list[Segment]) -> None:
        """Keep a committed chunk as context for later decodes; forget audio no window can reach."""
        self.history.append(CommittedChunk(" ".join(s.text.strip() for s in segments).strip(), audio))
        reach = 0.0
        for chunk in reversed(self.history):
            if chunk.audio is not None:
                if reach > self.context_seconds:
                    chunk.audio = None
                else:
                    reach += len(chunk.audio) / SAMPLE_RATE
        del self.history[: -self.history_chunks]


def placed(segments: list[Segment], chunk_start: float, context_seconds: float) -> list[Segment]:
    """Segments decoded from context + chunk, moved to stream time; nothing starts before the chunk
    (the context's own text is the prefix, left out: a time before the chunk is timing drift)."""
    for segment in segments:
        segment.shift(chunk_start - context_seconds)
        segment.start = max(segment.start, chunk_start)
        segment.end = max(segment.end, segment.start)
        for word in segment.words:
            if word.start is not None and word.start < chunk_start:
                word.start = chunk_start
                word.end = max(word.end, chunk_start) if word.end is not None else None
    return segments
