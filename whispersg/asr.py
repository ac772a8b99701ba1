"""Speech recognition: batched CTranslate2 Whisper decoding over packed speech chunks.

faster-whisper's ``BatchedInferencePipeline`` decodes once at temperature 0
and ignores the quality thresholds.  Here each batch is decoded with beam
search, every chunk is checked against ``compression_ratio_threshold`` and
``log_prob_threshold``, and only the chunks that fail are decoded again at
rising temperatures (still batched).  Chunks Whisper judges silent
(``no_speech_threshold``) are dropped, so silence and noise give no text.
Word timing uses the model's cross-attention (``align``), no extra model.
"""

from __future__ import annotations

import bisect
import logging
import threading
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

from whispersg.audio import SAMPLE_RATE
from whispersg.errors import OptionError
from whispersg.options import PipelineOptions
from whispersg.repetition import MAX_CHARS_PER_SECOND, copies_heard, drop_copies, new_words, suspect_runs
from whispersg.types import Segment, SpeechRegion, Word
from whispersg.vocab import vocabulary_hotwords

logger = logging.getLogger(__name__)

# Called after each batch with (seconds of audio done, total seconds, the batch's new segments).
ProgressCallback = Callable[[float, float, list[Segment]], None]

PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
DEFAULT_BATCH_SIZE_CPU = 2
DEFAULT_BATCH_SIZE_CUDA = 8


@dataclass
class Chunk:
    """A stretch of audio decoded as one Whisper window: one or more speech regions."""

    start: float
    end: float
    regions: list[SpeechRegion]

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class _Decode:
    tokens: list[int]
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float


@dataclass(frozen=True)
class Generation:
    """One call of CTranslate2's generate: ``count`` rows forced through ``prompt`` (prompt + prefix tokens)."""

    prompt: list[int]
    count: int
    temperature: float
    suppress: list[int]
    max_length: int


