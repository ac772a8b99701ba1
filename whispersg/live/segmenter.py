"""Streaming segmentation: Silero VAD on the live stream, and where to cut the open chunk.

The open chunk is the audio not yet committed.  It is cut (committed) when:
- a pause of ``silence_duration`` follows speech (the natural end of an utterance);
- it is longer than ``soft_limit`` and any short pause (``SOFT_PAUSE``) comes;
- it reaches ``hard_limit``: cut now, at the quietest point of its last second.
Silence with no speech before it is dropped as it arrives, so the open chunk
never holds more than ``hard_limit`` seconds and per-step work stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from whispersg.audio import SAMPLE_RATE

WINDOW = 512  # Silero's window at 16 kHz (32 ms)
CONTEXT = 64
SOFT_PAUSE = 0.2  # s: the shortest pause a soft cut waits for
KEEP_SILENCE = 0.3  # s of silence kept before speech, so the first word's onset is whole


class StreamingVad:
    """Silero (the ONNX model shipped with faster-whisper) fed window by window, state carried."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Speech probabilities for every complete 32 ms window the new samples finish."""
        self._pending = np.concatenate([self._pending, samples])
        count = len(self._pending) // WINDOW
        probabilities = np.zeros(count, dtype=np.float32)
        for index in range(count):
            window = self._pending[index * WINDOW : (index + 1) * WINDOW]
            batch = np.concatenate([self._context, window])[None, :]
            output, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
            probabilities[index] = float(np.asarray(output).reshape(-1)[0])
            self._context = window[-CONTEXT:]
        self._pending = self._pending[count * WINDOW :]
        return probabilities


@dataclass
class Cut:
    """Commit the open chunk's first ``samples`` samples (the reason is for logs and tests)."""

    samples: int
    reason: str


class ChunkSegmenter:
    """Holds the open chunk and decides when and where to cut it."""

    def __init__(self, soft_limit: Optional[float], hard_limit: Optional[float], silence_duration: float,
                 threshold: float = 0.5) -> None:
        # Defaults live in LiveSettings (whispersg.live.settings), the one place the CLI reads them from.
        # A limit that is None or <= 0 is off.
        self.soft_limit = soft_limit if soft_limit and soft_limit > 0 else None
        self.hard_limit = hard_limit if hard_limit and hard_limit > 0 else None
        self.silence_duration = silence_duration
        self.threshold = threshold
        self.negative_threshold = max(0.01, threshold - 0.15)
        self.vad = StreamingVad()
        self.audio = np.zeros(0, dtype=np.float32)  # the open chunk
        self.offset = 0  # stream sample index where the open chunk starts
        self._probabilities = np.zeros(0, dtype=np.float32)  # per window of the open chunk (aligned to offset)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def has_speech(self) -> bool:
        return bool(self.speech().any())

    def push(self, samples: np.ndarray) -> Optional[Cut]:
        """Add samples; return a Cut when the open chunk should be committed now."""
        self.audio = np.concatenate([self.audio, samples])
        self._probabilities = np.concatenate([self._probabilities, self.vad.feed(samples)])
        if not self.has_speech:
            self._drop_leading_silence()
            return None
        return self._decide()

    def _decide(self) -> Optional[Cut]:
        window_s = WINDOW / SAMPLE_RATE
        speaking = self._probabilities >= self.negative_threshold
        trailing = 0
        for value in speaking[::-1]:
            if value:
                break
            trailing += 1
        pause = trailing * window_s
        scored_end = len(self._probabilities) * WINDOW
        if pause >= self.silence_duration:
            return Cut(scored_end - int((pause - min(KEEP_SILENCE, pause / 2)) * SAMPLE_RATE), "pause")
        if self.soft_limit and self.duration >= self.soft_limit and pause >= SOFT_PAUSE:
            return Cut(scored_end - int(pause / 2 * SAMPLE_RATE), "soft limit")
        if self.hard_limit and self.duration >= self.hard_limit:
            return Cut(self._quietest_point_in_last_second(), "hard limit")
        return None

    def _quietest_point_in_last_second(self) -> int:
        span = min(len(self.audio), SAMPLE_RATE)
        tail = self.audio[len(self.audio) - span :]
        frames = max(1, span // WINDOW)
        energy = (tail[: frames * WINDOW].reshape(frames, -1) ** 2).mean(axis=1)
        return len(self.audio) - span + int(np.argmin(energy)) * WINDOW + WINDOW // 2

    def _drop_leading_silence(self) -> None:
        keep_windows = int(KEEP_SILENCE * SAMPLE_RATE) // WINDOW
        drop_windows = len(self._probabilities) - keep_windows
        if drop_windows > 0:
            self.take(drop_windows * WINDOW)

    def speech(self, samples: Optional[int] = None) -> np.ndarray:
        """Which VAD windows of the chunk's first ``samples`` samples (all: None) hold speech."""
        windows = len(self._probabilities) if samples is None else max(0, samples) // WINDOW
        return self._probabilities[:windows] >= self.threshold

    def take(self, samples: int) -> tuple[int, np.ndarray]:
        """Remove the chunk's first ``samples`` samples; return (their stream offset, the audio)."""
        samples = max(0, min(samples, len(self.audio)))
        windows = samples // WINDOW
        samples = windows * WINDOW  # keep VAD windows aligned with the chunk
        taken = self.audio[:samples]
        start = self.offset
        self.audio = self.audio[samples:]
        self._probabilities = self._probabilities[windows:]
        self.offset += samples
        return start, taken

    def take_all(self) -> tuple[int, np.ndarray]:
        start, audio = self.offset, self.audio
        self.offset += len(self.audio)
        self.audio = np.zeros(0, dtype=np.float32)
        self._probabilities = np.zeros(0, dtype=np.float32)
        return start, audio
