"""Output writers: txt, srt, vtt, tsv, json, rttm and aud (Audacity labels), each written atomically.

Every writer renders the whole file in memory, writes it to a temporary file
beside the target and renames it into place, so an interrupted run never
leaves a half-written transcript behind.  Subtitle line breaking follows
openai-whisper's writers (``max_line_width``, ``max_line_count``,
``highlight_words``); speaker labels appear as ``[SPEAKER_00]:`` prefixes.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from whispersg.errors import OptionError, OutputError
from whispersg.types import Segment, SpeakerTurn, Transcript, Word

TEXT_FORMATS = ("txt", "srt", "vtt", "tsv", "json")
ALL_FORMATS = (*TEXT_FORMATS, "rttm", "aud")


@dataclass(frozen=True)
class SubtitleOptions:
    max_line_width: Optional[int] = None
    max_line_count: Optional[int] = None
    highlight_words: bool = False


def format_timestamp(seconds: float, decimal_marker: str = ".", always_include_hours: bool = False) -> str:
    milliseconds = max(0, int(round(seconds * 1000.0)))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    hours_part = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def _speaker_prefix(speaker: Optional[str]) -> str:
    return f"[{speaker}]: " if speaker else ""


def _one_line(text: str) -> str:
    """Text safe inside a cue or a row: whitespace collapsed, no line breaks, no cue arrow."""
    return " ".join(text.split()).replace("-->", "->")


def render_txt(transcript: Transcript, **_: object) -> str:
    return "".join(f"{segment_line(s)}\n" for s in transcript.segments if _one_line(s.text))


def render_tsv(transcript: Transcript, **_: object) -> str:
    lines = ["start\tend\ttext"]
    for segment in transcript.segments:
        text = _speaker_prefix(segment.speaker) + _one_line(segment.text)
        lines.append(f"{int(round(segment.start * 1000))}\t{int(round(segment.end * 1000))}\t{text}")
    return "\n".join(lines) + "\n"


def render_aud(transcript: Transcript, **_: object) -> str:
    """Audacity's label track format (seconds, tab-separated), as the original WhisperSG's ``-f aud`` wrote it."""
    lines = []
    for segment in transcript.segments:
        speaker = f"[[{segment.speaker}]]" if segment.speaker else ""
        lines.append(f"{segment.start:.3f}\t{segment.end:.3f}\t{speaker}{_one_line(segment.text)}")
    return "".join(f"{line}\n" for line in lines)


def render_json(transcript: Transcript, **_: object) -> str:
    return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2) + "\n"


def render_rttm(transcript: Transcript, **_: object) -> str:
    uri = Path(transcript.source).stem if transcript.source else "audio"
    uri = uri.replace(" ", "_") or "audio"
    # Without diarization turns, fall back to the speaker-labelled segments.
    turns = transcript.speaker_turns or [
        SpeakerTurn(s.start, s.end, s.speaker) for s in transcript.segments if s.speaker
    ]
    return "".join(
        f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n" for t in turns
    )


def _subtitle_cues(transcript: Transcript, options: SubtitleOptions) -> Iterator[tuple[float, float, str]]:
    """Cues (start, end, text) honouring line width/count and word highlighting."""
    if not options.max_line_width and not options.max_line_count and not options.highlight_words:
        for segment in transcript.segments:
            if _one_line(segment.text):
                yield segment.start, segment.end, _speaker_prefix(segment.speaker) + _one_line(segment.text)
        return
    for segment in transcript.segments:
        words = [Word(_one_line(w.word), w.start, w.end) for w in segment.words if _one_line(w.word)]
        if not words and _one_line(segment.text):
            words = [Word(_one_line(segment.text), segment.start, segment.end)]
        if not words:
            continue
        for cue_words, lines in _break_lines(words, options):
            prefix = _speaker_prefix(segment.speaker)
            start = cue_words[0].start if cue_words[0].start is not None else segment.start
            end = cue_words[-1].end if cue_words[-1].end is not None else segment.end
            if options.highlight_words:
                # One cue per word: the cue's text with the current word underlined.
                last_end = start
                for index, word in enumerate(cue_words):
                    if word.start is None or word.end is None:
                        continue
                    if last_end < word.start:
                        yield last_end, word.start, prefix + _render_cue_text(cue_words, lines, None)
                    highlighted = _render_cue_text(cue_words, lines, index)
                    yield word.start, word.end, prefix + highlighted
                    last_end = word.end
                if last_end < end:
                    yield last_end, end, prefix + _render_cue_text(cue_words, lines, None)
            else:
                yield start, end, prefix + _render_cue_text(cue_words, lines, None)


def _break_lines(words: list[Word], options: SubtitleOptions) -> Iterator[tuple[list[Word], list[list[int]]]]:
    """Split words into cues of at most max_line_count lines of at most max_line_width characters."""
    width = options.max_line_width or 1000
    count = options.max_line_count or 1000
    cue: list[Word] = []
    lines: list[list[int]] = [[]]
    line_length = 0
    for word in words:
        text = word.word.strip()
        needed = len(text) + (1 if lines[-1] else 0)
        if lines[-1] and line_length + needed > width:
            if len(lines) >= count:
                yield cue, lines
                cue, lines, line_length = [], [[]], 0
            else:
                lines.append([])
                line_length = 0
            needed = len(text)
        cue.append(word)
        lines[-1].append(len(cue) - 1)
        line_length += needed
    if cue:
        yield cue, lines


def _render_cue_text(cue: list[Word], lines: list[list[int]], underline: Optional[int]) -> str:
    rendered = []
    for line in lines:
        parts = []
        for index in line:
            text = cue[index].word
            parts.append(f"<u>{text}</u>" if index == underline else text)
        rendered.append(" ".join(parts))
    return "\n".join(rendered)


def srt_cue(index: int, start: float, end: float, text: str) -> str:
    return f"{index}\n{format_timestamp(start, ',', True)} --> {format_timestamp(end, ',', True)}\n{text}\n"


def vtt_cue(start: float, end: float, text: str) -> str:
    return f"{format_timestamp(start, '.', True)} --> {format_timestamp(end, '.', True)}\n{text}\n"


def segment_line(segment: Segment) -> str:
    """A segment's text on one line, with its speaker prefix (txt files, live session files)."""
    return _speaker_prefix(segment.speaker) + _one_line(segment.text)


