"""LiveSettings: the live mode's user settings, each with its flag help, range and meaning of off, in one place.

``whispersg_live``'s flags, the realtime WebSocket's query parameters and ``benchmarks/live.py`` are
generated from these fields, and every value, from any of them or the library, passes one validation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

from whispersg.errors import OptionError
from whispersg.live.policy import WHISPER_WINDOW, CommitPolicy
from whispersg.options import checked_number, number_from_text

logger = logging.getLogger(__name__)

_POLICY = CommitPolicy()


def _setting(default: Any, help: str, **extra: Any) -> Any:
    """A live setting: its default, its flag's help text and (``unit``, ``at_least``, ``at_most``, ``off``,
    ``off_at_or_below``, ``metavar``) how it is given and checked, as ``PipelineOptions`` fields declare theirs."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class LiveSettings:
    # Short chunks cut in pauses commit sooner and lose no accuracy (docs/decisions.md#live-chunk-limits).
    # A limit <= 0 (or None) is off, as in the original; a hard limit over 30 s is taken as 30.
    soft_chunk_limit: Optional[float] = _setting(
        4.0, "after this many seconds, cut the chunk at the next short pause; <=0 disables",
        unit="seconds", off="<= 0 to turn it off", off_at_or_below=0)
    hard_chunk_limit: Optional[float] = _setting(
        12.0, "cut the chunk now, at its quietest point, when it reaches this length (over 30, Whisper's window, "
              "counts as 30); <=0 disables",
        unit="seconds", off="<= 0 to turn it off", off_at_or_below=0)
    silence_duration: float = _setting(0.6, "pause (s) that ends an utterance and commits it", unit="seconds",
                                       at_least=0)
    vad_threshold: float = _setting(0.5, "speech probability threshold of the streaming VAD", at_least=0, at_most=1)
    # None (CLI: 0) lets unsure words wait for the chunk's end; 2 s keeps the latency steady at no cost in WER
    # (docs/decisions.md#live-commit-delay).
    max_commit_delay: Optional[float] = _setting(
        2.0,
        "commit words at most about this long after they end (plus computing time), even ones the model is unsure "
        f"of, and {_POLICY.dense_shortening:g} s sooner in fast, unbroken speech (where a third of the recent words "
        "needed it); 0 lets unsure words wait for the end of their chunk (slower, and the latency swings more with "
        f"the speech); below {_POLICY.force_right_context:g} it acts as {_POLICY.force_right_context:g}, as such a "
        f"word needs {_POLICY.force_right_context:g} s of audio after it",
        metavar="SECONDS", unit="seconds", at_least=0, off="0 to turn it off", off_at_or_below=0)
    # As openai-whisper conditions on previous text (docs/decisions.md#live-text-prompt).
    context_chars: int = _setting(
        200, "prompt every decode with the last N characters of committed text, as Whisper conditions on previous "
             "text; 0 decodes each chunk alone",
        metavar="N", at_least=0, off="0 for no prompt")
    # A 4 s chunk heard alone is heard worse than among its neighbours; the cost grows with it
    # (docs/decisions.md#live-audio-context).
    context_seconds: float = _setting(
        22.0, "let the decodes that commit words also hear the last committed chunks, with their text as the start "
              "of the transcript, as long as they and the open chunk fit in this many seconds: Whisper hears a short "
              "chunk better among its neighbours, and each such decode costs more; 0 decodes the open chunk alone",
        metavar="SECONDS", unit="seconds", at_least=0, at_most=WHISPER_WINDOW, off="0 for no audio context")

    def __post_init__(self) -> None:
        # The one check for every caller (CLI, realtime WebSocket, benchmark, library).
        for option in fields(self):
            value = getattr(self, option.name)
            if value is None and "off_at_or_below" in option.metadata:
                continue
            value = checked_number(option, value)
            if value <= option.metadata.get("off_at_or_below", -float("inf")):
                value = None
            object.__setattr__(self, option.name, value)
        if self.hard_chunk_limit is not None and self.hard_chunk_limit > WHISPER_WINDOW:
            logger.warning("--hard_chunk_limit %g is longer than Whisper's %g s window; using %g, as a longer chunk "
                           "would be decoded as several windows cut blindly instead of at its quietest point",
                           self.hard_chunk_limit, WHISPER_WINDOW, WHISPER_WINDOW)
            object.__setattr__(self, "hard_chunk_limit", WHISPER_WINDOW)

    @classmethod
    def from_text(cls, given: Mapping[str, str]) -> "LiveSettings":
        """Settings from text, as a command line or a query string gives them; the rest keep their defaults."""
        known = {option.name: option for option in fields(cls)}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise OptionError(f"unknown live setting {unknown[0]!r}; the settings are {', '.join(known)}")
        return cls(**{name: number_from_text(known[name], text) for name, text in given.items()})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(option.name for option in fields(cls))
