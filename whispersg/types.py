"""Typed results (Word, Segment, SpeakerTurn, Transcript) and the value types stages share
(SpeechRegion, SpeakerCount).

The JSON produced by ``Transcript.to_dict()`` follows WhisperX's schema
(``segments[].words[]`` with ``start``, ``end``, ``score`` and optional
``speaker``, plus ``word_segments`` and ``language``) so tools written for
WhisperX output read ours unchanged.  The objects themselves can be read by those keys too
(``result["segments"]``, ``segment["text"]``, ``word["start"]``), as WhisperX's and the original
WhisperSG's ``transcribe()`` returned dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterator, Optional

from whispersg.errors import OptionError

# The shortest a word or segment is (one step of Whisper's timing, 20 ms): none has end <= start.
MIN_WORD_SECONDS = 0.02


def _rounded(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def _present(value: Any) -> bool:
    """Whether ``to_dict()`` writes a value: not None, and not an empty list."""
    return value is not None and not (isinstance(value, list) and not value)


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of dataclass ``cls`` (extra keys are ignored)."""
    return {f.name: data[f.name] for f in fields(cls) if f.name in data}


class WhisperXKeys:
    """Read access by the keys of ``to_dict()`` (WhisperX's result dicts), for code written against
    WhisperX or the original WhisperSG: ``obj[key]``, ``obj.get(key)``, ``key in obj``, ``keys()``,
    ``items()`` and ``dict(obj)``.  A key is present when ``to_dict()`` has it (``speaker`` only when
    diarized, ``start`` only on timed words), and its value is the attribute itself, not rounded."""

    _keys: ClassVar[dict[str, str]]  # WhisperX key → attribute
    _always: ClassVar[frozenset[str]]  # keys present even when their value is None or empty

    def keys(self) -> list[str]:
        return [key for key, name in self._keys.items() if key in self._always or _present(getattr(self, name))]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, self._keys[key])

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def items(self) -> list[tuple[str, Any]]:
        return [(key, self[key]) for key in self.keys()]

    def values(self) -> list[Any]:
        return [self[key] for key in self.keys()]


@dataclass
class Word(WhisperXKeys):
    """One word with its time span (seconds) and a confidence score in [0, 1]."""

    word: str
    start: Optional[float] = None
    end: Optional[float] = None
    score: Optional[float] = None
    speaker: Optional[str] = None

    _keys = {"word": "word", "start": "start", "end": "end", "score": "score", "speaker": "speaker"}
    _always = frozenset({"word"})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"word": self.word}
        if self.start is not None:
            out["start"] = _rounded(self.start)
        if self.end is not None:
            out["end"] = _rounded(self.end)
        if self.score is not None:
            out["score"] = _rounded(self.score)
        if self.speaker is not None:
            out["speaker"] = self.speaker
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Word":
        return cls(**_known_fields(cls, data))


