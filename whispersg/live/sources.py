"""Live audio sources: microphone (PyAudio), a file replayed in real time, raw PCM on stdin,
and PCM pushed by the caller (the service's WebSocket).

Each source runs a producer thread (or PyAudio's callback) that never blocks:
blocks of 16 kHz mono float32 go into a bounded queue, and what does not fit
is counted in ``dropped_frames`` instead of stalling the audio device.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from whispersg.audio import SAMPLE_RATE
from whispersg.errors import AudioError, OptionError, missing_extra

logger = logging.getLogger(__name__)

BLOCK_SECONDS = 0.1
QUEUE_SECONDS = 120  # how much audio may wait for the transcriber before frames are dropped


class LiveSource:
    """Base: a queue of audio blocks filled by a producer, read by the transcriber."""

    name = "source"

    def __init__(self) -> None:
        self._queue: "queue.Queue[np.ndarray]" = queue.Queue(maxsize=int(QUEUE_SECONDS / BLOCK_SECONDS))
        self._done = threading.Event()
        self._stop = threading.Event()
        self.dropped_frames = 0
        self.started_at: Optional[float] = None
        self.error: Optional[BaseException] = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        threading.Thread(target=self._produce_safely, name=f"whispersg-{self.name}", daemon=True).start()

    def _produce_safely(self) -> None:
        try:
            self._produce()
        except BaseException as error:  # reported to the reader, not lost in a thread
            self.error = error
        finally:
            self._done.set()

    def _produce(self) -> None:
        raise NotImplementedError

    def _offer(self, block: np.ndarray) -> None:
        try:
            self._queue.put_nowait(block)
        except queue.Full:
            self.dropped_frames += len(block)

    def read(self, timeout: float = 0.05) -> Optional[np.ndarray]:
        """The next block, or None if none arrived within ``timeout``."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            return None

    def pending_seconds(self) -> float:
        return self._queue.qsize() * BLOCK_SECONDS

    @property
    def finished(self) -> bool:
        return self._done.is_set() and self._queue.empty()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()


class FileSource(LiveSource):
    """A recording replayed at real-time pace (``speed`` × real time; 0 = as fast as possible)."""

    name = "file"

    def __init__(self, path: str | Path, speed: float = 1.0, lockstep: bool = False) -> None:
        super().__init__()
        from whispersg.audio import load_audio

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


class MicrophoneSource(LiveSource):
    """A PyAudio input device at 16 kHz mono int16, read by a callback that never blocks."""

    name = "microphone"

    def __init__(self, device_index: int) -> None:
        super().__init__()
        self.device_index = device_index
        self._pyaudio = _import_pyaudio()
        self._audio = None
        self._stream = None

    def start(self) -> None:
        pyaudio = self._pyaudio
        self._audio = pyaudio.PyAudio()
        count = self._audio.get_device_count()
        if not 0 <= self.device_index < count:
            self._audio.terminate()
            raise AudioError(f"--mic_id {self.device_index}: no such input device; list them with: whispersg_live --mic_id list")
        frames = int(BLOCK_SECONDS * SAMPLE_RATE)

        def callback(data, frame_count, time_info, status):
            self._offer(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)
            return (None, pyaudio.paContinue)

        try:
            self._stream = self._audio.open(format=pyaudio.paInt16, channels=1, rate=SAMPLE_RATE, input=True,
                                            input_device_index=self.device_index, frames_per_buffer=frames,
                                            stream_callback=callback)
        except OSError as error:
            self._audio.terminate()
            raise AudioError(f"--mic_id {self.device_index}: cannot open the device ({error}); pick another with --mic_id list") from error
        self.started_at = time.monotonic()
        self._stream.start_stream()

    @property
    def finished(self) -> bool:
        return self._stop.is_set() and self._queue.empty()

    def close(self) -> None:
        self.stop()
        if self._stream is not None:
            self._stream.stop_stream()
            self._stream.close()
            self._stream = None
        if self._audio is not None:
            self._audio.terminate()
            self._audio = None


def _import_pyaudio():
    try:
        import pyaudio
    except ImportError as error:
        raise missing_extra("the microphone (--mic_id)", "live", "pyaudio") from error
    return pyaudio


def list_input_devices() -> list[tuple[int, str, int, int]]:
    """(index, name, input channels, default sample rate) of every input device PyAudio sees."""
    pyaudio = _import_pyaudio()
    audio = pyaudio.PyAudio()
    try:
        devices = []
        for index in range(audio.get_device_count()):
            info = audio.get_device_info_by_index(index)
            if int(info.get("maxInputChannels", 0)) > 0:
                devices.append((index, str(info["name"]), int(info["maxInputChannels"]), int(info["defaultSampleRate"])))
        return devices
    finally:
        audio.terminate()


def open_source(mic_id: Optional[int], input_path: Optional[str], speed: float) -> LiveSource:
    """The source the live CLI was asked for."""
    if input_path == "-":
        return StdinSource()
    if input_path:
        return FileSource(input_path, speed)
    if mic_id is not None:
        return MicrophoneSource(mic_id)
    raise OptionError("no audio source: pass --mic_id N (see --mic_id list), --input FILE or --input -")