class WhisperDecoder:
    """Decodes chunks of 16 kHz audio with one loaded faster-whisper ``WhisperModel``.

    Stateless between calls, so one decoder serves many files and threads.
    """

    def __init__(self, whisper) -> None:
        self.whisper = whisper
        self._language_lock = threading.Lock()
        self._numeral_tokens: Optional[list[int]] = None
        self._suppressed: dict[tuple, list[int]] = {}
        self._hotwords_cache: dict[tuple, Optional[str]] = {}

    @property
    def default_batch_size(self) -> int:
        # CTranslate2 keeps the encoder's keys and values once per beam, so on CPU a small batch keeps
        # memory flat for little speed lost; GPUs batch more (docs/decisions.md#cpu-batch-size).
        return DEFAULT_BATCH_SIZE_CUDA if self.whisper.model.device == "cuda" else DEFAULT_BATCH_SIZE_CPU

    @property
    def multilingual(self) -> bool:
        return bool(self.whisper.model.is_multilingual)

    def check_task(self, options: PipelineOptions, model_name: str) -> None:
        if options.task == "translate" and not self.multilingual:
            raise OptionError(
                f"--task translate needs a multilingual model, but '{model_name}' is English-only; "
                "pick a multilingual model such as --model small or --model large-v3"
            )
        if options.language and options.language != "en" and not self.multilingual:
            raise OptionError(
                f"--language {options.language} needs a multilingual model, but '{model_name}' is English-only; "
                "drop --language or pick a multilingual model"
            )

    def transcribe(
        self,
        audio: np.ndarray,
        chunks: list[Chunk],
        options: PipelineOptions,
        progress: Optional[ProgressCallback] = None,
    ) -> tuple[list[Segment], str]:
        """Decode ``chunks`` of ``audio``; returns segments (absolute times) and the language."""
        if not chunks:
            return [], options.language or "en"
        language = self.language(audio, chunks[0], options)
        tokenizer = self._tokenizer(options, language)
        total = sum(c.duration for c in chunks)
        done = 0.0
        segments: list[Segment] = []
        previous_text_tokens: list[int] = []
        batch_size = 1 if options.condition_on_previous_text else options.batch_size or self.default_batch_size
        # A prefix belongs to the first chunk only, which is then decoded on its own.
        starts = [0, 1] if options.prefix else [0]
        starts += list(range(starts[-1] + batch_size, len(chunks), batch_size))
        for first, stop in zip(starts, starts[1:] + [len(chunks)]):
            batch = chunks[first:stop]
            if not batch:
                continue
            prompt_tokens = self._prompt_tokens(tokenizer, options, previous_text_tokens)
            prefix_tokens = tokenizer.encode(" " + options.prefix.strip()) if options.prefix and first == 0 else []
            items = [(audio, chunk) for chunk in batch]
            decoded = self._decode_batch(items, tokenizer, prompt_tokens, options, prefix_tokens)
            if not prefix_tokens:  # the prefix's own audio has no words of its own: it would look skipped
                decoded = self._recover_skipped(items, decoded, tokenizer, prompt_tokens, options)
            decoded = self._check_repeats(items, decoded, tokenizer, prompt_tokens, options)
            segments_in_batch = [piece for segment in decoded if segment for piece in at_resolution(segment, options)]
            segments.extend(segments_in_batch)
            if options.condition_on_previous_text and segments_in_batch:
                last = segments_in_batch[-1]
                if (last.temperature or 0.0) <= 0.5:
                    previous_text_tokens = tokenizer.encode(" " + last.text.strip())
                else:
                    previous_text_tokens = []
            done += sum(c.duration for c in batch)
            if progress is not None:
                progress(done, total, segments_in_batch)
        return segments, language

    def decode_chunks(self, items: list[tuple[np.ndarray, Chunk]], options: PipelineOptions, language: str) -> list[list[Segment]]:
        """Decode one batch of chunks that may come from different recordings (so no
        previous-text conditioning); returns each chunk's segments, empty where it held no speech."""
        tokenizer = self._tokenizer(options, language)
        prompt_tokens = self._prompt_tokens(tokenizer, options, [])
        decoded = self._recover_skipped(items, self._decode_batch(items, tokenizer, prompt_tokens, options),
                                        tokenizer, prompt_tokens, options)
        decoded = self._check_repeats(items, decoded, tokenizer, prompt_tokens, options)
        return [at_resolution(segment, options) if segment else [] for segment in decoded]

    def language(self, audio: np.ndarray, first_chunk: Chunk, options: PipelineOptions) -> str:
        """The language to decode in: the option, English for English-only models, else detected."""
        if options.language:
            return options.language
        if not self.multilingual:
            return "en"
        features = self._features(audio, first_chunk)
        with self._language_lock:
            language, probability, _ = self.whisper.detect_language(features=features)
        logger.info("detected language %s (p=%.2f)", language, probability)
        return language

    # -- steps -------------------------------------------------------------

    def _features(self, audio: np.ndarray, chunk: Chunk) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        samples = audio[int(chunk.start * SAMPLE_RATE) : int(chunk.end * SAMPLE_RATE)]
        return pad_or_trim(self.whisper.feature_extractor(samples)[..., :-1])

    def _tokenizer(self, options: PipelineOptions, language: str):
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(self.whisper.hf_tokenizer, self.multilingual, task=options.task, language=language)

    def _prompt_tokens(self, tokenizer, options: PipelineOptions, previous: list[int]) -> list[int]:
        previous_tokens = list(previous)
        if options.initial_prompt and not previous_tokens:
            previous_tokens = tokenizer.encode(" " + options.initial_prompt.strip())
        return self.whisper.get_prompt(
            tokenizer,
            previous_tokens=previous_tokens,
            without_timestamps=True,
            hotwords=self._hotwords(tokenizer, options),
        )

    def _hotwords(self, tokenizer, options: PipelineOptions) -> Optional[str]:
        key = (options.vocab, options.hotwords)
        if key not in self._hotwords_cache:
            count = lambda text: len(tokenizer.encode(" " + text))  # noqa: E731
            self._hotwords_cache[key] = vocabulary_hotwords(options.vocab, options.hotwords, count)
        return self._hotwords_cache[key]

    def _suppress_tokens(self, tokenizer, options: PipelineOptions) -> list[int]:
        from faster_whisper.transcribe import get_suppressed_tokens

        key = (options.suppress_tokens, options.suppress_numerals, tokenizer.task, tokenizer.language)
        if key not in self._suppressed:
            ids = options.suppress_token_ids()
            suppressed = list(get_suppressed_tokens(tokenizer, ids)) if ids else []
            if options.suppress_numerals:
                if self._numeral_tokens is None:
                    self._numeral_tokens = numeral_symbol_tokens(tokenizer)
                suppressed = sorted(set(suppressed) | set(self._numeral_tokens))
            self._suppressed[key] = suppressed
        return self._suppressed[key]

    def _decode_batch(self, items: list[tuple[np.ndarray, Chunk]], tokenizer, prompt: list[int],
                      options: PipelineOptions, prefix: list[int] = ()) -> list[Optional[Segment]]:
        """Decode ``(audio, chunk)`` pairs in one batch; per chunk its segment, or None where no speech was heard.

        ``prefix`` (tokens) is what every chunk of the batch starts with: decoding continues after
        it, and neither the text nor the words returned include it.
        """
        prefix = list(prefix)
        prompt = self._fit_prompt(prompt, prefix, tokenizer)
        batch = [chunk for _, chunk in items]
        features = np.stack([self._features(audio, chunk) for audio, chunk in items])
        encoder_output = self.whisper.encode(features)
        request = Generation(prompt=prompt + prefix, count=len(batch), temperature=0.0,
                             suppress=self._suppress_tokens(tokenizer, options),
                             max_length=self._max_length(prompt, prefix, options))
        best = self._decode_with_fallback(features, encoder_output, request, tokenizer, options, len(prefix))
        return self._segments(batch, best, encoder_output, tokenizer, options, prefix)

    def _fit_prompt(self, prompt: list[int], prefix: list[int], tokenizer) -> list[int]:
        """The prompt, shortened so that it and the prefix fit half of Whisper's token budget."""
        budget = self.whisper.max_length // 2 - 1
        if prefix and len(prompt) + len(prefix) > budget and prompt and prompt[0] == tokenizer.sot_prev:
            # The previous text gives way to the prefix, oldest tokens first.
            previous = prompt.index(tokenizer.sot) - 1
            drop = min(previous, len(prompt) + len(prefix) - budget)
            prompt = prompt[:1] + prompt[1 + drop:] if drop < previous else prompt[1 + previous:]
        if prefix and len(prompt) + len(prefix) > budget:
            raise OptionError(f"the prompt and prefix are too long for Whisper (at most {budget} tokens together); "
                              "shorten them")
        return prompt

    def _max_length(self, prompt: list[int], prefix: list[int], options: PipelineOptions) -> int:
        """CTranslate2's max_length that lets a decode generate at most ``options.max_new_tokens``."""
        max_length = self.whisper.max_length
        if options.max_new_tokens:
            # CTranslate2 stops a sequence (the prefix, then what it generates) at min(max_length / 2,
            # max_length - prompt length) tokens: N new tokens need max_length = max(2 (prefix + N),
            # prompt + prefix + N).
            wanted = len(prefix) + options.max_new_tokens
            max_length = min(max_length, max(2 * wanted, len(prompt) + wanted))
        if len(prompt) >= max_length:
            raise OptionError("the prompt (initial_prompt + hotwords) is too long for Whisper; shorten it")
        return max_length

    def _decode_with_fallback(self, features: np.ndarray, encoder_output, request: "Generation", tokenizer,
                              options: PipelineOptions, prefix_length: int) -> list[Optional[_Decode]]:
        """Each row's decode: the first temperature whose decode passes the thresholds (or is silence);
        only the rows that fail are decoded again, still batched, at the next temperature."""
        count = request.count
        best: list[Optional[_Decode]] = [None] * count
        candidates: list[list[_Decode]] = [[] for _ in range(count)]
        pending = list(range(count))
        for temperature in options.temperatures():
            if not pending:
                break
            sub_output = encoder_output if len(pending) == count else self.whisper.encode(features[pending])
            results = self._generate(sub_output, replace(request, count=len(pending), temperature=temperature), options)
            still_failing = []
            for index, result in zip(pending, results):
                decode = self._score(result, tokenizer, temperature, options, prefix_length)
                candidates[index].append(decode)
                if self._is_silence(decode, options) or not fails_thresholds(decode, options):
                    best[index] = decode
                else:
                    still_failing.append(index)
            pending = still_failing
        for index in pending:
            best[index] = best_failed_decode(candidates[index], options)
        return best

    def _segments(self, batch: list[Chunk], best: list[Optional[_Decode]], encoder_output, tokenizer,
                  options: PipelineOptions, prefix: list[int]) -> list[Optional[Segment]]:
        """Segments of the decodes that heard speech, their words timed by cross-attention."""
        kept = [
            (chunk, decode, i)
            for i, (chunk, decode) in enumerate(zip(batch, best))
            if decode is not None
            and decode.text.strip()
            and not self._is_silence(decode, options)
            and fits_in_speech(decode.text, chunk)
        ]
        word_lists: list[list[Word]] = [[] for _ in kept]
        if options.align and options.align_method == "attention" and kept:
            word_lists = self._word_timestamps(encoder_output, batch, tokenizer, kept, prefix)
        segments: list[Optional[Segment]] = [None] * len(batch)
        for (chunk, decode, row), words in zip(kept, word_lists):
            segments[row] = Segment(
                start=chunk.start,
                end=chunk.end,
                text=decode.text.strip(),
                words=words,
                avg_logprob=decode.avg_logprob,
                no_speech_prob=decode.no_speech_prob,
                compression_ratio=decode.compression_ratio,
                temperature=decode.temperature,
            ).tidy_word_times()
        return segments

    def _recover_skipped(self, items: list[tuple[np.ndarray, Chunk]], decoded: list[Optional[Segment]], tokenizer,
                         prompt: list[int], options: PipelineOptions) -> list[Optional[Segment]]:
        """Decode again, on their own, the stretches of speech a chunk's decode skipped.

        Whisper sometimes ends a window's transcript early or jumps over an utterance, most often
        where the speaker or the recording changes inside the window (on 30 min of eval clips joined
        with 1 s pauses, three clips, 64 words, vanished that way).  Word times show it: a VAD speech
        region that got (almost) no words.  Such regions are decoded alone, in one more batch, and
        their words replace the few the chunk's decode put there when the new decode found more.
        """
        stretches = [(row, stretch) for row, ((_, chunk), segment) in enumerate(zip(items, decoded))
                     for stretch in skipped_stretches(chunk, segment)]
        if stretches:
            logger.debug("decoding %d skipped stretch(es) of speech again", len(stretches))
        decoded = list(decoded)
        for (row, stretch), found in self._decode_alone(items, stretches, tokenizer, prompt, options):
            if found is not None:
                decoded[row] = replace_stretch(decoded[row], stretch, found.words)
        return decoded

    def _check_repeats(self, items: list[tuple[np.ndarray, Chunk]], decoded: list[Optional[Segment]], tokenizer,
                       prompt: list[int], options: PipelineOptions) -> list[Optional[Segment]]:
        """Hear again, alone, each run of a repeated word or phrase that has a copy too short to have
        been said, and keep only as many copies as that decode hears (#25: six "Hello." for three)."""
        suspects = [(row, run) for row, segment in enumerate(decoded) if segment is not None
                    for run in suspect_runs(segment.words)]
        stretches = [(row, run_stretch(items[row][1], decoded[row].words, run)) for row, run in suspects]
        decoded = list(decoded)
        # Runs are dropped from the last, so the word indices of earlier runs stay valid.
        checked = list(zip(suspects, self._decode_alone(items, stretches, tokenizer, prompt, options)))
        for ((row, run), (_, found)) in reversed(checked):
            heard = copies_heard(decoded[row].words, run, found.words) if found is not None else 0
            if 0 < heard < run.count:
                logger.debug("kept %d of %d copies of a repeat the decoder heard %d times alone", heard, run.count, heard)
                decoded[row] = decoded[row].with_words(drop_copies(decoded[row].words, run, heard))
        return decoded

    def _decode_alone(self, items: list[tuple[np.ndarray, Chunk]], stretches: list[tuple[int, Chunk]], tokenizer,
                      prompt: list[int], options: PipelineOptions) -> list[tuple[tuple[int, Chunk], Optional[Segment]]]:
        """Decode stretches of the batch's chunks (``(row, stretch)``) on their own, in one more batch."""
        if not stretches:
            return []
        found = self._decode_batch([(items[row][0], stretch) for row, stretch in stretches], tokenizer, prompt, options)
        return list(zip(stretches, found))

    def _generate(self, encoder_output, request: "Generation", options: PipelineOptions):
        if request.temperature > 0:
            sampling = {"beam_size": 1, "num_hypotheses": options.best_of, "sampling_topk": 0,
                        "sampling_temperature": request.temperature}
        else:
            sampling = {"beam_size": options.beam_size, "patience": options.patience}
        return self.whisper.model.generate(
            encoder_output,
            [list(request.prompt) for _ in range(request.count)],
            length_penalty=options.length_penalty,
            max_length=request.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=request.suppress,
            **sampling,
        )

    def _score(self, result, tokenizer, temperature: float, options: PipelineOptions, prefix_length: int = 0) -> _Decode:
        from faster_whisper.transcribe import get_compression_ratio

        # With several sampled hypotheses, keep the most probable one.
        best_index = int(np.argmax(result.scores)) if len(result.scores) > 1 else 0
        # CTranslate2 returns the forced prefix at the start of every sequence.
        tokens = [t for t in result.sequences_ids[best_index][prefix_length:] if t < tokenizer.eot]
        # The score is normalised by the whole length, prefix included (whose forced tokens add nothing to it).
        cumulative = result.scores[best_index] * ((prefix_length + len(tokens)) ** options.length_penalty)
        avg_logprob = cumulative / (len(tokens) + 1)
        text = tokenizer.decode(tokens)
        return _Decode(
            tokens=tokens,
            text=text,
            avg_logprob=float(avg_logprob),
            no_speech_prob=float(result.no_speech_prob),
            compression_ratio=float(get_compression_ratio(text.strip())) if text.strip() else 0.0,
            temperature=temperature,
        )

    @staticmethod
    def _is_silence(decode: _Decode, options: PipelineOptions) -> bool:
        if options.no_speech_threshold is None or decode.no_speech_prob <= options.no_speech_threshold:
            return False
        return options.log_prob_threshold is None or decode.avg_logprob < options.log_prob_threshold

    def _word_timestamps(self, encoder_output, batch: list[Chunk], tokenizer, kept, prefix: list[int] = ()) -> list[list[Word]]:
        """Cross-attention word timing for the decoded chunks of one batch (the prefix is aligned
        with them, since the audio starts with it, and left out of the words returned)."""
        from faster_whisper.transcribe import merge_punctuations

        # The encoder output covers the whole batch, so every row is aligned and ours are kept.
        # Rows we do not keep get a dummy token (ctranslate2 needs one a row), and every row at least
        # two frames: on fewer the alignment is empty and faster-whisper's indexing fails (#25).
        text_tokens: list[list[int]] = [[tokenizer.eot - 1] for _ in batch]
        frames = [max(MIN_ALIGNMENT_FRAMES, int(round(chunk.duration * self.whisper.frames_per_second))) for chunk in batch]
        for chunk, decode, row in kept:
            text_tokens[row] = list(prefix) + decode.tokens
        alignments = self.whisper.find_alignment(tokenizer, text_tokens, encoder_output, frames)
        out = []
        for chunk, decode, row in kept:
            alignment = without_prefix(alignments[row], len(prefix), tokenizer)
            merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
            words = [
                Word(
                    word=item["word"].strip(),
                    start=chunk.start + float(item["start"]),
                    end=chunk.start + float(item["end"]),
                    score=float(item["probability"]),
                )
                for item in alignment
                if item["word"].strip()
            ]
            out.append(snap_to_speech(words, chunk.regions))
        return out


