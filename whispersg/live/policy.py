"""The live commit policy, pure: when to decode, what kind of decode, when unsure words are forced.

Its hyper-parameters are declared fields of ``CommitPolicy`` (each with one line of why; the runs
behind each value are in docs/decisions.md#live-mode), and every decision is a method of plain
values, so it can be tested without a model, a source or a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from whispersg.asr import MIN_SKIPPED_SECONDS
from whispersg.audio import SAMPLE_RATE
from whispersg.live.decoder import DecodeKind
from whispersg.live.segmenter import WINDOW as VAD_WINDOW

WHISPER_WINDOW = 30.0  # s of audio Whisper hears at once: the longest chunk worth cutting by the hard limit


class CommitKind(StrEnum):
    """How a word was committed."""

    AGREED = "agreed"  # two interims agreed on it
    FORCED = "forced"  # a forced decode settled it (max_commit_delay)
    CHUNK = "chunk"  # its chunk's final decode


class Commit(NamedTuple):
    """A committed word as the policy remembers it: when (session seconds) and how."""

    committed: float
    how: CommitKind


def _param(default: Any, why: str, decision: str = "") -> Any:
    """A declared hyper-parameter: its value, one line of why, and the decision-log section holding the runs."""
    return field(default=default, metadata={"why": why, "decision": decision})


@dataclass(frozen=True)
class CommitPolicy:
    """The live loop's hyper-parameters (not user settings: those are ``LiveSettings``)."""

    interim_interval: float = _param(0.5, "s of new audio between interim hypotheses, at the least")
    interim_duty: float = _param(
        2.0, "an interim may use at most 1/interim_duty of real time: a slow machine gets fewer interims "
             "instead of a loop that falls behind")
    behind_threshold: float = _param(1.0, "s of queued audio beyond which interim updates are skipped")
    force_right_context: float = _param(
        1.0, "audio (s) a forced word needs after it, whatever the delay; less costs accuracy",
        "live-forced-words-right-context")
    agree_right_context: float = _param(
        1.2, "agreed words wait for this much audio after them, so they come about as late as forced ones",
        "live-agreed-words-right-context")
    dense_window: float = _param(30.0, "s of recent commits that tell whether the speech is dense", "live-dense-speech")
    dense_forced_share: float = _param(1 / 3, "share of forced words in the window that makes the speech dense",
                                       "live-dense-speech")
    dense_shortening: float = _param(0.5, "s sooner words are forced in dense speech, so it comes no later than the rest",
                                     "live-dense-speech")
    min_commit_seconds: float = _param(0.3, "a shorter cut chunk is not decoded (nothing to hear in it)")
    max_prefix_chars: int = _param(600, "the prefix and the prompt share half of Whisper's 448-token budget",
                                   "live-text-prompt")
    tokens_per_second: int = _param(8, "a decode's token cap per second of its audio: above the densest real "
                                       "speech, below a hallucination loop", "live-token-cap")
    token_slack: int = _param(12, "tokens a decode may generate on top of tokens_per_second", "live-token-cap")
    skipped_speech: float = _param(
        MIN_SKIPPED_SECONDS, "s of a chunk's speech (VAD) left without a word that make its decode be redone on its own: "
             "conditioned on what came before, Whisper sometimes jumps over speech (#25)", "live-skipped-speech")
    history_chunks: int = _param(64, "committed chunks remembered (text for the prompt; audio only while it may "
                                     "be context); context_chars is far less than this many hold")

    # -- when to decode ----------------------------------------------------------------
    def skipped_from(self, speech: np.ndarray, words: Sequence[tuple[float, float]],
                     chunk_start: float) -> Optional[float]:
        """Where (stream seconds) the first run of ``skipped_speech`` seconds or more of the chunk's speech
        without a word begins, or None: ``speech`` is the chunk's VAD mask (one value per ``VAD_WINDOW``
        samples from ``chunk_start``), ``words`` the (start, end) stream times of the words a decode gave it."""
        window = VAD_WINDOW / SAMPLE_RATE
        wordless = np.asarray(speech, dtype=bool).copy()
        for start, end in words:  # a word covers the windows it overlaps
            wordless[max(0, int((start - chunk_start) / window)) : max(0, math.ceil((end - chunk_start) / window))] = False
        needed = math.ceil(self.skipped_speech / window - 1e-9)
        run = 0
        for index, value in enumerate(wordless):
            run = run + 1 if value else 0
            if run >= needed:
                return chunk_start + (index + 1 - run) * window
        return None

    def skipped(self, speech: np.ndarray, words: Sequence[tuple[float, float]], chunk_start: float) -> bool:
        """A decode left ``skipped_speech`` seconds or more of the chunk's speech without a word."""
        return self.skipped_from(speech, words, chunk_start) is not None

    def behind(self, pending_seconds: float) -> bool:
        """Processing is behind: interims are skipped (and the display says so) rather than queued."""
        return pending_seconds > self.behind_threshold

    def interim_due(self, samples_since_last: int, last_interim_cost: float, behind: bool, has_speech: bool) -> bool:
        """Time for an interim: enough new audio since the last, spaced by what the last one cost
        (``last_interim_cost`` in stream seconds), not behind, and something to hear."""
        interval = max(self.interim_interval, self.interim_duty * last_interim_cost)
        return not behind and has_speech and samples_since_last >= interval * SAMPLE_RATE

    def commit_delay(self, max_commit_delay: Optional[float], recent: Sequence[Commit], now: float) -> Optional[float]:
        """How old the oldest unsure word may get before it is forced: ``max_commit_delay``, shortened by
        ``dense_shortening`` while ``dense_forced_share`` or more of the words committed in the last
        ``dense_window`` seconds (``recent``, in commit order) were forced; never below ``force_right_context``."""
        if max_commit_delay is None:
            return None
        hows = []
        for commit in reversed(recent):
            if commit.committed < now - self.dense_window:
                break
            hows.append(commit.how)
        if hows and hows.count(CommitKind.FORCED) >= self.dense_forced_share * len(hows):
            max_commit_delay -= self.dense_shortening
        return max(self.force_right_context, max_commit_delay)

    @staticmethod
    def should_force(delay: Optional[float], oldest_unagreed_end: Optional[float], audio_end: float,
                     last_kind: Optional[DecodeKind]) -> bool:
        """Force the unsure words: the oldest word not agreed on ended ``delay`` seconds of audio ago.
        Never two forced decodes in a row: on a slow host they chain and starve the interims that let
        words agree (docs/decisions.md#live-no-two-forced-decodes-in-a-row)."""
        return (delay is not None and oldest_unagreed_end is not None and audio_end - oldest_unagreed_end >= delay
                and last_kind is not DecodeKind.FORCED)

    # -- how to decode -------------------------------------------------------------------
    @staticmethod
    def context_seconds(kind: DecodeKind, context_seconds: float) -> float:
        """Only decodes that commit words hear the context: its cost grows with the prefix and interims
        must stay quick; they agree as well without it (docs/decisions.md#live-interims-hear-no-context)."""
        return 0.0 if kind is DecodeKind.INTERIM else context_seconds

    @staticmethod
    def decode_options(kind: DecodeKind, heard_context: bool) -> dict[str, Any]:
        """The pipeline options a decode of ``kind`` overrides.  Interims and forced decodes are aligned
        and greedy where they hear context (beam search doubles their cost for no gain); a forced decode
        with no context yet keeps beam search (as cheap there, and more accurate); a chunk's final decode
        uses the user's search (docs/decisions.md#live-greedy-and-beam-search).  An interim is not decoded
        again at rising temperatures: it only previews (docs/decisions.md#live-interims-have-no-fallback)."""
        if kind is DecodeKind.CHUNK:
            return {}
        if kind is DecodeKind.INTERIM:
            return {"align": True, "beam_size": 1, "temperature_increment_on_fallback": 0}
        return {"align": True, "beam_size": 1} if heard_context else {"align": True}

    def token_cap(self, seconds: float, user_cap: Optional[int]) -> int:
        """The most tokens a decode of ``seconds`` of new audio may generate (the user's cap, if lower)."""
        cap = self.token_slack + math.ceil(self.tokens_per_second * seconds)
        return min(cap, user_cap) if user_cap else cap

    # -- what a decode commits -------------------------------------------------------------
    def settle_until(self, kind: DecodeKind, audio_end: float) -> Optional[float]:
        """A forced decode commits every word with ``force_right_context`` of audio after it."""
        return audio_end - self.force_right_context if kind is DecodeKind.FORCED else None

    def agree_until(self, audio_end: float) -> float:
        """Agreed words are settled once this much of the audio after them was heard."""
        return audio_end - self.agree_right_context
