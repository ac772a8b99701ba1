"""Live audio sources: a file replayed in real time, raw PCM on stdin, PCM pushed by the caller
(the service's WebSocket), and the microphone (``whispersg.capture``).

Each source runs a producer thread (or PyAudio's callback) that never blocks:
blocks of 16 kHz mono float32 go into a bounded queue, and what does not fit
is counted in ``dropped_frames`` instead of stalling the audio device.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from whispersg.audio import SAMPLE_RATE, load_audio
from whispersg.capture import BLOCK_SECONDS, LiveSource, MicrophoneSource
from whispersg.errors import AudioError, OptionError

logger = logging.getLogger(__name__)


class FileSource(LiveSource):
    """A recording replayed at real-time pace (``speed`` × real time; 0 = as fast as possible)."""

    name = "file"

    def __init__(self, path: str | Path, speed: float = 1.0, lockstep: bool = False) -> None:
        super().__init__()
        if speed < 0:
            raise AudioError(f"--speed must be >= 0 (got {speed})")
        self.path = Path(path)
        self.samples = load_audio(self.path)
        self.speed = speed
        # Lockstep (tests, benchmarks): each block waits until the transcriber has taken the one before,
        # so it is never behind and runs every interim, however slow the machine: results are repeatable.
        self.lockstep = lockstep

    def _produce(self) -> None:
        step = int(BLOCK_SECONDS * SAMPLE_RATE)
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(self.samples), step)):
            if self._stop.is_set():
                return
            if self.speed > 0:
                due = start + (index + 1) * BLOCK_SECONDS / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            else:
                while self.lockstep and not self._queue.empty() and not self._stop.is_set():
                    time.sleep(0.001)
                # As fast as possible, but never drop: wait for room.
                self._queue.put(self.samples[offset : offset + step])
                continue
            self._offer(self.samples[offset : offset + step])


class StdinSource(LiveSource):
    """Raw 16 kHz mono signed 16-bit little-endian PCM from a stream (stdin by default)."""

    name = "stdin"

    def __init__(self, stream: Optional[BinaryIO] = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdin.buffer

    def _produce(self) -> None:
        size = int(BLOCK_SECONDS * SAMPLE_RATE) * 2
        pcm = Pcm16Reader()
        while not self._stop.is_set():
            data = self.stream.read(size)
            if not data:
                return
            samples = pcm.samples(data)
            if len(samples):
                self._offer(samples)


class Pcm16Reader:
    """Turns a byte stream of 16-bit little-endian PCM into float32 samples, whatever the chunk boundaries."""

    def __init__(self) -> None:
        self._leftover = b""

    def samples(self, data: bytes) -> np.ndarray:
        data = self._leftover + data
        usable = len(data) - len(data) % 2
        self._leftover = data[usable:]
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


class PushSource(LiveSource):
    """Audio handed over by the caller (a WebSocket connection): ``push`` PCM bytes, then ``finish``.

    ``push`` never blocks: when the transcriber is more than ``QUEUE_SECONDS``
    behind, the audio is counted as dropped, as with the microphone.
    """

    name = "push"

    def __init__(self) -> None:
        super().__init__()
        self._pcm = Pcm16Reader()
        self._pending = np.zeros(0, dtype=np.float32)

    def start(self) -> None:
        self.started_at = time.monotonic()

    def push(self, data: bytes) -> None:
        step = int(BLOCK_SECONDS * SAMPLE_RATE)
        self._pending = np.concatenate([self._pending, self._pcm.samples(data)])
        while len(self._pending) >= step:
            self._offer(self._pending[:step])
            self._pending = self._pending[step:]

    def finish(self) -> None:
        """No more audio: what was pushed is still transcribed, then the transcriber stops."""
        if len(self._pending):
            self._offer(self._pending)
            self._pending = np.zeros(0, dtype=np.float32)
        self._done.set()


def open_source(mic_id: Optional[int], input_path: Optional[str], speed: float) -> LiveSource:
    """The source the live CLI was asked for."""
    if input_path == "-":
        return StdinSource()
    if input_path:
        return FileSource(input_path, speed)
    if mic_id is not None:
        return MicrophoneSource(mic_id)
    raise OptionError("no audio source: pass --mic_id N (see --mic_id list), --input FILE or --input -")
