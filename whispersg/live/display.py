"""Showing and saving a live session: a rich live view (or plain lines) and append-only session files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from whispersg.types import Segment, Transcript
from whispersg.writers import atomic_write_text, format_segment_line, format_timestamp, segment_line, srt_cue, vtt_cue

SESSION_FORMATS = ("txt", "srt", "vtt", "json")


class SessionWriter:
    """Appends each committed segment to the session file and flushes it at once.

    txt/srt/vtt grow line by line; json is rewritten whole (atomically) on each
    commit, so whatever moment the session stops, every file is complete.
    """

    def __init__(self, path: Path, output_format: str) -> None:
        self.path = path
        self.format = output_format
        self.segments: list[Segment] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        if output_format == "json":
            self._stream = None
            self._write_json()
        else:
            self._stream = open(path, "w", encoding="utf-8")
            if output_format == "vtt":
                self._stream.write("WEBVTT\n\n")
                self._flush()

    def append(self, segments: list[Segment]) -> None:
        for segment in segments:
            self.segments.append(segment)
            line = segment_line(segment)
            if self.format == "txt":
                self._stream.write(f"{line}\n")
            elif self.format == "srt":
                self._stream.write(srt_cue(len(self.segments), segment.start, segment.end, line) + "\n")
            elif self.format == "vtt":
                self._stream.write(vtt_cue(segment.start, segment.end, line) + "\n")
        if self.format == "json":
            self._write_json()
        else:
            self._flush()

    def _flush(self) -> None:
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def _write_json(self) -> None:
        transcript = Transcript(segments=self.segments, duration=self.segments[-1].end if self.segments else 0.0)
        atomic_write_text(self.path, json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2) + "\n")

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class LiveDisplay:
    """Committed text above a dim interim line (rich, on a terminal) or plain committed lines."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.interactive = sys.stdout.isatty() and not quiet
        self._live = None

    def __enter__(self) -> "LiveDisplay":
        if self.interactive:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(), refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, state) -> None:
        if self._live is None:
            return
        from rich.text import Text

        text = Text()
        for segment in state.committed[-12:]:
            text.append(f"[{format_timestamp(segment.start)}] ", style="cyan")
            text.append(segment_line(segment) + "\n")
        if state.settled or state.interim:
            # Settled words are committed (they will start the next line unchanged); the rest may change.
            text.append(state.settled + (" " if state.settled and state.interim else ""))
            text.append(state.interim, style="dim italic")
            text.append("\n")
        if state.behind:
            text.append("(processing is behind the audio: interim text paused)\n", style="yellow")
        self._live.update(text)

    def committed(self, segments: list[Segment]) -> None:
        if self.interactive or self.quiet:
            return
        for segment in segments:
            print(format_segment_line(segment), flush=True)