def format_segment_line(segment: Segment, show_timestamps: bool = True) -> str:
    """A segment as the terminal shows it: ``[start --> end] text``."""
    if not show_timestamps:
        return segment_line(segment)
    return f"[{format_timestamp(segment.start)} --> {format_timestamp(segment.end)}] {segment_line(segment)}"


def print_transcription(transcript: Transcript, show_timestamps: bool = True) -> None:
    """Print a transcript to stdout, one segment a line (kept from the original WhisperSG)."""
    for segment in transcript.segments:
        print(format_segment_line(segment, show_timestamps))


def render_srt(transcript: Transcript, **options: object) -> str:
    return "\n".join(srt_cue(i, start, end, text) for i, (start, end, text) in enumerate(_cues(transcript, options), start=1))


def render_vtt(transcript: Transcript, **options: object) -> str:
    return "\n".join(["WEBVTT\n", *(vtt_cue(start, end, text) for start, end, text in _cues(transcript, options))])


RENDERERS: dict[str, Callable[..., str]] = {
    "txt": render_txt,
    "srt": render_srt,
    "vtt": render_vtt,
    "tsv": render_tsv,
    "json": render_json,
    "rttm": render_rttm,
    "aud": render_aud,
}


def render(transcript: Transcript, output_format: str, **options: object) -> str:
    if output_format not in RENDERERS:
        raise OptionError(f"unknown output format {output_format!r}; choose from {', '.join(ALL_FORMATS)}")
    return RENDERERS[output_format](transcript, **options)


def write_transcript(transcript: Transcript, path: str | Path, output_format: Optional[str] = None, **options: object) -> Path:
    """Render ``transcript`` and write it to ``path`` atomically."""
    path = Path(path)
    output_format = output_format or path.suffix.lstrip(".").lower()
    atomic_write_text(path, render(transcript, output_format, **options))
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise _output_error(path, error) from error
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise _output_error(path, error) from error
        raise


SOURCES_FILE = ".whispersg_sources"  # JSON, but not matched by a *.json glob over the transcripts


def source_identity(path: Path) -> dict:
    """What makes an input the same source on a later run: its resolved path, size and modification time."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_output_sources(folder: Path) -> dict[str, dict]:
    """The source of each output stem written in ``folder`` (stem -> source_identity); empty when none is recorded."""
    try:
        records = json.loads((folder / SOURCES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no record (a new folder, or outputs of an earlier version): nothing to protect or resume
    if not isinstance(records, dict):
        return {}
    return {stem: r for stem, r in records.items() if isinstance(r, dict) and isinstance(r.get("path"), str)}


def record_output_source(folder: Path, stem: str, identity: dict) -> None:
    """Remember that ``stem``'s outputs in ``folder`` were written from ``identity`` (read again, so runs merge)."""
    records = read_output_sources(folder)
    records[stem] = identity
    atomic_write_text(folder / SOURCES_FILE, json.dumps(records, ensure_ascii=False, indent=1, sort_keys=True) + "\n")


def check_output_folder(folder: str | Path, marker: str, overwrite: bool, what: str, flag: str = "--overwrite") -> bool:
    """Refuse an output folder this tool did not create: it must be new, empty, or hold an earlier ``what`` (its
    ``marker`` file) and ``overwrite`` must be given.  Returns whether an earlier result is to be replaced."""
    folder = Path(folder)
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; choose a new output folder")
    if not any(folder.iterdir()):
        return False
    if not (folder / marker).is_file():
        raise OutputError(f"{folder}: exists and does not hold an earlier {what} (no {marker}); nothing was changed; "
                          "choose a new or empty output folder")
    if not overwrite:
        raise OutputError(f"{folder}: holds an earlier {what}; pass {flag} to replace it, or choose another output folder")
    return True


def remove_replaced_folder(folder: Path, marker: str) -> None:
    """Remove ``folder`` before a new result takes its place: only an earlier result of ours, or an empty folder."""
    import shutil

    if (folder / marker).is_file():
        shutil.rmtree(folder)
    elif folder.exists():
        folder.rmdir()  # fails on anything not empty: never delete what we did not write


def _output_error(path: Path, error: OSError) -> OutputError:
    if error.errno == errno.ENOSPC:
        return OutputError(f"{path}: no space left on the device; free some space or pass another --output_dir")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{path}: the output folder is not writable; pass a writable --output_dir")
    return OutputError(f"{path}: cannot write ({error.strerror or error}); pass another --output_dir")


def _cues(transcript: Transcript, options: dict) -> Iterator[tuple[float, float, str]]:
    subtitle = SubtitleOptions(
        max_line_width=options.get("max_line_width"),  # type: ignore[arg-type]
        max_line_count=options.get("max_line_count"),  # type: ignore[arg-type]
        highlight_words=bool(options.get("highlight_words", False)),
    )
    return _subtitle_cues(transcript, subtitle)
