"""Small corpora in the real IMDA NSC (parts 1/2 and 3) and Common Voice layouts, spoken by espeak-ng.

Layouts follow ``IMDA_NSC_FORMAT.md``: SCRIPT pairs with a BOM and markup
prompts, per-speaker WAVE zips, part 3 recordings with praatio TextGrids full of
annotation marks (and one malformed file), a Common Voice TSV with votes and mp3 clips.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16000

# Read-speech prompts (written form, normalised form).  Speaker 2 repeats one prompt: a duplicate to drop.
PART1_PROMPTS = {
    1: [
        ("Please take the train to Jurong East.", "please take the train to jurong east"),
        ("The hawker centre opens at seven.", "the hawker centre <FIL/> opens at seven"),
        ("We queued for chicken rice <laughs>.", "we queued for chicken rice"),
        ("My brother works at the bank.", "my brother works at the bank"),
    ],
    2: [
        ("Please take the train to Jurong East.", "please take the train to jurong east"),
        ("She bought durian at the market.", "she bought durian at the market"),
        ("The weather is very hot today.", "the weather is very hot today <UNK>"),
    ],
}

# Conversation intervals per speaker: (spoken words, annotated TextGrid label).
PART3_TURNS = {
    1: [
        ("shall we go to the library later", "<S> shall we go to the library later [lah]"),
        ("", "<Z>"),
        ("i think the bus is coming now", "(ppl) i think the bus is <FIL/> coming now"),
    ],
    2: [
        ("ok see you at the station", "!walao! ok see you at the station"),
        ("the food there is very good", "the food there is very good #makan#"),
    ],
}

# (clip, sentence as written, up votes, down votes, client_id): one speaker reads two; one sentence is quoted
# and lacks its full stop (the recipe's clean-up).
COMMON_VOICE = [
    ("common_voice_en_001.mp3", "The museum is closed on Mondays.", 3, 0, "cv-a"),
    ("common_voice_en_002.mp3", "He walked along the river every morning.", 2, 0, "cv-b"),
    ("common_voice_en_003.mp3", '"Please switch off your phone," she said', 2, 1, "cv-c"),
    ("common_voice_en_004.mp3", "The children played football in the park.", 4, 0, "cv-a"),
    ("common_voice_en_005.mp3", "This sentence has too many down votes.", 0, 3, "cv-d"),
]


def speak(text: str, voice: str = "en", speed: int = 150) -> np.ndarray:
    """espeak-ng speech resampled to 16 kHz mono float32."""
    from whispersg.audio import decode_bytes

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True
    ).stdout
    return decode_bytes(wav, "espeak", SAMPLE_RATE).samples


def write_wav(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, SAMPLE_RATE, subtype="PCM_16")
    return path


def build_part12(root: Path, channel: int = 2, zipped: bool = True, part_name: str = "PART1",
                 first_speaker: int = 1) -> Path:
    """<part_name>/DATA/CHANNEL<n>/{SCRIPT,WAVE}, speakers numbered from ``first_speaker``; returns the part folder."""
    part = root / part_name
    channel_dir = part / "DATA" / f"CHANNEL{channel}"
    (channel_dir / "SCRIPT").mkdir(parents=True)
    (channel_dir / "WAVE").mkdir(parents=True)
    for number, prompts in PART1_PROMPTS.items():
        speaker = number + first_speaker - 1
        script_id = f"{speaker:05d}0"
        lines = []
        speaker_dir = root / "build" / f"SPEAKER{speaker:04d}" / "SESSION0"
        for index, (prompt, normalized) in enumerate(prompts, start=1):
            utterance = f"{script_id}{index:03d}"
            lines += [f"{utterance}\t{prompt}", f"\t{normalized}"]
            spoken = normalized.replace("<FIL/>", "").replace("<UNK>", "")
            write_wav(speaker_dir / f"{utterance}.WAV", speak(spoken, voice="en" if number == 1 else "en-us"))
        lines.append("garbage line without a tab")
        (channel_dir / "SCRIPT" / f"{script_id}.TXT").write_text("\ufeff" + "\r\n".join(lines) + "\r\n", encoding="utf-8")
        if zipped:
            with zipfile.ZipFile(channel_dir / "WAVE" / f"SPEAKER{speaker:04d}.zip", "w") as archive:
                for wav in sorted(speaker_dir.glob("*.WAV")):
                    archive.write(wav, f"SPEAKER{speaker:04d}/SESSION0/{wav.name}")
        else:
            shutil.copytree(speaker_dir.parent, channel_dir / "WAVE" / f"SPEAKER{speaker:04d}")
    shutil.rmtree(root / "build")
    return part


def build_part3(root: Path) -> Path:
    """PART3 with close-mic recordings per speaker, a boundary-mic mix and their TextGrids."""
    from praatio import textgrid
    from praatio.utilities.constants import Interval

    part = root / "PART3"
    close_dir = part / "Audio Same CloseMic"
    boundary_dir = part / "Audio Same BoundaryMic"
    scripts = part / "Scripts Same"
    scripts.mkdir(parents=True)
    conversation = "3000"
    tracks = {}
    for speaker, turns in PART3_TURNS.items():
        pieces, intervals, clock = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)], [], 0.5
        for spoken, label in turns:
            speech = speak(spoken or "mumble mumble", voice="en" if speaker == 1 else "en-us")
            intervals.append(Interval(clock, clock + len(speech) / SAMPLE_RATE, label))
            clock += len(speech) / SAMPLE_RATE + 0.8
            pieces += [speech, np.zeros(int(0.8 * SAMPLE_RATE), np.float32)]
        tracks[speaker] = np.concatenate(pieces)
        write_wav(close_dir / f"{conversation}-{speaker}.wav", tracks[speaker])
        grid = textgrid.Textgrid()
        grid.addTier(textgrid.IntervalTier(f"spk{speaker}", intervals, 0, clock))
        grid.save(str(scripts / f"{conversation}-{speaker}.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    length = max(len(t) for t in tracks.values())
    mix = sum(np.pad(t, (0, length - len(t))) for t in tracks.values()) * 0.5
    write_wav(boundary_dir / f"{conversation}.wav", mix)
    # A malformed script with a recording: must be skipped with a warning, not crash.
    write_wav(close_dir / "3001-1.wav", tracks[1][: SAMPLE_RATE])
    (scripts / "3001-1.TextGrid").write_text('File type = "ooTextFile"\nObject class = "TextGrid"\nxmin = oops\n')
    return part


def build_common_voice(root: Path) -> Path:
    """cv-corpus/en with validated.tsv (votes) and mp3 clips (ffmpeg, libmp3lame)."""
    corpus = root / "cv-corpus" / "en"
    clips = corpus / "clips"
    clips.mkdir(parents=True)
    rows = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents"]
    for name, sentence, up, down, client in COMMON_VOICE:
        wav = write_wav(root / "build-cv" / f"{name}.wav", speak(sentence, voice="en-gb", speed=160))
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-ac", "1", "-ar", "48000", "-b:a", "64k", str(clips / name)],
            check=True,
        )
        rows.append(f"{client}\t{name}\t{sentence}\t{up}\t{down}\t\t\t")
    rows.append("abc\tcommon_voice_en_999.mp3\tA clip that is missing.\t5\t0\t\t\t")
    (corpus / "validated.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    shutil.rmtree(root / "build-cv")
    return corpus
