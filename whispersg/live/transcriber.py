"""The live loop: read the source, segment, show interim text, commit words and chunks, save them.

Only the open chunk is ever transcribed (bounded by the hard limit), so the cost of a step cannot
grow with the session and lag does not accumulate.  When processing falls behind, interim updates
are skipped (and the display says so) rather than queued.  Words are committed twice as fast as
chunks end: those on which successive interim hypotheses agree (LocalAgreement,
``whispersg.live.agreement``), the rest when the chunk is cut and decoded once more, or by a forced
decode once they waited ``max_commit_delay``.  Committed text is never rewritten; every finished
chunk is appended and flushed to the session files at once.

The loop only drives; each concern is its own piece, as in whisper_streaming's ASRBase /
HypothesisBuffer / OnlineASRProcessor split: when and how to decode is ``CommitPolicy`` (pure), the
model is a ``Decoder``, what the decodes hear besides the open chunk is ``ContextWindow``, time is an
injected ``Clock``, and latency is measured by a ``LiveObserver`` (``LatencyRecorder``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import numpy as np

from whispersg.asr import fails_thresholds
from whispersg.audio import SAMPLE_RATE
from whispersg.capture import LiveSource
from whispersg.live.agreement import StablePrefix, word_keys
from whispersg.live.clock import Clock, source_clock
from whispersg.live.context import ContextWindow, placed
from whispersg.live.decoder import Decoder, DecodeKind, DecodeRequest, PipelineDecoder
from whispersg.live.latency import CommittedWord, LiveObserver
from whispersg.live.policy import Commit, CommitKind, CommitPolicy
from whispersg.live.segmenter import ChunkSegmenter, Cut
from whispersg.live.settings import LiveSettings
from whispersg.speakers import assign_speakers
from whispersg.types import Segment, SpeakerTurn, Transcript

if TYPE_CHECKING:
    from whispersg.pipeline import WhisperSGPipeline

logger = logging.getLogger(__name__)


@dataclass
class LiveState:
    """What a display shows."""

    committed: list[Segment] = field(default_factory=list)  # finished chunks
    settled: str = ""  # committed words of the open chunk (never rewritten; they start its segment)
    interim: str = ""  # the rest of the open chunk's latest hypothesis (replaced by the next)
    behind: bool = False
    dropped_seconds: float = 0.0


class LiveTranscriber:
    """Drives a decoder (or a WhisperSGPipeline) from a live source."""

    def __init__(self, decoder: Union[Decoder, WhisperSGPipeline], source: LiveSource,
                 settings: Optional[LiveSettings] = None,
                 on_update: Optional[Callable[[LiveState], None]] = None,
                 on_commit: Optional[Callable[[list[Segment]], None]] = None,
                 recording=None, speakers=None, on_start: Optional[Callable[[], None]] = None,
                 observers: Sequence[LiveObserver] = (), clock: Optional[Clock] = None,
                 policy: Optional[CommitPolicy] = None) -> None:
        self.decoder: Decoder = decoder if isinstance(decoder, Decoder) else PipelineDecoder(decoder)
        self.source = source
        self.settings = settings or LiveSettings()
        self.policy = policy or CommitPolicy()
        self.clock = clock or source_clock(source)
        self.observers = list(observers)
        self.speakers = speakers  # an OnlineSpeakers, for speaker labels on committed chunks
        self.segmenter = ChunkSegmenter(self.settings.soft_chunk_limit, self.settings.hard_chunk_limit,
                                        self.settings.silence_duration, self.settings.vad_threshold)
        self.state = LiveState()
        self.on_update = on_update or (lambda state: None)
        self.on_commit = on_commit or (lambda segments: None)
        self.on_start = on_start or (lambda: None)  # the source is open: callers announce readiness
        self.recording = recording
        self.stop_requested = threading.Event()
        self.agreement = StablePrefix()
        self.cuts: list[Cut] = []
        self._options = self.decoder.options  # the session's: thresholds, the user's prompt and token cap
        self.context = ContextWindow(self.settings.context_seconds, self.settings.context_chars,
                                     (self._options.initial_prompt or "").strip(), self.policy.max_prefix_chars,
                                     self.policy.history_chunks)
        self._samples_seen = 0
        self._last_interim_at = 0  # samples seen when the last interim ran
        self._interim_cost = 0.0  # what the last interim cost, in stream seconds
        self._last_kind: Optional[DecodeKind] = None
        self._recent: collections.deque[Commit] = collections.deque()  # commits within the policy's dense window

    def _now(self) -> float:
        return self.clock.now(self._samples_seen / SAMPLE_RATE)

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
            speech = self.segmenter.speech()
            self._commit(self.segmenter.take_all(), speech)
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
            speech = self.segmenter.speech(cut.samples)
            self._commit(self.segmenter.take(cut.samples), speech)
            return
        behind = self.policy.behind(self.source.pending_seconds())
        if behind != self.state.behind:
            self.state.behind = behind
            self.on_update(self.state)
        if self.policy.interim_due(self._samples_seen - self._last_interim_at, self._interim_cost,
                                   behind, self.segmenter.has_speech):
            self._interim()

    def _interim(self) -> None:
        self._last_interim_at = self._samples_seen
        began = time.monotonic()
        # Word times (cross-attention, nearly free) place each word, so agreement is judged only
        # after the words already settled.
        offset = self.segmenter.offset / SAMPLE_RATE
        audio_end = offset + self.segmenter.duration
        # Words agreed on and only waiting for their right context are not unsure: no forced decode for them.
        delay = self.policy.commit_delay(self.settings.max_commit_delay, self._recent_commits(), self._now())
        kind = (DecodeKind.FORCED if self.policy.should_force(delay, self.agreement.oldest_unagreed_end, audio_end,
                                                              self._last_kind)
                else DecodeKind.INTERIM)
        self._last_kind = kind
        request = self._request(kind, self.segmenter.audio, self.segmenter.duration)
        segments = placed(self._decode(request), offset, request.context_seconds)
        if kind is DecodeKind.INTERIM:
            # An interim Whisper is unsure of only previews: it shows and agrees nothing
            # (docs/decisions.md#live-interims-have-no-fallback).
            segments = [segment for segment in segments if not fails_thresholds(segment, self._options)]
        settle_until = self.policy.settle_until(kind, audio_end)
        agree_until = self.policy.agree_until(audio_end)
        # Only speech this decode may settle counts: the open end is often not yet written.
        horizon = settle_until if settle_until is not None else agree_until
        speech = self.segmenter.speech(round((horizon - offset) * SAMPLE_RATE))
        skipped = self._skipped_from(speech, segments, offset)
        if kind is DecodeKind.FORCED and skipped is not None and skipped < settle_until:
            segments = self._decoded_alone(kind, self.segmenter.audio, offset, audio_end, segments)
            skipped = self._skipped_from(speech, segments, offset)
        if skipped is not None:
            # No word settles past speech the hypothesis left out: the chunk's final decode (redone alone
            # if it skips it too) may still write that speech only where nothing after it is settled (#25).
            agree_until = min(agree_until, skipped)
            settle_until = None if settle_until is None else min(settle_until, skipped)
        hypothesis = [word for segment in segments for word in segment.words]
        now = self._now()
        keys = word_keys(" ".join(segment.text for segment in segments))
        for observer in self.observers:
            observer.shown(now, keys)
        settled_now, unsettled = self.agreement.update(hypothesis, settle_until=settle_until, agree_until=agree_until)
        if kind is DecodeKind.INTERIM:
            # Interims are spaced by what a greedy one costs; a forced beam-search decode costs more, and
            # letting it set the spacing would thin out the interims that words need to agree.
            self._interim_cost = self.clock.cost(time.monotonic() - began)
        forced_from = len(settled_now) - self.agreement.forced_count
        self._committed_words([CommittedWord(word.word, word.end,
                                             CommitKind.FORCED if index >= forced_from else CommitKind.AGREED)
                               for index, word in enumerate(settled_now)], now)
        self.state.settled = self.agreement.text
        self.state.interim = " ".join(w.word for w in unsettled)
        self.on_update(self.state)

    def _request(self, kind: DecodeKind, audio: np.ndarray, new_seconds: float) -> DecodeRequest:
        """A decode of ``audio`` (``new_seconds`` of it not yet committed), hearing the context ``kind`` may."""
        heard = self.context.heard(audio, self.policy.context_seconds(kind, self.settings.context_seconds))
        return DecodeRequest(kind, heard.audio, heard.context_seconds,
                             self.policy.token_cap(new_seconds, self._options.max_new_tokens),
                             heard.initial_prompt, heard.prefix,
                             self.policy.decode_options(kind, heard_context=bool(heard.context_seconds)))

    def _skipped_from(self, speech: np.ndarray, segments: list[Segment], chunk_start: float) -> Optional[float]:
        """Where the first speech the open chunk's settled words and ``segments`` leave out begins, or None."""
        heard = [(word.start, word.end) for word in self.agreement.settled if word.end is not None]
        return self.policy.skipped_from(speech, heard + _times(segments), chunk_start)

    def _decoded_alone(self, kind: DecodeKind, audio: np.ndarray, start: float, end: float,
                       found: list[Segment]) -> list[Segment]:
        """The chunk decoded again on its own, without the context's audio or text (only the user's prompt);
        kept only where it has more words: conditioned on what came before, Whisper sometimes jumps
        over some of the chunk's speech (#25)."""
        request = DecodeRequest(kind, audio, 0.0,
                                self.policy.token_cap(end - start, self._options.max_new_tokens),
                                self._options.initial_prompt or None, None,
                                self.policy.decode_options(kind, heard_context=False))
        alone = placed(self._decode(request), start, 0.0)
        logger.debug("%s decode redone alone at %.2f-%.2f s: %d words, before %d", kind, start, end,
                     _word_count(alone), _word_count(found))
        return alone if _word_count(alone) > _word_count(found) else found

    def _decode(self, request: DecodeRequest) -> list[Segment]:
        began = time.monotonic()
        segments = self.decoder.decode(request)
        seconds = time.monotonic() - began
        for observer in self.observers:
            observer.decoded(request, began, seconds)
        return segments

    def _recent_commits(self) -> collections.deque[Commit]:
        """Commits the dense-speech rule still counts (older ones never count again: time only moves on)."""
        horizon = self._now() - self.policy.dense_window
        while self._recent and self._recent[0].committed < horizon:
            self._recent.popleft()
        return self._recent

    def _committed_words(self, words: list[CommittedWord], at: float) -> None:
        self._recent.extend(Commit(at, word.how) for word in words)
        if words:
            for observer in self.observers:
                observer.committed(words, at)

    def _commit(self, taken: tuple[int, np.ndarray], speech: Optional[np.ndarray] = None) -> None:
        offset, audio = taken
        start, end = offset / SAMPLE_RATE, (offset + len(audio)) / SAMPLE_RATE
        found: list[Segment] = []
        if len(audio) >= self.policy.min_commit_seconds * SAMPLE_RATE:
            self._last_kind = DecodeKind.CHUNK
            request = self._request(DecodeKind.CHUNK, audio, end - start)
            found = placed(self._decode(request), start, request.context_seconds)
            if speech is not None and self.policy.skipped(speech, _times(found), start):
                found = self._decoded_alone(DecodeKind.CHUNK, audio, start, end, found)
        settled = {id(word) for word in self.agreement.settled}
        segments = self.agreement.finish_chunk(found, end)
        if self.speakers is not None and segments and len(audio):
            turns = [SpeakerTurn(t.start + start, t.end + start, t.speaker) for t in self.speakers.label(audio)]
            segments = assign_speakers(segments, turns)
        committed_at = self._now()
        self._committed_words([CommittedWord(word.word, word.end if word.end is not None else segment.end,
                                             CommitKind.CHUNK)
                               for segment in segments for word in segment.words if id(word) not in settled],
                              committed_at)
        for observer in self.observers:
            observer.chunk_ended()
        if len(audio):
            self.context.remember(audio, segments)
        self.state.settled = self.agreement.text
        self.state.interim = ""
        self.state.committed.extend(segments)
        if segments:
            self.on_commit(segments)
        self.on_update(self.state)


def _times(segments: list[Segment]) -> list[tuple[float, float]]:
    return [(word.start, word.end) for segment in segments for word in segment.words
            if word.start is not None and word.end is not None]


def _word_count(segments: list[Segment]) -> int:
    return sum(len(segment.words) for segment in segments)