def best_failed_decode(candidates: list[_Decode], options: PipelineOptions) -> _Decode:
    """Every temperature failed: the most probable non-repetitive decode, as Whisper keeps."""
    pool = [
        d
        for d in candidates
        if options.compression_ratio_threshold is None or d.compression_ratio <= options.compression_ratio_threshold
    ] or candidates
    return max(pool, key=lambda d: d.avg_logprob)


def fits_in_speech(text: str, chunk: Chunk) -> bool:
    """Whether ``text`` could have been said in the chunk's speech (guards against hallucination)."""
    speech = sum(r.duration for r in chunk.regions) or chunk.duration
    return len(text.strip()) <= MAX_CHARS_PER_SECOND * speech + 5


def fails_thresholds(decode, options: PipelineOptions) -> bool:
    """Whether a decode (or the segment made of it) is repetitive or unsure enough that Whisper would
    decode again at a higher temperature: its compression ratio or average log probability is past
    the options' thresholds."""
    if options.compression_ratio_threshold is not None and decode.compression_ratio > options.compression_ratio_threshold:
        return True
    return options.log_prob_threshold is not None and decode.avg_logprob < options.log_prob_threshold


def without_prefix(alignment: list[dict], prefix_length: int, tokenizer) -> list[dict]:
    """The aligned words after the first ``prefix_length`` tokens (a word that straddles the end
    of the prefix keeps only its own tokens' text)."""
    if not prefix_length:
        return alignment
    out, seen = [], 0
    for item in alignment:
        tokens = item["tokens"]
        if seen + len(tokens) > prefix_length:
            own = [t for t in tokens[max(0, prefix_length - seen):] if t < tokenizer.eot]
            if own and seen < prefix_length:
                item = dict(item, word=tokenizer.decode(own), tokens=own)
            out.append(item)
        seen += len(tokens)
    return out


