"""The live loop: read the source, segment, show interim text, commit words and chunks, save them.

Only the open chunk is ever transcribed (bounded by the hard limit), so the
cost of a step cannot grow with the session and lag does not accumulate.  When
processing falls behind, interim updates are skipped (and the display says
so) rather than queued.  Words are committed twice as fast as chunks end:
those on which successive interim hypotheses agree are settled once 1.2 s of audio
after them was heard (LocalAgreement, ``whispersg.live.agreement``), the rest when the chunk is cut
and decoded once more (or, with ``max_commit_delay``, from a decode made for them
once they have waited that long).  Those committing decodes also hear the audio of
the last committed chunks, with their text as the forced start of the transcript,
so a short chunk is heard among its neighbours.  Every decode's output is capped by the audio it
transcribes, so a hallucination loop cannot hold the loop up.  Committed text is never rewritten;
every finished chunk is appended and flushed to the session files at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from whispersg.asr import fails_thresholds
from whispersg.audio import SAMPLE_RATE
from whispersg.capture import LiveSource
from whispersg.errors import OptionError
from whispersg.live.agreement import StablePrefix, word_key, word_keys
from whispersg.live.segmenter import ChunkSegmenter, Cut
from whispersg.options import PipelineOptions
from whispersg.speakers import assign_speakers
from whispersg.types import Segment, SpeakerTurn, Transcript

logger = logging.getLogger(__name__)

INTERIM_INTERVAL = 0.5  # s of new audio between interim hypotheses, at the least
# An interim may use at most 1/INTERIM_DUTY of real time: on a slow machine interims come less often
# instead of leaving no time for commits (which would put the loop behind and stall everything).
INTERIM_DUTY = 2.0
BEHIND_THRESHOLD = 1.0  # s of queued audio beyond which interim updates are skipped
# Audio a forced word needs after it, whatever the delay (a shorter one waits for it); less cost
# accuracy (docs/decisions.md#live-forced-words-right-context).
FORCE_RIGHT_CONTEXT = 1.0
# Agreed words wait for this much audio after them, so they come about as late as forced ones and a
# minute's latency does not follow its mix of the two (docs/decisions.md#live-agreed-words-right-context).
AGREE_RIGHT_CONTEXT = 1.2
# Where DENSE_FORCED_SHARE of the words committed in the last DENSE_WINDOW s were forced (fast talk),
# words are forced DENSE_SHORTENING s sooner, so such stretches come no later than the rest
# (docs/decisions.md#live-dense-speech).
DENSE_WINDOW = 30.0
DENSE_FORCED_SHARE = 1 / 3
DENSE_SHORTENING = 0.5
MIN_COMMIT_SECONDS = 0.3
# The prefix and the prompt share half of Whisper's 448-token budget (docs/decisions.md#live-text-prompt).
MAX_PREFIX_CHARS = 600
# Interims and forced decodes that hear context are greedy (beam search doubles their cost for no
# gain); a chunk's final decode, once a cut, uses beam search (docs/decisions.md#live-greedy-and-beam-search).
GREEDY = {"beam_size": 1}
INTERIM_SEARCH = {**GREEDY, "temperature_increment_on_fallback": 0}  # see _interim: no fallback schedule
# A decode generates at most TOKEN_SLACK + TOKENS_PER_SECOND tokens a second of the audio it transcribes:
# above the densest real speech, below a hallucination loop that stalls the commits
# (docs/decisions.md#live-token-cap).
TOKENS_PER_SECOND = 8
TOKEN_SLACK = 12
WHISPER_WINDOW = 30.0  # s of audio Whisper hears at once: the longest chunk worth cutting by the hard limit
HISTORY_CHUNKS = 64  # committed chunks remembered (their text, for the prompt; audio only while it may be context)


@dataclass
class LiveSettings:
    # Short chunks cut in pauses commit sooner and lose no accuracy (docs/decisions.md#live-chunk-limits).
    # A limit <= 0 (or None) is off, as in the original; a hard limit over 30 s is taken as 30.
    soft_chunk_limit: Optional[float] = 4.0
    hard_chunk_limit: Optional[float] = 12.0
    silence_duration: float = 0.6
    vad_threshold: float = 0.5
    # Words the interims never agree on with confidence do not wait for their chunk's end: once the
    # oldest word they did not agree on ended this many seconds of audio ago, the open chunk is decoded
    # once more, hearing the context (greedy; beam search where there is none yet), and every word
    # with FORCE_RIGHT_CONTEXT seconds of audio after it is committed.
    # None (CLI: 0) waits for the chunk's end; 2 s keeps the latency steady at no cost in WER
    # (docs/decisions.md#live-commit-delay).
    max_commit_delay: Optional[float] = 2.0
    # The last this-many characters of committed text are Whisper's prompt for every decode of the
    # open chunk (0: none), as openai-whisper conditions on previous text (docs/decisions.md#live-text-prompt).
    context_chars: int = 200
    # The decodes that commit words also hear the last committed chunks (their text as the forced start
    # of the transcript), whole chunks while the window stays within this many seconds (0: none): a 4 s
    # chunk heard alone is heard worse than among its neighbours; the cost grows with it
    # (docs/decisions.md#live-audio-context).
    context_seconds: float = 22.0

    def __post_init__(self) -> None:
        # The one check for every caller (CLI, realtime WebSocket, library): 0 turns the delay off.
        if self.soft_chunk_limit is not None and self.soft_chunk_limit <= 0:
            self.soft_chunk_limit = None
        if self.hard_chunk_limit is not None and self.hard_chunk_limit <= 0:
            self.hard_chunk_limit = None
        if self.hard_chunk_limit is not None and self.hard_chunk_limit > WHISPER_WINDOW:
            logger.warning("--hard_chunk_limit %g is longer than Whisper's %g s window; using %g, as a longer chunk "
                           "would be decoded as several windows cut blindly instead of at its quietest point",
                           self.hard_chunk_limit, WHISPER_WINDOW, WHISPER_WINDOW)
            self.hard_chunk_limit = WHISPER_WINDOW
        if self.max_commit_delay is not None:
            if not 0 <= self.max_commit_delay < math.inf:  # also refuses nan
                raise OptionError(f"--max_commit_delay must be >= 0 seconds, 0 to turn it off "
                                  f"(got {self.max_commit_delay!r})")
            self.max_commit_delay = self.max_commit_delay or None
        if self.context_chars < 0:
            raise OptionError(f"--context_chars must be >= 0, 0 for no prompt (got {self.context_chars!r})")
        if not 0 <= self.context_seconds <= 30:
            raise OptionError(f"--context_seconds must be between 0 and 30 (Whisper's window), 0 for no audio "
                              f"context (got {self.context_seconds!r})")


@dataclass
class WordTiming:
    """When a committed word ended in the stream, and when it was shown and committed (session seconds)."""

    word: str
    end: float
    shown: float
    committed: float
    how: str = "chunk"  # "agreed" (two interims agreed), "forced" (max_commit_delay) or "chunk" (its chunk's decode)

    @property
    def early(self) -> bool:
        """Committed before its chunk ended."""
        return self.how != "chunk"


def commit_delay(max_commit_delay: Optional[float], timings: list[WordTiming], now: float) -> Optional[float]:
    """How old the oldest unsure word may get before it is forced: ``max_commit_delay``, shortened
    by DENSE_SHORTENING while a third or more of the words committed in the last DENSE_WINDOW seconds
    (session time, ``timings`` in commit order) were forced; never below FORCE_RIGHT_CONTEXT."""
    if max_commit_delay is None:
        return None
    recent = []
    for timing in reversed(timings):
        if timing.committed < now - DENSE_WINDOW:
            break
        recent.append(timing.how)
    if recent and recent.count("forced") >= DENSE_FORCED_SHARE * len(recent):
        max_commit_delay -= DENSE_SHORTENING
    return max(FORCE_RIGHT_CONTEXT, max_commit_delay)


def _placed(segments: list[Segment], chunk_start: float, context_seconds: float) -> list[Segment]:
    """Segments decoded from context + chunk, moved to stream time; nothing starts before the chunk
    (the context's own text is the prefix, left out: a time before the chunk is timing drift)."""
    for segment in segments:
        segment.shift(chunk_start - context_seconds)
        segment.start = max(segment.start, chunk_start)
        segment.end = max(segment.end, segment.start)
        for word in segment.words:
            if word.start is not None and word.start < chunk_start:
                word.start = chunk_start
                word.end = max(word.end, chunk_start) if word.end is not None else None
    return segments


@dataclass
class CommittedChunk:
    """A committed chunk as later decodes use it: its text, and its audio while it may still be context."""

    text: str
    audio: Optional[np.ndarray]


@dataclass
class LiveState:
    committed: list[Segment] = field(default_factory=list)  # finished chunks
    settled: str = ""  # committed words of the open chunk (never rewritten; they start its segment)
    interim: str = ""  # the rest of the open chunk's latest hypothesis (replaced by the next)
    behind: bool = False
    dropped_seconds: float = 0.0
    timings: list[WordTiming] = field(default_factory=list)


class LiveTranscriber:
    """Drives a WhisperSGPipeline from a live source."""

    def __init__(self, pipeline, source: LiveSource, settings: LiveSettings = LiveSettings(),
                 on_update: Optional[Callable[[LiveState], None]] = None,
                 on_commit: Optional[Callable[[list[Segment]], None]] = None,
                 recording=None, speakers=None, on_start: Optional[Callable[[], None]] = None) -> None:
        self.pipeline = pipeline
        self.speakers = speakers  # an OnlineSpeakers, for speaker labels on committed chunks
        self.source = source
        self.settings = settings
        self.segmenter = ChunkSegmenter(settings.soft_chunk_limit, settings.hard_chunk_limit,
                                        settings.silence_duration, settings.vad_threshold)
        self.state = LiveState()
        self.on_update = on_update or (lambda state: None)
        self.on_commit = on_commit or (lambda segments: None)
        self.on_start = on_start or (lambda: None)  # the source is open: callers announce readiness
        self.recording = recording
        self.stop_requested = threading.Event()
        self._samples_seen = 0
        self._last_interim_at = 0  # samples seen when the last interim ran
        self._interim_seconds = 0.0  # how long the last interim took to compute
        self._interim_history: list[tuple[float, set[str]]] = []  # (session time shown, words) of the open chunk
        self.agreement = StablePrefix()
        self.cuts: list[Cut] = []
        self._history: list[CommittedChunk] = []  # the last committed chunks, oldest first (bounded)
        self.decoding = ""  # what the last decode was for: "interim", "forced" or "chunk" (benchmarks read it too)
        # Read once: the thresholds and the user's caps do not change during a session (the realtime
        # server's pipeline builds its options on every access).
        self._options = getattr(pipeline, "options", None) or PipelineOptions()
        self._user_prompt = (self._options.initial_prompt or "").strip()

    # -- time ------------------------------------------------------------------
    def _now(self) -> float:
        """Session seconds: wall time since the source started, in stream time for replayed files."""
        if getattr(self.source, "lockstep", False):
            return self._samples_seen / SAMPLE_RATE  # a lockstep replay waits for us: only stream time means anything
        started = self.source.started_at or time.monotonic()
        speed = getattr(self.source, "speed", 1.0) or 1.0
        return (time.monotonic() - started) * speed

    # -- loop --------------------------------------------------------------------
    def run(self) -> Transcript:
        self.source.start()
        self.on_start()
        try:
            while not self.stop_requested.is_set():
                block = self.source.read(timeout=0.05)
                if block is None:
                    if self.source.finished:
                        break
                    continue
                self._ingest(block)
        finally:
            self.source.close()
            self._commit(self.segmenter.take_all())
        self.state.dropped_seconds = self.source.dropped_frames / SAMPLE_RATE
        if self.source.dropped_frames:
            logger.warning("%.1f s of audio were dropped because processing fell behind", self.state.dropped_seconds)
        return Transcript(segments=list(self.state.committed), duration=self._samples_seen / SAMPLE_RATE)

    def _ingest(self, block: np.ndarray) -> None:
        self._samples_seen += len(block)
        if self.recording is not None:
            self.recording.write(block)
        cut = self.segmenter.push(block)
        if cut is not None:
            self.cuts.append(cut)
            self._commit(self.segmenter.take(cut.samples))
            return
        behind = self.source.pending_seconds() > BEHIND_THRESHOLD
        if behind != self.state.behind:
            self.state.behind = behind
            self.on_update(self.state)
        interval = max(INTERIM_INTERVAL, INTERIM_DUTY * self._interim_seconds)
        if (not behind and self.segmenter.has_speech
                and self._samples_seen - self._last_interim_at >= interval * SAMPLE_RATE):
            self._interim()

    def _interim(self) -> None:
        self._last_interim_at = self._samples_seen
        began = time.monotonic()
        # Word times (cross-attention, nearly free) place each word, so agreement is judged only
        # after the words already settled.
        offset = self.segmenter.offset / SAMPLE_RATE
        audio_end = offset + self.segmenter.duration
        # Words agreed on and only waiting for AGREE_RIGHT_CONTEXT are not unsure: no forced decode for them.
        oldest = self.agreement.oldest_unagreed_end
        delay = commit_delay(self.settings.max_commit_delay, self.state.timings, self._now())
        # Never two forced decodes in a row: on a slow host they chain and starve the interims that
        # let words agree (docs/decisions.md#live-no-two-forced-decodes-in-a-row).
        force = (delay is not None and oldest is not None and audio_end - oldest >= delay
                 and self.decoding != "forced")
        self.decoding = "forced" if force else "interim"
        # Only decodes that commit words hear the context: its cost grows with the prefix and interims
        # must stay quick; they agree as well without it (docs/decisions.md#live-interims-hear-no-context).
        audio, context_seconds, context = self._with_context(self.segmenter.audio,
                                                             self.settings.context_seconds if force else 0.0)
        # A forced decode with no context to hear (the session's first chunks) is as cheap with beam
        # search as before the context existed, and more accurate there (the demo call's opening).
        search = INTERIM_SEARCH if not force else GREEDY if context_seconds else {}
        transcript = self.pipeline.transcribe(audio, align=True, diarize=False, vad_method="none",
                                              max_new_tokens=self._token_cap(self.segmenter.duration), **search, **context)
        segments = transcript.segments
        if not force:
            # An interim Whisper is unsure of is not decoded again at rising temperatures (it only
            # previews; the schedule cost up to six times as much): it shows and agrees nothing
            # (docs/decisions.md#live-interims-have-no-fallback).
            segments = [segment for segment in segments if not fails_thresholds(segment, self._options)]
        hypothesis = [word for segment in _placed(segments, offset, context_seconds) for word in segment.words]
        now = self._now()
        self._interim_history.append((now, word_keys(" ".join(segment.text for segment in segments))))
        settled_now, unsettled = self.agreement.update(
            hypothesis, settle_until=audio_end - FORCE_RIGHT_CONTEXT if force else None,
            agree_until=audio_end - AGREE_RIGHT_CONTEXT)
        if not force:
            # Interims are spaced by what a greedy one costs (in stream seconds: a replay at speed 0 has
            # no real time to share).  A forced beam-search decode costs more; letting it set the spacing
            # would thin out the interims that words need to agree, and force yet more of them.
            self._interim_seconds = (time.monotonic() - began) * getattr(self.source, "speed", 1.0)
        forced_from = len(settled_now) - self.agreement.forced_count
        for index, word in enumerate(settled_now):
            self._record_timing(word.word, word.end, now, how="forced" if index >= forced_from else "agreed")
        self.state.settled = self.agreement.text
        self.state.interim = " ".join(w.word for w in unsettled)
        self.on_update(self.state)

    def _token_cap(self, seconds: float) -> int:
        """The most tokens a decode of ``seconds`` of new audio may generate (the user's cap, if lower)."""
        cap = TOKEN_SLACK + math.ceil(TOKENS_PER_SECOND * seconds)
        user_cap = self._options.max_new_tokens
        return min(cap, user_cap) if user_cap else cap

    def _with_context(self, chunk_audio: np.ndarray, context_seconds: float) -> tuple[np.ndarray, float, dict]:
        """What a decode of ``chunk_audio`` (the open chunk, or the part of it being committed) is given:
        the audio of the last committed chunks that fit in ``context_seconds`` with it, then it; the
        seconds of context; and the decode's keywords: that context's text as the ``prefix``, and as
        ``initial_prompt`` the user's prompt, then the tail of what was committed before the context
        (``context_chars`` at most, cut at a word boundary)."""
        window = len(chunk_audio) / SAMPLE_RATE
        characters = 0
        first = len(self._history)
        while first > 0:
            previous = self._history[first - 1]
            if previous.audio is None or not previous.text:
                break  # a chunk in which nothing was heard ends the context: its audio says nothing we know
            window += len(previous.audio) / SAMPLE_RATE
            characters += len(previous.text) + 1
            if window > context_seconds or characters > MAX_PREFIX_CHARS:
                break
            first -= 1
        context = self._history[first:]
        keywords: dict = {}
        limit = self.settings.context_chars
        tail = ""
        for chunk in reversed(self._history[:first] if limit else []):
            tail = f"{chunk.text} {tail}".strip()
            if len(tail) > limit:
                tail = tail[-limit:]
                tail = tail.split(" ", 1)[1] if " " in tail else ""
                break
        prompt = " ".join(part for part in (self._user_prompt, tail) if part)
        if prompt:
            keywords["initial_prompt"] = prompt
        if not context:
            return chunk_audio, 0.0, keywords
        keywords["prefix"] = " ".join(chunk.text for chunk in context)
        audio = np.concatenate([chunk.audio for chunk in context] + [chunk_audio])
        return audio, (len(audio) - len(chunk_audio)) / SAMPLE_RATE, keywords

    def _remember(self, audio: np.ndarray, segments: list[Segment]) -> None:
        """Keep a committed chunk as context for later decodes; forget audio no window can reach."""
        self._history.append(CommittedChunk(" ".join(s.text.strip() for s in segments).strip(), audio))
        reach = 0.0
        for chunk in reversed(self._history):
            if chunk.audio is not None:
                if reach > self.settings.context_seconds:
                    chunk.audio = None
                else:
                    reach += len(chunk.audio) / SAMPLE_RATE
        # Text enough for the prompt: context_chars is far less than this many chunks hold.
        del self._history[:-HISTORY_CHUNKS]

    def _record_timing(self, word: str, ended: float, committed_at: float, how: str = "chunk") -> None:
        key = word_key(word)
        # First interim shown after the word ended that already contained it.
        shown = next((when for when, words in self._interim_history if when >= ended and key in words), committed_at)
        self.state.timings.append(WordTiming(word, ended, min(shown, committed_at), committed_at, how))

    def _commit(self, taken: tuple[int, np.ndarray]) -> None:
        offset, audio = taken
        start, end = offset / SAMPLE_RATE, (offset + len(audio)) / SAMPLE_RATE
        found: list[Segment] = []
        if len(audio) >= MIN_COMMIT_SECONDS * SAMPLE_RATE:
            heard, context_seconds, context = self._with_context(audio, self.settings.context_seconds)
            self.decoding = "chunk"
            found = _placed(self.pipeline.transcribe(heard, vad_method="none", diarize=False,
                                                     max_new_tokens=self._token_cap(end - start), **context).segments,
                            start, context_seconds)
        settled = {id(word) for word in self.agreement.settled}
        segments = self.agreement.finish_chunk(found, end)
        if self.speakers is not None and segments and len(audio):
            turns = [SpeakerTurn(t.start + start, t.end + start, t.speaker) for t in self.speakers.label(audio)]
            segments = assign_speakers(segments, turns)
        committed_at = self._now()
        for segment in segments:
            for word in segment.words:
                if id(word) not in settled:
                    self._record_timing(word.word, word.end if word.end is not None else segment.end, committed_at)
        self._interim_history = []
        if len(audio):
            self._remember(audio, segments)
        self.state.settled = self.agreement.text
        self.state.interim = ""
        self.state.committed.extend(segments)
        if segments:
            self.on_commit(segments)
        self.on_update(self.state)