@dataclass
class Segment(WhisperXKeys):
    """A stretch of speech: text, span, optional words and speaker, decoder statistics."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    speaker: Optional[str] = None
    avg_logprob: Optional[float] = None
    no_speech_prob: Optional[float] = None
    compression_ratio: Optional[float] = None
    temperature: Optional[float] = None
    chars: Optional[list[dict[str, Any]]] = None  # character timings (wav2vec2 alignment, on request)

    _keys = {name: name for name in ("start", "end", "text", "words", "speaker", "avg_logprob", "no_speech_prob",
                                     "compression_ratio", "temperature", "chars")}
    _always = frozenset({"start", "end", "text", "words"})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": _rounded(self.start),
            "end": _rounded(self.end),
            "text": self.text,
            "words": [w.to_dict() for w in self.words],
        }
        if self.speaker is not None:
            out["speaker"] = self.speaker
        for name in ("avg_logprob", "no_speech_prob", "compression_ratio", "temperature"):
            value = getattr(self, name)
            if value is not None:
                out[name] = _rounded(value, 4)
        if self.chars is not None:
            out["chars"] = self.chars
        return out

    def with_words(self, words: list[Word]) -> "Segment":
        """A segment made of some of this one's words (same speaker and decoder statistics)."""
        timed = [w for w in words if w.start is not None and w.end is not None]
        return Segment(
            start=timed[0].start if timed else self.start,
            end=timed[-1].end if timed else self.end,
            text=" ".join(w.word for w in words),
            words=words,
            speaker=self.speaker,
            avg_logprob=self.avg_logprob,
            no_speech_prob=self.no_speech_prob,
            compression_ratio=self.compression_ratio,
            temperature=self.temperature,
        )

    def shift(self, offset: float) -> "Segment":
        """Move the segment, its words and character timings by ``offset`` seconds (in place)."""
        self.start += offset
        self.end += offset
        for word in self.words:
            if word.start is not None:
                word.start += offset
            if word.end is not None:
                word.end += offset
        for char in self.chars or ():
            for key in ("start", "end"):
                if char.get(key) is not None:
                    char[key] += offset
        return self

    def tidy_word_times(self) -> "Segment":
        """Clamp timed words into the segment, monotonic, non-overlapping and each at least
        ``MIN_WORD_SECONDS`` long (a word of no length makes a subtitle cue of none); fit the
        segment to them."""
        timed = [w for w in self.words if w.start is not None and w.end is not None]
        cursor = self.start
        for word in timed:  # forwards: in order, each at least the minimum long
            word.start = min(max(word.start, cursor), self.end)
            word.end = max(min(word.end, self.end), word.start + MIN_WORD_SECONDS)
            cursor = word.end
        limit = self.end
        for word in reversed(timed):  # backwards: back inside the segment where the minimum pushed past it
            word.end = max(min(word.end, limit), MIN_WORD_SECONDS)
            word.start = max(0.0, min(word.start, word.end - MIN_WORD_SECONDS))
            limit = word.start
        if timed:
            self.start, self.end = timed[0].start, timed[-1].end
        elif self.end <= self.start:
            self.end = self.start + MIN_WORD_SECONDS
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Segment":
        values = _known_fields(cls, data)
        values["words"] = [Word.from_dict(w) for w in data.get("words", [])]
        return cls(**values)


@dataclass(frozen=True)
class SpeechRegion:
    """A span of audio (seconds) that contains speech."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SpeakerCount:
    """What the user knows about the number of speakers."""

    num_speakers: Optional[int] = None
    min_speakers: Optional[int] = None
    max_speakers: Optional[int] = None

    def validate(self) -> "SpeakerCount":
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OptionError(f"--{name} must be at least 1 (got {value})")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise OptionError(f"--min_speakers ({self.min_speakers}) is larger than --max_speakers ({self.max_speakers})")
        return self


@dataclass
class SpeakerTurn:
    """A diarization turn: who spoke from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {"start": _rounded(self.start), "end": _rounded(self.end), "speaker": self.speaker}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpeakerTurn":
        return cls(**_known_fields(cls, data))


@dataclass
class Transcript(WhisperXKeys):
    """The result of transcribing one recording.  Iterating it gives its segments (not its keys)."""

    segments: list[Segment]
    language: str = "en"
    duration: float = 0.0
    speaker_turns: list[SpeakerTurn] = field(default_factory=list)
    source: Optional[str] = None

    _keys = {"segments": "segments", "word_segments": "words", "language": "language", "duration": "duration",
             "speaker_turns": "speaker_turns", "source": "source"}
    _always = frozenset({"segments", "word_segments", "language", "duration"})

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def speakers(self) -> list[str]:
        names = {t.speaker for t in self.speaker_turns}
        names.update(s.speaker for s in self.segments if s.speaker)
        return sorted(names)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "segments": [s.to_dict() for s in self.segments],
            "word_segments": [w.to_dict() for w in self.words],
            "language": self.language,
            "duration": _rounded(self.duration),
        }
        if self.speaker_turns:
            out["speaker_turns"] = [t.to_dict() for t in self.speaker_turns]
        if self.source is not None:
            out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Transcript":
        return cls(
            segments=[Segment.from_dict(s) for s in data.get("segments", [])],
            language=data.get("language", "en"),
            duration=data.get("duration", 0.0),
            speaker_turns=[SpeakerTurn.from_dict(t) for t in data.get("speaker_turns", [])],
            source=data.get("source"),
        )
