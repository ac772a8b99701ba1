"""Audio capture: a bounded queue of audio blocks filled by a producer that never blocks, the
microphone (PyAudio) as such a producer, and a WAV writer that streams what was captured to disk.

``whispersg --mic_id`` records with these; the live sources (``live/sources.py``) build on the queue.
"""

from __future__ import annotations

import queue
import threading
import time
import wave
from pathlib import Path
from typing import Optional

import numpy as np

from whispersg.audio import SAMPLE_RATE
from whispersg.errors import AudioError, missing_extra

BLOCK_SECONDS = 0.1
QUEUE_SECONDS = 120  # how much audio may wait for the transcriber before frames are dropped


class LiveSource:
    """Base: a queue of audio blocks filled by a producer, read by the transcriber."""

    name = "source"
    speed = 1.0  # stream seconds per wall second: a replay's speed (0: as fast as it is read)
    lockstep = False  # the producer waits for the reader (a replay in tests and benchmarks)

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


class RecordingWriter:
    """Streams the captured audio to a 16-bit WAV file as it arrives (memory stays flat)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._wave = wave.open(str(path), "wb")
        self._wave.setnchannels(1)
        self._wave.setsampwidth(2)
        self._wave.setframerate(SAMPLE_RATE)

    def write(self, block: np.ndarray) -> None:
        self._wave.writeframes((np.clip(block, -1, 1) * 32767).astype("<i2").tobytes())

    def close(self) -> None:
        self._wave.close()
