"""Audio loading: any file PyAV/FFmpeg decodes, or a numpy array, to 16 kHz mono float32.

Recordings are decoded once; every later stage (VAD, ASR, alignment,
diarization) works on the returned array.  Damaged files (a recorder that
crashed, a copy cut short) yield whatever decodes, with a warning that says
how much was readable; only a file with nothing decodable is an error.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from whispersg.errors import AudioError

SAMPLE_RATE = 16000

logger = logging.getLogger(__name__)

AudioSource = Union[str, Path, np.ndarray]

# Extensions the CLI looks for when it is given a directory.
AUDIO_EXTENSIONS = frozenset(
    ".wav .flac .mp3 .m4a .aac .ogg .oga .opus .wma .webm .mp4 .m4v .mkv .mov .avi .amr .aif .aiff".split()
)

# FFmpeg demuxers of plain recordings.  Others (hls playlists, concat lists, image sequences, devices) read
# further files or devices named inside the input, so an upload could make the server read its own disk.
PLAIN_FORMATS = frozenset(
    "wav w64 flac mp3 ogg mov matroska aac amr amrnb amrwb aiff asf avi caf au mpegts mpeg flv wv ape ac3 eac3 "
    "dts tta".split()
)
# format_whitelist refuses other demuxers before they read anything; protocol_whitelist keeps inputs local files.
_OPEN_OPTIONS = {"format_whitelist": ",".join(sorted(PLAIN_FORMATS)), "protocol_whitelist": "file"}
_NOT_PLAIN = ("not a plain audio or video file (FFmpeg sees a playlist, a list of other files, an image or a device "
              "input, which are not accepted); pass the recording itself")


@dataclass
class DecodedAudio:
    """Decoded samples plus what the caller should know about how the decode went."""

    samples: np.ndarray
    expected_duration: float | None = None  # what the container header claims, if anything

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_audio(source: AudioSource, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return ``source`` as mono float32 samples at ``sample_rate`` Hz.

    A numpy array is taken to be at ``sample_rate`` already; a 2-D array is
    downmixed (channels on the smaller axis).
    """
    if isinstance(source, np.ndarray):
        return as_mono_float32(source)
    return decode_file(source, sample_rate).samples


def as_mono_float32(samples: np.ndarray) -> np.ndarray:
    """Validate an in-memory waveform and bring it to 1-D float32 in [-1, 1]."""
    array = np.asarray(samples)
    if array.ndim == 2:
        channel_axis = 0 if array.shape[0] < array.shape[1] else 1
        array = array.mean(axis=channel_axis)
    if array.ndim != 1:
        raise AudioError(f"audio array has shape {array.shape}; pass a 1-D (mono) or 2-D (channels) array")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise AudioError("audio array contains NaN or infinite values; clean the signal before transcribing")
    return array


def decode_file(path: str | Path, sample_rate: int = SAMPLE_RATE) -> DecodedAudio:
    """Decode a recording with PyAV, resampling and downmixing on the way."""
    path = Path(path)
    _check_readable_file(path)
    # FFmpeg derives a WAV's duration from the file size; the header says what was recorded.
    return _decode(_local_url(path), path, sample_rate, claimed_duration=_riff_claimed_duration(path))


def decode_bytes(data: bytes, name: str, sample_rate: int = SAMPLE_RATE) -> DecodedAudio:
    """Decode an encoded recording held in memory (e.g. a dataset's audio bytes); ``name`` labels errors."""
    import io

    if not data:
        raise AudioError(f"{name}: the audio is empty (0 bytes)")
    return _decode(io.BytesIO(data), name, sample_rate)


def _decode(source, label, sample_rate: int, claimed_duration: float | None = None) -> DecodedAudio:
    report = _DecodeReport()
    chunks = list(_decoded_pieces(source, label, sample_rate, report, claimed_duration))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    decoded = DecodedAudio(samples=np.ascontiguousarray(samples, dtype=np.float32), expected_duration=report.expected)
    report.check(label, decoded.duration)
    return decoded


