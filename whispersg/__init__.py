"""WhisperSG: offline speech-to-text tuned for Singaporean English.

Public API: ``WhisperSGPipeline``, ``PipelineOptions``, the result types
``Transcript``, ``Segment``, ``Word``, ``SpeakerTurn``, and ``write_transcript`` and
``print_transcription``.  Imports are lazy, so ``import whispersg`` loads
nothing heavy and touches no network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "WhisperSGPipeline": "whispersg.pipeline",
    "print_transcription": "whispersg.writers",
    "write_transcript": "whispersg.writers",
    "PipelineOptions": "whispersg.options",
    "Transcript": "whispersg.types",
    "Segment": "whispersg.types",
    "Word": "whispersg.types",
    "SpeakerTurn": "whispersg.types",
    "WhisperSGError": "whispersg.errors",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from whispersg.errors import WhisperSGError
    from whispersg.options import PipelineOptions
    from whispersg.pipeline import WhisperSGPipeline
    from whispersg.types import Segment, SpeakerTurn, Transcript, Word
    from whispersg.writers import print_transcription, write_transcript


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'whispersg' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