MIN_ALIGNMENT_FRAMES = 2  # the fewest mel frames a row can be aligned on (it attends to frames / 2)

# A speech region with fewer words than this per second was skipped by the decode (people say 2-3 words
# a second; a lone word stretched over a region is cross-attention timing covering for missing text).
MIN_WORDS_PER_SECOND = 0.5
MIN_SKIPPED_SECONDS = 1.0  # shorter regions without words are left alone (a breath, a click, "um")
SKIPPED_PADDING = 0.2  # s of audio around a skipped stretch, so its edge words are heard whole
REPEAT_PADDING = 0.5  # s of audio around a run of repeats heard again, so the words beside it are heard whole


def skipped_stretches(chunk: Chunk, segment: Optional[Segment]) -> list[Chunk]:
    """Runs of the chunk's speech regions its decode left (almost) without words, as chunks of their own.

    Only when the decode has word times and found words elsewhere in the chunk: decoding all of
    the chunk's speech again alone would hear the same window the same way.
    """
    if segment is None or not segment.words or any(w.start is None or w.end is None for w in segment.words):
        return []
    midpoints = [(w.start + w.end) / 2 for w in segment.words]
    skipped = [
        region.duration >= MIN_SKIPPED_SECONDS
        and sum(region.start <= m <= region.end for m in midpoints) < MIN_WORDS_PER_SECOND * region.duration
        for region in chunk.regions
    ]
    if all(skipped):
        return []
    stretches, run = [], []
    for region, is_skipped in zip(chunk.regions, skipped + [False]):
        if is_skipped:
            run.append(region)
        elif run:
            stretches.append(run)
            run = []
    if run:
        stretches.append(run)
    return [Chunk(start=max(chunk.start, run[0].start - SKIPPED_PADDING), end=min(chunk.end, run[-1].end + SKIPPED_PADDING),
                  regions=run) for run in stretches]


