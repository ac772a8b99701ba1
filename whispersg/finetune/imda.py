"""Readers for the IMDA National Speech Corpus: parts 1/2 (read speech) and part 3+ (conversations).

Both turn the corpus as IMDA distributes it (``IMDA_NSC_FORMAT.md``) into
interchange ``Example``s whose audio files exist on disk: part 1/2 WAVs are
extracted from the per-speaker zips (or used in place when unpacked), part 3
intervals are cut from the long recordings into clips.  What does not fit the
layout is counted and reported, not fatal.
"""

from __future__ import annotations

import logging
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from whispersg.errors import DataError
from whispersg.finetune.interchange import Example, ReadReport
from whispersg.finetune.transcripts import CleaningRules, clean_transcript, has_markup

logger = logging.getLogger(__name__)

# Part 3 microphones: the audio folder of each and the script folder whose TextGrids describe it.
PART3_MICS = {
    "close": ("Audio Same CloseMic", "Scripts Same"),
    "boundary": ("Audio Same BoundaryMic", "Scripts Same"),
    "standing": ("Audio Separate StandingMic", "Scripts Separate"),
    "ivr": ("Audio Separate IVR", "Scripts Separate"),
}
_SPEAKER_SUFFIX = re.compile(r"-\d+$")
_SPEAKER_FOLDER = re.compile(r"SPEAKER\d+", re.IGNORECASE)
# An utterance WAV is seconds long (16 kHz 16-bit mono: 32 KB a second); 100 MB is 50 minutes.
MAX_MEMBER_BYTES = 100 * 1024 * 1024
# Deflate shrinks speech WAVs about 1.1-3x; far beyond that (a 384 KB member of 210 MB) is a zip bomb, not audio.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_ABOVE = 1024 * 1024  # a small member of silence may compress far better, and costs nothing


# ---------------------------------------------------------------- parts 1 and 2


@dataclass(frozen=True)
class ScriptLine:
    """One utterance of a SCRIPT file: id, the prompt as written and the normalised transcript."""

    id: str
    prompt: str
    normalized: Optional[str]
    location: str  # file:line, for messages


def parse_script(path: Path, report: ReadReport) -> Iterator[ScriptLine]:
    """Parse a SCRIPT ``.TXT``: ``<id>\\t<prompt>`` lines, each followed by ``\\t<normalised>``."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        logger.warning("%s: cannot be read (%s); skipped", path, error)
        report.skip("unreadable SCRIPT file")
        return
    pending: Optional[tuple[str, str, int]] = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line[0] in "\t ":
            if pending is None:
                logger.warning("%s:%d: normalised line without a prompt line before it; skipped", path, number)
                report.skip("malformed SCRIPT line")
                continue
            key, prompt, at = pending
            yield ScriptLine(key, prompt, " ".join(line.split()), f"{path}:{at}")
            pending = None
            continue
        key, tab, prompt = line.partition("\t")
        if not tab or not key.strip().isalnum():
            logger.warning("%s:%d: expected '<utterance id>\\t<prompt>', got %r; skipped", path, number, line[:60])
            report.skip("malformed SCRIPT line")
            continue
        if pending is not None:
            yield ScriptLine(pending[0], pending[1], None, f"{path}:{pending[2]}")
        pending = (key.strip(), " ".join(prompt.split()), number)  # stray tabs would break the interchange files
    if pending is not None:
        yield ScriptLine(pending[0], pending[1], None, f"{path}:{pending[2]}")


class MemberSkipped(Exception):
    """A zip member refused (too large, a zip bomb, unreadable); the warning is logged, ``reason`` is for the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WaveIndex:
    """Where each utterance's WAV lives: inside a speaker zip or as a loose file, found by file stem."""

    def __init__(self, wave_dir: Path):
        self._members: dict[str, tuple[Path, str]] = {}
        self._files: dict[str, Path] = {}
        self._speakers: dict[str, str] = {}
        for archive in sorted(wave_dir.rglob("*")):
            if archive.suffix.lower() == ".zip":
                try:
                    with zipfile.ZipFile(archive) as opened:
                        for member in opened.namelist():
                            if member.lower().endswith(".wav"):
                                self._members[Path(member).stem.upper()] = (archive, member)
                                self._note_speaker(Path(member).stem, (archive.stem, *Path(member).parts))
                except (zipfile.BadZipFile, OSError) as error:
                    logger.warning("%s: not a readable zip (%s); its utterances are skipped", archive, error)
            elif archive.suffix.lower() == ".wav":
                self._files[archive.stem.upper()] = archive
                self._note_speaker(archive.stem, archive.relative_to(wave_dir).parts)

    def _note_speaker(self, stem: str, parts: tuple[str, ...]) -> None:
        """The SPEAKERnnnn zip or folder an utterance sits in names its speaker."""
        speaker = next((part for part in parts if _SPEAKER_FOLDER.fullmatch(part)), None)
        if speaker is not None:
            self._speakers[stem.upper()] = speaker.upper()

    def speaker(self, utterance_id: str) -> Optional[str]:
        return self._speakers.get(utterance_id.upper())

    def __len__(self) -> int:
        return len(self._members) + len(self._files)

    def materialise(self, utterance_id: str, audio_dir: Path) -> Optional[Path]:
        """The WAV for an utterance as a file on disk (extracted from its zip if needed), or None."""
        key = utterance_id.upper()
        if key in self._files:
            return self._files[key].resolve()
        if key not in self._members:
            return None
        archive, member = self._members[key]
        target = audio_dir / f"{utterance_id}.wav"
        if not target.exists():
            audio_dir.mkdir(parents=True, exist_ok=True)
            _extract_member(archive, member, target)
        return target.resolve()


