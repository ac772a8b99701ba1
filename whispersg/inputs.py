"""Turning command-line inputs into audio files and safe, unique output names."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from whispersg.audio import is_audio_path


def collect_inputs(arguments: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to transcribe (folders searched recursively) and one error line per unusable argument."""
    files: list[Path] = []
    errors: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_audio_path(p))
            if not found:
                errors.append((path, f"{path}: folder holds no audio or video files; pass files or another folder"))
            candidates = found
        elif path.exists():
            candidates = [path]
        else:
            errors.append((path, f"{path}: no such file or folder; check the path"))
            candidates = []
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files, errors


def output_stems(files: list[Path], recorded: Optional[dict[str, str]] = None) -> dict[Path, str]:
    """Output base names: the input's stem, made unique; never a path, so outputs stay in their folder.

    ``recorded`` maps the stems an earlier run wrote in the output folder to their source paths: an input keeps
    its own earlier stem, and never takes one that belongs to another source."""
    recorded = recorded or {}
    owned = {source: stem for stem, source in recorded.items()}
    stems: dict[Path, str] = {}
    used: set[str] = set(recorded)
    for path in files:
        if str(path.resolve()) in owned:
            stems[path] = owned[str(path.resolve())]
    for path in files:
        if path in stems:
            continue
        stem = path.stem.replace("/", "_").replace("\\", "_").strip() or "audio"
        if stem in (".", ".."):
            stem = "audio"
        candidate, number = stem, 2
        while candidate in used:
            candidate = f"{stem}-{number}"
            number += 1
        used.add(candidate)
        stems[path] = candidate
    return stems
