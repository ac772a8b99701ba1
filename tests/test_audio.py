"""Audio loading: formats, rates and channel layouts decode to 16 kHz mono; bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from whispersg.audio import SAMPLE_RATE, as_mono_float32, decode_file, load_audio
from whispersg.errors import AudioError

from .audio_files import encode
from .conftest import DEMO_WAV


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return load_audio(DEMO_WAV)


FORMATS = [
    ("mp3-44k-stereo.mp3", "libmp3lame", 44100, "stereo", None, False),
    ("flac-16k.flac", "flac", 16000, "mono", None, False),
    ("aac-48k-stereo.m4a", "aac", 48000, "stereo", "mp4", False),
    ("opus-48k.ogg", "libopus", 48000, "mono", "ogg", False),
    ("pcm24-48k-stereo.wav", "pcm_s24le", 48000, "stereo", None, False),
    ("float32.wav", "pcm_f32le", 16000, "mono", None, False),
    ("telephone-8k.wav", "pcm_s16le", 8000, "mono", None, False),
    ("video.mp4", "aac", 44100, "stereo", "mp4", True),
]


@pytest.mark.parametrize("name,codec,rate,layout,container,video", FORMATS, ids=[f[0] for f in FORMATS])
def test_formats_decode_to_16k_mono(tmp_path, reference, name, codec, rate, layout, container, video):
    path = encode(reference, tmp_path / name, codec, rate, layout, container, video)
    samples = load_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SAMPLE_RATE - 30.0) < 0.1
    # Same signal: compare loudness envelopes in 100 ms frames (codecs shift phase, not energy).
    n = min(len(samples), len(reference)) // 1600 * 1600
    envelope = lambda x: np.sqrt((x[:n].reshape(-1, 1600) ** 2).mean(axis=1))  # noqa: E731
    correlation = np.corrcoef(envelope(samples), envelope(reference))[0, 1]
    assert correlation > 0.95, correlation


def test_arrays_are_downmixed_and_scaled():
    stereo = np.stack([np.full(1600, 0.5, np.float32), np.full(1600, -0.1, np.float32)])
    assert np.allclose(as_mono_float32(stereo), 0.2)
    pcm = np.full(1600, 16384, dtype=np.int16)
    assert np.allclose(as_mono_float32(pcm), 0.5, atol=1e-3)
    with pytest.raises(AudioError, match="NaN"):
        as_mono_float32(np.array([0.0, np.nan], dtype=np.float32))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: _write(d / "empty.wav", b""), "empty"),
        (lambda d: _write(d / "notes.wav", b"This is a text file, not audio.\n" * 20), "not a readable audio"),
        (lambda d: _write(d / "picture.png", _png_bytes()), "no audio stream|not a readable audio|not a plain audio"),
        (lambda d: d, "is a directory"),
    ],
    ids=["missing", "zero-byte", "text-as-wav", "png", "directory"],
)
def test_bad_inputs_raise_one_clear_line_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(AudioError, match=message) as caught:
        load_audio(path)
    text = str(caught.value)
    assert str(path) in text and "\n" not in text


def test_truncated_wav_decodes_what_is_there_and_warns(tmp_path, caplog):
    data = DEMO_WAV.read_bytes()
    cut = _write(tmp_path / "cut.wav", data[: len(data) // 3])
    decoded = decode_file(cut)
    assert 9.0 < decoded.duration < 11.0
    assert decoded.expected_duration and decoded.expected_duration > 29
    assert any("cut short" in r.getMessage() and "cut.wav" in r.getMessage() for r in caplog.records)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png_bytes() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 8 for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