def _extract_member(archive: Path, member: str, target: Path) -> None:
    """Extract one WAV within the size and ratio limits, or raise MemberSkipped (logged) or DataError (no space)."""
    name = f"{archive}:{member}"
    partial = target.with_suffix(".wav.part")
    try:
        with zipfile.ZipFile(archive) as opened:
            info = opened.getinfo(member)
            if info.file_size > MAX_MEMBER_BYTES:
                _refuse(name, f"expands to {info.file_size / 1e6:.0f} MB, over the {MAX_MEMBER_BYTES // 2**20} MB limit "
                              "for one utterance", "zip member too large")
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > RATIO_CHECK_ABOVE and ratio > MAX_COMPRESSION_RATIO:
                _refuse(name, f"compressed {ratio:.0f}:1 (over {MAX_COMPRESSION_RATIO}:1: not a recording)",
                        "zip member compressed suspiciously well")
            free = shutil.disk_usage(target.parent).free
            if info.file_size > free:
                raise DataError(f"{name}: needs {info.file_size / 1e6:.1f} MB but {target.parent} has only "
                                f"{free / 1e6:.1f} MB free; free some space or choose another output folder")
            written = 0
            with opened.open(info) as source, open(partial, "wb") as sink:
                while block := source.read(1 << 20):
                    written += len(block)
                    if written > info.file_size:  # the header lied about the size
                        _refuse(name, "holds more than its declared size", "zip member larger than declared")
                    sink.write(block)
        partial.replace(target)
    except MemberSkipped:
        partial.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError) as error:  # CRC, truncation, encryption
        partial.unlink(missing_ok=True)
        _refuse(name, f"cannot be extracted ({error})", "unreadable zip member")
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise DataError(f"{name}: cannot be extracted to {target} ({error.strerror or error}); "
                        "free some space or choose another output folder") from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _refuse(name: str, why: str, reason: str) -> None:
    logger.warning("%s: %s; skipped", name, why)
    raise MemberSkipped(reason)


def channel_dir(corpus: Path, channel: int) -> Path:
    """The ``CHANNEL<n>`` folder of a part 1/2 corpus given the part folder, its DATA folder or the channel."""
    for candidate in (corpus / "DATA" / f"CHANNEL{channel}", corpus / f"CHANNEL{channel}", corpus):
        if (candidate / "SCRIPT").is_dir() and (candidate / "WAVE").is_dir():
            return candidate
    raise DataError(
        f"{corpus}: no CHANNEL{channel}/SCRIPT and CHANNEL{channel}/WAVE folders found; "
        "pass the PART1 or PART2 folder (containing DATA/CHANNEL0..2) and a channel it has"
    )


