"""Long-input benchmark: peak memory and speed of `whispersg` on a 1-minute vs a multi-hour recording.

The long recording is built by repeating real speech clips with pauses, written
block by block (the builder itself stays small).  Each transcription runs in its
own process; peak RSS comes from the kernel's accounting of that process.

    python benchmarks/long_input.py --minutes 120          # the 2-hour run of issue #8
    python benchmarks/long_input.py --minutes 20 --clips ../shared/eval/audio/*.wav
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16000
PAUSE_SECONDS = 2.0


def build_long_recording(clips: list[Path], minutes: float, path: Path) -> int:
    """Write ``minutes`` of the clips in turn, each followed by a pause, as 16 kHz PCM WAV; returns the clip count."""
    import soundfile

    from whispersg.audio import load_audio

    sources = [load_audio(clip) for clip in clips]
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    target = int(minutes * 60 * SAMPLE_RATE)
    written = count = 0
    with soundfile.SoundFile(str(path), "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16") as sink:
        while written < target:
            for piece in (sources[count % len(sources)], pause):
                piece = piece[: target - written]
                sink.write(piece)
                written += len(piece)
            count += 1
    return count


def run_measured(command: list[str], env: dict | None = None) -> dict:
    """Run a command; return its exit code, wall time, peak RSS (MB) and stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as captured:
        process = subprocess.Popen(command, stdout=captured, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        captured.seek(0)
        stdout = captured.read().decode("utf-8", "replace")
    return {
        "returncode": process.returncode,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "stdout": stdout,
    }


def transcribe_measured(audio: Path, output_dir: Path, extra: list[str] = (), env: dict | None = None) -> dict:
    command = [sys.executable, "-m", "whispersg", str(audio), "-o", str(output_dir), "-f", "json", "--quiet", *extra]
    return run_measured(command, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=120.0, help="length of the long recording (default: 120)")
    parser.add_argument("--clips", nargs="+", type=Path, default=[REPO / "demo" / "sample.wav"],
                        help="speech clips to repeat (default: demo/sample.wav)")
    parser.add_argument("--model", default=None, help="model name or folder (default: the default model)")
    parser.add_argument("--batch_size", type=int, default=None, help="decoding batch size (default: the pipeline's)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="keep the transcripts (long-1min.json, long-<N>min.json) here (default: discarded)")
    args = parser.parse_args(argv)
    extra = (["--model", args.model] if args.model else []) + (["--batch_size", str(args.batch_size)] if args.batch_size else [])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for minutes in (1.0, args.minutes):
            audio = scratch / f"long-{minutes:g}min.wav"
            copies = build_long_recording(args.clips, minutes, audio)
            result = transcribe_measured(audio, args.output_dir or scratch / "out", extra)
            if result["returncode"] != 0:
                print(f"whispersg failed on the {minutes:g}-minute file", file=sys.stderr)
                return 1
            rows.append({"minutes": minutes, "clips": copies, "wall_s": round(result["wall_s"], 1),
                         "rtf": round(result["wall_s"] / (minutes * 60), 4), "peak_rss_mb": round(result["peak_rss_mb"], 1)})
            print(rows[-1], flush=True)
    growth = rows[1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
    host = platform.node().split(".")[0] or "host"
    stamp = dt.date.today().isoformat()
    args.results.mkdir(parents=True, exist_ok=True)
    report = {"date": stamp, "host": host, "clips": [str(c) for c in args.clips], "batch_size": args.batch_size,
              "runs": rows, "rss_growth_mb": round(growth, 1)}
    stem = f"long-input-{stamp}-{host}" + (f"-batch{args.batch_size}" if args.batch_size else "")
    (args.results / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| recording | wall time | RTF | peak RSS |", "|---|---:|---:|---:|"]
    lines += [f"| {r['minutes']:g} min | {r['wall_s']} s | {r['rtf']} | {r['peak_rss_mb']} MB |" for r in rows]
    lines.append(f"\nPeak RSS growth from 1 min to {args.minutes:g} min: {growth:+.1f} MB (target: < 200 MB).")
    (args.results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
