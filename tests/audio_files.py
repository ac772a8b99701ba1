"""Builds real recordings in other formats from a 16 kHz clip with PyAV (FFmpeg), for tests."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def encode(samples: np.ndarray, path: Path, codec: str, rate: int = 16000, layout: str = "mono",
           container_format: str | None = None, video: bool = False) -> Path:
    """Encode 16 kHz mono float samples to ``path`` with ``codec`` at ``rate`` Hz and ``layout``."""
    pcm16 = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w", format=container_format) as container:
        if video:
            vstream = container.add_stream("mpeg4", rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        sample_format = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
        frame_size = stream.codec_context.frame_size or 1024
        source_block = max(1, int(frame_size * 16000 / rate))
        frames = []
        for start in range(0, len(pcm16), source_block):
            block = pcm16[start : start + source_block].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = 16000
            frames.extend(resampler.resample(frame))
        frames.extend(resampler.resample(None))
        # Re-block to the codec's frame size (some codecs insist on it).
        audio = np.concatenate([f.to_ndarray() for f in frames], axis=1)
        planar = sample_format.endswith("p")
        channels = 2 if layout == "stereo" else 1
        if not planar and audio.shape[0] == 1 and channels > 1:
            audio = audio.reshape(1, -1)
        step = frame_size
        pts = 0
        total = audio.shape[1] if planar or channels == 1 else audio.shape[1] // channels
        for start in range(0, total, step):
            if planar or channels == 1:
                piece = audio[:, start : start + step]
                count = piece.shape[1]
            else:
                piece = audio[:, start * channels : (start + step) * channels]
                count = piece.shape[1] // channels
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format=sample_format, layout=layout)
            frame.sample_rate = rate
            frame.pts = pts
            pts += count
            for packet in stream.encode(frame):
                container.mux(packet)
            if video and start == 0:
                image = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), dtype=np.uint8), format="rgb24")
                for packet in vstream.encode(image):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if video:
            for packet in vstream.encode(None):
                container.mux(packet)
    return path