def read_part12(
    corpus: str | Path,
    output_dir: str | Path,
    channel: int,
    transcript: str = "original",
    rules: CleaningRules = CleaningRules(),
    progress: bool = True,
) -> tuple[list[Example], ReadReport]:
    """Examples for every usable utterance of one channel of IMDA NSC part 1 or 2.

    ``transcript`` picks the ``original`` prompt (the default: mixed case and
    punctuation, what Whisper is trained to write; prompts with markup are skipped)
    or the ``normalized`` line (lower case, annotation marks cleaned by ``rules``).
    In both modes an utterance whose normalised line carries a drop marker
    (``<UNK>``, ``<Z>``…: the speaker did not say the prompt clearly) is skipped.
    Speakers come from the ``SPEAKERnnnn`` zips or folders, prefixed with the part folder's name.
    """
    from tqdm import tqdm

    if transcript not in ("normalized", "original"):
        raise DataError(f"transcript must be 'normalized' or 'original', not {transcript!r}")
    root = channel_dir(Path(corpus), channel)
    part = Path(corpus).resolve().name
    waves = WaveIndex(root / "WAVE")
    if not len(waves):
        raise DataError(f"{root / 'WAVE'}: no WAV files or speaker zips found")
    audio_dir = Path(output_dir).resolve() / "audio" / f"CHANNEL{channel}"
    report = ReadReport()
    examples: list[Example] = []
    seen: set[str] = set()
    scripts = sorted(p for p in (root / "SCRIPT").iterdir() if p.suffix.lower() == ".txt")
    for script in tqdm(scripts, desc=f"CHANNEL{channel} scripts", unit="file", disable=not progress):
        for line in parse_script(script, report):
            if line.id in seen:
                report.skip("utterance id repeated")
                continue
            seen.add(line.id)
            if line.normalized is not None and any(marker in line.normalized for marker in rules.drop_markers):
                report.skip("normalised line marks the speech unusable (" + "/".join(rules.drop_markers) + ")")
                continue
            if transcript == "original":
                text = None if has_markup(line.prompt) else " ".join(line.prompt.split()) or None
                reason = "prompt with markup or empty"
            else:
                text = clean_transcript(line.normalized, rules) if line.normalized is not None else None
                reason = "no usable normalised transcript (missing, excluded marker or empty)"
            if text is None:
                report.skip(reason)
                continue
            try:
                audio = waves.materialise(line.id, audio_dir)
            except MemberSkipped as skipped:
                report.skip(skipped.reason)
                continue
            if audio is None:
                report.skip("no WAV for the utterance")
                continue
            # A SCRIPT file is one speaker-session (<speaker><session digit>.TXT) when no SPEAKER folder says.
            speaker = waves.speaker(line.id) or f"SCRIPT{script.stem[:-1]}"
            examples.append(Example(line.id, str(audio), text, f"{part}/{speaker}"))
    report.kept = len(examples)
    return examples, report


# ---------------------------------------------------------------- part 3


def read_textgrid_intervals(path: Path) -> list[tuple[float, float, str]]:
    """The first tier's intervals ``(start, end, text)``; raises DataError when the file is malformed."""
    from praatio import textgrid

    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False, duplicateNamesMode="rename")
        tier = grid.getTier(grid.tierNames[0])
        return [(float(start), float(end), str(label)) for start, end, label in tier.entries]
    except Exception as error:  # praatio raises many types for damaged files
        raise DataError(f"{path}: malformed TextGrid ({type(error).__name__}: {error})") from error


def _find_recordings(mic_dir: Path) -> dict[str, Path]:
    return {p.stem.lower(): p for p in sorted(mic_dir.rglob("*")) if p.suffix.lower() in (".wav", ".flac")}


def _recording_for(script_stem: str, mic: str, recordings: dict[str, Path]) -> Optional[Path]:
    stem = script_stem.lower()
    if stem in recordings:
        return recordings[stem]
    if mic == "boundary":  # both speakers share one boundary-mic recording: <conv>.wav for <conv>-<spk>
        return recordings.get(_SPEAKER_SUFFIX.sub("", stem))
    return None