def run_stretch(chunk: Chunk, words: list[Word], run) -> Chunk:
    """The audio of a run of repeated words (with ``REPEAT_PADDING`` around it), as a chunk."""
    start = max(chunk.start, words[run.first].start - REPEAT_PADDING)
    end = min(chunk.end, words[run.first + run.count * run.size - 1].end + REPEAT_PADDING)
    regions = [SpeechRegion(max(r.start, start), min(r.end, end)) for r in chunk.regions if r.start < end and r.end > start]
    return Chunk(start=start, end=end, regions=regions or [SpeechRegion(start, end)])


def replace_stretch(segment: Segment, stretch: Chunk, words: list[Word]) -> Segment:
    """``segment`` with ``words`` (decoded from ``stretch`` alone) in place of its own words there,
    if they are more.  Words reaching into the stretch from outside stay, trimmed to outside it.
    Words the segment already has elsewhere are not added again: a re-decode may only add what the
    window lacked (a 5 s clip once came out twice, #25)."""
    inside = {id(w) for w in segment.words if w.start >= stretch.start and w.end <= stretch.end}
    words = new_words(words, [w for w in segment.words if id(w) not in inside])
    if len(words) <= len(inside):
        return segment
    kept = []
    for word in segment.words:
        if id(word) in inside:
            continue
        if stretch.start <= word.start < stretch.end:
            word = Word(word.word, stretch.end, max(word.end, stretch.end), word.score, word.speaker)
        elif word.start < stretch.start < word.end <= stretch.end:
            word = Word(word.word, word.start, stretch.start, word.score, word.speaker)
        kept.append(word)
    return segment.with_words(sorted(kept + list(words), key=lambda w: w.start))


