"""Word timing: make sure every word has a start and an end, by attention or by wav2vec2.

``attention`` (default) keeps the times the ASR stage took from Whisper's
cross-attention; no extra model is needed.  ``wav2vec2`` re-times words by
CTC forced alignment (WhisperX's approach) with a local Hugging Face
``Wav2Vec2ForCTC`` folder, run through transformers (no torchaudio) and
aligned by a small Viterbi pass over the character trellis.  Either way,
words the aligner cannot time (numbers, symbols, characters outside its
vocabulary) are interpolated from their neighbours and get a lower score,
and all words end up monotonic, inside their segment and non-overlapping.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from whispersg.audio import SAMPLE_RATE
from whispersg.errors import ModelError, OptionError, missing_extra
from whispersg.types import Segment, Word

logger = logging.getLogger(__name__)

ALIGN_METHODS = ("attention", "wav2vec2")
INTERPOLATE_METHODS = ("nearest", "linear", "ignore")
# Words placed by interpolation rather than measured get this score ceiling.
INTERPOLATED_SCORE = 0.0


@dataclass
class CharTiming:
    char: str
    start: float
    end: float
    score: float


class Wav2Vec2Aligner:
    """CTC forced alignment of known text against a local wav2vec2 CTC model."""

    def __init__(self, model_path: str | Path, device: str = "cpu") -> None:
        try:
            import torch
            from transformers import AutoFeatureExtractor, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC
        except ImportError as error:
            raise missing_extra("wav2vec2 alignment (--align_method wav2vec2)", "align", "transformers") from error
        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise ModelError(
                f"alignment model folder {path} has no config.json; pass a local Wav2Vec2ForCTC folder "
                "(e.g. downloaded with: whispersg models download facebook/wav2vec2-base-960h)"
            )
        try:
            self.model = Wav2Vec2ForCTC.from_pretrained(str(path), local_files_only=True).eval().to(device)
            self.tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(path), local_files_only=True)
            self.features = AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as error:
            raise ModelError(f"alignment model in {path} could not be loaded ({error}); re-download it") from error
        self._torch = torch
        self.device = device
        vocab = self.tokenizer.get_vocab()
        self.blank_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.word_delimiter = self.tokenizer.word_delimiter_token
        # Vocabularies are upper-case (English wav2vec2) or lower-case; match whichever this one is.
        letters = [t for t in vocab if len(t) == 1 and t.isalpha()]
        self.upper = bool(letters) and sum(t.isupper() for t in letters) > len(letters) / 2
        self.vocab = vocab
        self._lock = threading.Lock()

    def emissions(self, audio: np.ndarray) -> np.ndarray:
        """Per-frame log-probabilities (frames × vocabulary) for ``audio``."""
        torch = self._torch
        inputs = self.features(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with self._lock, torch.inference_mode():
            logits = self.model(inputs.input_values.to(self.device)).logits[0]
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def char_tokens(self, word: str) -> list[tuple[str, int]]:
        """The characters of ``word`` the model knows, with their token ids."""
        text = word.upper() if self.upper else word.lower()
        return [(ch, self.vocab[ch]) for ch in text if ch in self.vocab and ch != self.word_delimiter]

    def align_segment(self, audio: np.ndarray, segment: Segment, return_chars: bool = False) -> None:
        """Re-time ``segment.words`` in place from the audio between its start and end."""
        start = max(0.0, segment.start)
        end = min(len(audio) / SAMPLE_RATE, segment.end)
        clip = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        if len(clip) < SAMPLE_RATE // 50 or not segment.words:
            return
        emission = self.emissions(clip)
        frame_seconds = (end - start) / emission.shape[0]
        tokens: list[int] = []
        owners: list[int] = []  # which word each token belongs to
        chars: list[str] = []
        delimiter = self.vocab.get(self.word_delimiter) if self.word_delimiter else None
        for index, word in enumerate(segment.words):
            pieces = self.char_tokens(word.word)
            if not pieces:
                continue
            if tokens and delimiter is not None:
                tokens.append(delimiter)
                owners.append(-1)
                chars.append(" ")
            for ch, token in pieces:
                tokens.append(token)
                owners.append(index)
                chars.append(ch)
        repeats = sum(a == b for a, b in zip(tokens, tokens[1:]))
        if not tokens or len(tokens) + repeats > emission.shape[0]:
            logger.debug("segment %.2f-%.2f: nothing alignable or too many characters", start, end)
            for word in segment.words:
                word.start = word.end = None
            return
        path = forced_align(emission, tokens, self.blank_id)
        timings: dict[int, list[CharTiming]] = {}
        for (first, last, score), owner, ch in zip(path, owners, chars):
            if owner < 0:
                continue
            timings.setdefault(owner, []).append(
                CharTiming(ch, start + first * frame_seconds, start + (last + 1) * frame_seconds, score)
            )
        for index, word in enumerate(segment.words):
            measured = timings.get(index)
            if measured:
                word.start, word.end = measured[0].start, measured[-1].end
                word.score = float(np.mean([c.score for c in measured]))
            else:
                word.start = word.end = None
        if return_chars:
            segment.chars = [
                {"char": c.char, "start": round(c.start, 3), "end": round(c.end, 3), "score": round(c.score, 3)}
                for index in sorted(timings)
                for c in timings[index]
            ]


def forced_align(emission: np.ndarray, tokens: list[int], blank_id: int) -> list[tuple[int, int, float]]:
    """Viterbi CTC alignment: for each token, (first frame, last frame, mean probability).

    Standard CTC topology: blank states between tokens, each state may hold
    over frames, and a blank may be skipped except between two equal tokens.
    """
    frames, count = emission.shape[0], len(tokens)
    states = 2 * count + 1
    labels = np.full(states, blank_id, dtype=np.int64)
    labels[1::2] = tokens
    # Skipping the blank before state s is allowed when s is a token unlike the token two states back.
    can_skip = np.zeros(states, dtype=bool)
    can_skip[3::2] = labels[3::2] != labels[1:-2:2]
    score = np.full(states, -np.inf)
    score[0] = emission[0, blank_id]
    score[1] = emission[0, labels[1]]
    choice = np.zeros((frames, states), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, frames):
        from_previous = np.concatenate(([-np.inf], score[:-1]))
        from_skip = np.where(can_skip, np.concatenate(([-np.inf, -np.inf], score[:-2])), -np.inf)
        candidates = np.stack([score, from_previous, from_skip])
        choice[t] = np.argmax(candidates, axis=0)
        score = candidates[choice[t], np.arange(states)] + emission[t, labels]
    # The path ends on the last token or the blank after it.
    state = states - 1 if score[-1] >= score[-2] else states - 2
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= int(choice[t, state])
    result = []
    for index in range(count):
        hits = np.nonzero(path == 2 * index + 1)[0]
        if len(hits) == 0:
            previous = result[-1][1] if result else 0
            result.append((previous, previous, 0.0))
            continue
        probability = float(np.exp(emission[hits, tokens[index]]).mean())
        result.append((int(hits[0]), int(hits[-1]), probability))
    return result


def fill_missing_times(segment: Segment, method: str = "nearest") -> None:
    """Give words without times a start and end from their neighbours, with a low score.

    ``nearest`` squeezes an untimed word into the gap next to the closest timed
    word; ``linear`` spreads consecutive untimed words evenly over the gap
    between timed neighbours; ``ignore`` leaves them untimed.
    """
    if method not in INTERPOLATE_METHODS:
        raise OptionError(f"--interpolate_method must be one of {', '.join(INTERPOLATE_METHODS)} (got {method!r})")
    words = segment.words
    if method == "ignore" or all(w.start is not None for w in words):
        return
    index = 0
    while index < len(words):
        if words[index].start is not None:
            index += 1
            continue
        run_end = index
        while run_end < len(words) and words[run_end].start is None:
            run_end += 1
        gap_start = words[index - 1].end if index > 0 else segment.start
        gap_end = words[run_end].start if run_end < len(words) else segment.end
        run = words[index:run_end]
        if method == "linear" or gap_end - gap_start <= 0:
            step = max(0.0, gap_end - gap_start) / len(run)
            for k, word in enumerate(run):
                word.start, word.end = gap_start + k * step, gap_start + (k + 1) * step
        else:
            # nearest: each untimed word gets a share of the gap, at most 0.5 s, beside its neighbour.
            share = min(0.5, (gap_end - gap_start) / len(run))
            anchor_left = index > 0 or run_end >= len(words)
            for k, word in enumerate(run):
                if anchor_left:
                    word.start, word.end = gap_start + k * share, gap_start + (k + 1) * share
                else:
                    offset = len(run) - k
                    word.start, word.end = gap_end - offset * share, gap_end - (offset - 1) * share
        for word in run:
            word.score = INTERPOLATED_SCORE
        index = run_end


def align(
    segments: list[Segment],
    audio: np.ndarray,
    aligner: Optional[Wav2Vec2Aligner] = None,
    interpolate_method: str = "nearest",
    return_char_alignments: bool = False,
) -> list[Segment]:
    """Time every word of ``segments`` (wav2vec2 when ``aligner`` is given, else keep attention times)."""
    for segment in segments:
        if not segment.words and segment.text.strip():
            segment.words = [Word(word=w) for w in segment.text.split()]
        if aligner is not None:
            aligner.align_segment(audio, segment, return_char_alignments)
        fill_missing_times(segment, interpolate_method)
        segment.tidy_word_times()
    return segments