def cut_clip(recording: Path, start: float, end: float, target: Path) -> float:
    """Write ``recording[start:end]`` to ``target`` (WAV, source rate); returns the clip's duration."""
    import soundfile

    with soundfile.SoundFile(str(recording)) as source:
        rate = source.samplerate
        first = max(0, int(start * rate))
        last = min(source.frames, int(end * rate))
        if last <= first:
            return 0.0
        source.seek(first)
        samples = source.read(last - first, dtype="int16", always_2d=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part.wav")
    soundfile.write(str(partial), samples, rate, subtype="PCM_16")
    partial.replace(target)
    return (last - first) / rate


def read_part3(
    corpus: str | Path,
    output_dir: str | Path,
    mics: tuple[str, ...] = tuple(PART3_MICS),
    padding: float = 0.1,
    min_duration: float = 0.3,
    rules: CleaningRules = CleaningRules(),
    progress: bool = True,
) -> tuple[list[Example], ReadReport]:
    """Clips and labels from the TextGrid intervals of IMDA NSC part 3 (and later conversational parts).

    Every interval of a script's first tier becomes ``<script>-<index>-<mic>``, cut
    from that microphone's recording with ``padding`` seconds either side.
    Unusable, empty or too-short intervals and malformed TextGrids are skipped and counted.
    """
    import soundfile
    from tqdm import tqdm

    corpus = Path(corpus)
    unknown = [mic for mic in mics if mic not in PART3_MICS]
    if unknown:
        raise DataError(f"unknown microphone(s) {unknown}; choose from {sorted(PART3_MICS)}")
    available = [mic for mic in mics if (corpus / PART3_MICS[mic][0]).is_dir()]
    if not available:
        folders = ", ".join(repr(PART3_MICS[mic][0]) for mic in mics)
        raise DataError(f"{corpus}: none of the audio folders {folders} exists; pass the PART3 folder")
    clips_dir = Path(output_dir).resolve() / "audio"
    part = corpus.resolve().name
    report = ReadReport()
    examples: list[Example] = []
    for mic in available:
        audio_folder, script_folder = PART3_MICS[mic]
        recordings = _find_recordings(corpus / audio_folder)
        scripts = sorted((corpus / script_folder).glob("*.[Tt]ext[Gg]rid")) if (corpus / script_folder).is_dir() else []
        if not scripts:
            logger.warning("%s: no TextGrid files; the %s microphone is skipped", corpus / script_folder, mic)
        for script in tqdm(scripts, desc=f"{mic} mic scripts", unit="file", disable=not progress):
            recording = _recording_for(script.stem, mic, recordings)
            if recording is None:
                report.skip(f"TextGrid without a {mic}-mic recording")
                continue
            try:
                intervals = read_textgrid_intervals(script)
                duration = soundfile.info(str(recording)).duration
            except DataError as error:
                logger.warning("%s; skipped", error)
                report.skip("malformed TextGrid")
                continue
            except RuntimeError as error:  # soundfile cannot read the recording
                logger.warning("%s: unreadable recording (%s); skipped", recording, error)
                report.skip("unreadable recording")
                continue
            for index, (start, end, label) in enumerate(intervals):
                text = clean_transcript(label, rules)
                if text is None:
                    report.skip("interval unusable or empty after cleaning")
                    continue
                if end - start < min_duration or start >= duration:
                    report.skip("interval too short or outside the recording")
                    continue
                clip_id = f"{script.stem}-{index}-{mic}"
                target = clips_dir / mic / f"{clip_id}.wav"
                cut_clip(recording, max(0.0, start - padding), min(duration, end + padding), target)
                # <conv>-<spk>.TextGrid: one speaker of one conversation (a boundary-mic clip holds both voices).
                examples.append(Example(clip_id, str(target), text, f"{part}/{script.stem}",
                                        f"{part}/{_SPEAKER_SUFFIX.sub('', script.stem)}"))
    report.kept = len(examples)
    return examples, report
