"""What the live loop asks of a decoder: a typed request per decode, and the interface that answers it.

``PipelineDecoder`` answers with a ``WhisperSGPipeline`` (with a session's own options, such as the
realtime WebSocket's language); tests and benchmarks watch the requests through a ``LiveObserver``
(``whispersg.live.latency``) instead of wrapping the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping, Optional, Protocol, runtime_checkable

import numpy as np

from whispersg.audio import SAMPLE_RATE
from whispersg.options import PipelineOptions
from whispersg.types import Segment


class DecodeKind(StrEnum):
    """What a decode is for."""

    INTERIM = "interim"  # a greedy preview of the open chunk; words two of them agree on are committed
    FORCED = "forced"  # commits the words that waited max_commit_delay
    CHUNK = "chunk"  # the cut chunk's final decode


@dataclass(frozen=True)
class DecodeRequest:
    """One decode: the audio heard (``context_seconds`` of committed chunks, then the new audio) and how."""

    kind: DecodeKind
    audio: np.ndarray
    context_seconds: float
    max_new_tokens: int
    initial_prompt: Optional[str] = None  # the user's prompt, then the tail of the committed text
    prefix: Optional[str] = None  # the committed text of the context audio, the transcript's forced start
    options: Mapping[str, Any] = field(default_factory=dict)  # pipeline options this kind overrides

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@runtime_checkable
class Decoder(Protocol):
    """Transcribes one request into segments timed from the start of its audio."""

    @property
    def options(self) -> PipelineOptions:
        """The session's options (thresholds, the user's prompt and token cap), fixed for the session."""

    def decode(self, request: DecodeRequest) -> list[Segment]: ...


class PipelineDecoder:
    """A ``WhisperSGPipeline`` as a live decoder, with this session's ``overrides`` (language, task, ...)
    applied to every decode; the pipeline itself may be shared between sessions."""

    def __init__(self, pipeline, overrides: Optional[Mapping[str, Any]] = None) -> None:
        self.pipeline = pipeline
        self.overrides = dict(overrides or {})
        # Built once: they do not change during a session (and a bad override is refused before any audio).
        self._options = pipeline.options_for(**self.overrides)

    @property
    def options(self) -> PipelineOptions:
        return self._options

    def decode(self, request: DecodeRequest) -> list[Segment]:
        keywords: dict[str, Any] = {**self.overrides, "vad_method": "none", "diarize": False,
                                    "max_new_tokens": request.max_new_tokens, **request.options}
        if request.initial_prompt is not None:
            keywords["initial_prompt"] = request.initial_prompt
        if request.prefix is not None:
            keywords["prefix"] = request.prefix
        return self.pipeline.transcribe(request.audio, **keywords).segments