def snap_to_speech(words: list[Word], regions: list[SpeechRegion]) -> list[Word]:
    """Pull word edges that fall in VAD silence onto the nearest speech edge inside the word.

    Cross-attention timing stretches the first word after a silence back over
    it (a chunk that starts in silence gives "Hello" a 7 s span); the VAD
    knows where the speech was.
    """
    if not regions:
        return words
    starts = [r.start for r in regions]
    for word in words:
        if word.start is None or word.end is None:
            continue
        index = bisect.bisect_right(starts, word.start) - 1
        inside = index >= 0 and word.start <= regions[index].end
        if not inside and index + 1 < len(regions) and regions[index + 1].start <= word.end:
            word.start = regions[index + 1].start
        index = bisect.bisect_right(starts, word.end) - 1
        if index >= 0 and word.end > regions[index].end and regions[index].end >= word.start:
            word.end = regions[index].end
    return words


def numeral_symbol_tokens(tokenizer) -> list[int]:
    """Token ids containing digits or currency/percent symbols (for ``suppress_numerals``)."""
    ids = []
    for token_id in range(tokenizer.eot):
        text = tokenizer.decode([token_id]).replace(" ", "")
        if text and any(ch.isdigit() or ch in "%$£€¥₹" for ch in text):
            ids.append(token_id)
    return ids


