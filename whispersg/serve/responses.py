"""A Transcript in the shapes OpenAI's audio API returns: json, text, srt, vtt, verbose_json.

``verbose_json`` carries OpenAI's fields (``task``, ``language``, ``duration``,
``text``, ``segments`` with ``id``/``seek``/``start``/``end``/``text`` and the
decoder statistics, ``words`` when word granularity is asked for) plus our
own, which OpenAI clients ignore: ``speaker`` on segments and words, the
word ``score``, and ``files`` (the transcript in other formats, rendered by
WhisperSG's writers) when the request names ``formats``.
"""

from __future__ import annotations

from typing import Any, Iterable

from whispersg.types import Transcript
from whispersg.writers import render

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
FILE_FORMATS = ("txt", "srt", "vtt", "tsv", "json")
TEXT_MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}

# Whisper's 10 ms mel frames: OpenAI's ``seek`` counts them.
FRAMES_PER_SECOND = 100


def verbose_json(transcript: Transcript, task: str, granularities: Iterable[str], file_formats: Iterable[str] = ()) -> dict[str, Any]:
    granularities = set(granularities) or {"segment"}
    body: dict[str, Any] = {
        "task": task,
        "language": transcript.language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if "segment" in granularities:
        body["segments"] = [_segment(index, segment) for index, segment in enumerate(transcript.segments)]
    if "word" in granularities:
        body["words"] = [
            _without_none({"word": word.word.strip(), "start": word.start, "end": word.end, "score": word.score,
                           "speaker": word.speaker or segment.speaker})
            for segment in transcript.segments for word in segment.words
        ]
    files = {fmt: render(transcript, fmt) for fmt in file_formats}
    if files:
        body["files"] = files
    return body


def _segment(index: int, segment) -> dict[str, Any]:
    return _without_none({
        "id": index,
        "seek": int(segment.start * FRAMES_PER_SECOND),
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
        "speaker": segment.speaker,
    })


def text_body(transcript: Transcript, response_format: str) -> str:
    """The body of a text, srt or vtt response."""
    if response_format == "text":
        return transcript.text + "\n"
    return render(transcript, response_format)


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}