def stream_file(path: str | Path, block_seconds: float, sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Decode a recording block by block (``block_seconds`` each, the last one shorter), in bounded memory.

    Same checks and damaged-file warning as ``decode_file``, given once the end is reached.
    """
    path = Path(path)
    _check_readable_file(path)
    report = _DecodeReport()
    block = max(1, int(block_seconds * sample_rate))
    pending: list[np.ndarray] = []
    held = 0
    total = 0
    for piece in _decoded_pieces(_local_url(path), path, sample_rate, report, _riff_claimed_duration(path)):
        pending.append(piece)
        held += len(piece)
        while held >= block:
            joined = np.concatenate(pending)
            yield np.ascontiguousarray(joined[:block])
            total += block
            pending, held = [joined[block:]], held - block
    if held:
        yield np.ascontiguousarray(np.concatenate(pending))
        total += held
    report.check(path, total / sample_rate)


def probe_duration(path: str | Path) -> float | None:
    """The duration a recording's header claims (seconds), without decoding; None if it says nothing."""
    path = Path(path)
    claimed = _riff_claimed_duration(path)
    if claimed:
        return claimed
    try:
        with open_container(_local_url(path), path) as container:
            return _header_duration(container, container.streams.audio[0]) if container.streams.audio else None
    except (AudioError, OSError):
        return None


def open_container(source, label):
    """Open ``source`` with PyAV, accepting only the demuxers of plain recordings (PLAIN_FORMATS)."""
    import av

    try:
        container = av.open(source, mode="r", metadata_errors="ignore", container_options=dict(_OPEN_OPTIONS))
    except (av.FFmpegError, UnicodeDecodeError) as error:
        if getattr(error, "errno", None) == errno.EINVAL:  # what FFmpeg answers for a demuxer off the whitelist
            raise AudioError(f"{label}: {_NOT_PLAIN}") from error
        raise AudioError(
            f"{label}: not a readable audio or video file ({_short(error)}); "
            "check the file, or convert it with: ffmpeg -i INPUT -ar 16000 -ac 1 OUTPUT.wav"
        ) from error
    # The demuxer FFmpeg chose, checked again in case a build ignores the whitelist.
    if not set(container.format.name.split(",")) & PLAIN_FORMATS:
        container.close()
        raise AudioError(f"{label}: {_NOT_PLAIN} ({container.format.name})")
    return container


def _local_url(path: Path) -> str:
    # An absolute path: FFmpeg never reads a name such as "concat:a|b" or "http:x" as a protocol.
    return os.path.abspath(path)


def _header_duration(container, stream) -> float | None:
    """What the audio stream's (else the container's) header says the duration is, in seconds."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


@dataclass
class _DecodeReport:
    expected: float | None = None
    damaged: Exception | None = None

    def check(self, label, duration: float) -> None:
        """Raise if nothing decoded from a damaged file; warn if it was damaged or cut short."""
        if self.damaged is not None and duration == 0:
            raise AudioError(f"{label}: no audio could be decoded ({_short(self.damaged)}); the file is damaged or not audio")
        if self.damaged is not None or _looks_truncated(duration, self.expected):
            claimed = f" of {self.expected:.1f} s claimed by its header" if self.expected else ""
            logger.warning(
                "%s: file is damaged or cut short; transcribing the %.1f s that decoded%s", label, duration, claimed
            )


def _decoded_pieces(source, label, sample_rate: int, report: _DecodeReport, claimed_duration: float | None) -> Iterator[np.ndarray]:
    import av

    with open_container(source, label) as container:
        if not container.streams.audio:
            raise AudioError(f"{label}: the file has no audio stream; pass a recording with sound")
        stream = container.streams.audio[0]
        report.expected = claimed_duration or _header_duration(container, stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler tolerate gaps in damaged files
                for resampled in resampler.resample(frame):
                    yield resampled.to_ndarray().reshape(-1).copy()
        except (av.FFmpegError, ValueError, MemoryError) as error:
            report.damaged = error
        try:
            for resampled in resampler.resample(None):
                yield resampled.to_ndarray().reshape(-1).copy()
        except (av.FFmpegError, ValueError):
            pass


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass an audio file (the CLI searches directories for you)")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as error:
        raise AudioError(f"{path}: cannot be opened ({error.strerror}); check its permissions") from error
    if size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes); re-copy or re-record it")


def _riff_claimed_duration(path: Path) -> float | None:
    """Duration a WAV header claims (data chunk size / byte rate), or None for other files."""
    import struct

    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return None
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    position, byte_rate = 12, 0
    while position + 8 <= len(head):
        kind, size = head[position : position + 4], struct.unpack("<I", head[position + 4 : position + 8])[0]
        if kind == b"fmt " and position + 16 <= len(head):
            byte_rate = struct.unpack("<I", head[position + 16 : position + 20])[0]
        if kind == b"data":
            # 0 and 0xFFFFFFFF mean "unknown" (streamed or RF64 recordings).
            if byte_rate and size not in (0, 0xFFFFFFFF):
                return size / byte_rate
            return None
        position += 8 + size + (size & 1)
    return None


def _looks_truncated(duration: float, expected: float | None) -> bool:
    # Headers of recordings cut short still claim the full length: trust them
    # only when the gap is clearly more than codec padding.
    if expected is None or expected <= 0:
        return False
    return duration < expected - max(0.5, 0.02 * expected)


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:160]


def is_audio_path(path: Path) -> bool:
    """Whether ``path`` has an extension the CLI treats as audio or video."""
    return path.suffix.lower() in AUDIO_EXTENSIONS