def chunks_from_regions(
    groups: list[list[SpeechRegion]], duration: float, context: float = 0.0, chunk_size: float = 30.0
) -> list[Chunk]:
    """One chunk per group of regions, widened by up to ``context`` seconds of the audio around it.

    VAD boundaries clip the onsets and tails of words; giving Whisper the
    surrounding audio (never past a neighbouring chunk, the file's ends or
    ``chunk_size``) lets it hear them whole.
    """
    chunks = []
    for index, group in enumerate(groups):
        start, end = group[0].start, group[-1].end
        room = max(0.0, chunk_size - (end - start))
        lower = chunks[-1].end if chunks else 0.0
        upper = groups[index + 1][0].start if index + 1 < len(groups) else duration
        before = min(context, room / 2, max(0.0, start - lower))
        after = min(context, room - before, max(0.0, upper - end))
        # If one side had less audio to give, offer the rest of the room to the other side.
        before = min(context, room - after, max(0.0, start - lower))
        chunks.append(Chunk(start=start - before, end=end + after, regions=group))
    return chunks


SENTENCE_END = (".", "?", "!", "。", "？", "！")


def at_resolution(segment: Segment, options: PipelineOptions) -> list[Segment]:
    """A decoded chunk's segment as the segments of ``options.segment_resolution``: its sentences, or itself."""
    return split_at_sentences(segment) if options.segment_resolution == "sentence" else [segment]


def split_at_sentences(segment: Segment) -> list[Segment]:
    """Split a chunk-long segment into sentences, using its word times (no words: unchanged)."""
    if len(segment.words) < 2:
        return [segment]
    pieces: list[list[Word]] = [[]]
    for index, word in enumerate(segment.words):
        pieces[-1].append(word)
        if word.word.strip().endswith(SENTENCE_END) and index < len(segment.words) - 1:
            pieces.append([])
    if len(pieces) == 1:
        return [segment]
    return [segment.with_words(words) for words in pieces]
