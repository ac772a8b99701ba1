"""Local CLI vs library vs `--ray local`: wall time and throughput over one folder (issue 28).

    python benchmarks/ray_scale.py ../shared/eval/audio --out benchmarks/results/ray-DATE-HOST.json

Each mode runs in a fresh process, so model loading and (for Ray) cluster start-up are counted the way a
user meets them:
  cli        whispersg FOLDER -f json --quiet (the honest local baseline)
  library    WhisperSGPipeline(...).transcribe_many over the same files in one process
  ray-1x2    --ray local, 1 worker x 2 threads        ray-2x1  --ray local, 2 workers x 1 thread
  ray-1x2-ship  as ray-1x2, the audio sent through the object store (--ray_ship_audio)
The Ray modes report their start-up (cluster, first actor ready, model load in the actor) separately.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LIBRARY = """
import json, sys, time
started = time.perf_counter()
from whispersg import WhisperSGPipeline
from whispersg.inputs import collect_inputs
files, _ = collect_inputs([sys.argv[1]])
pipeline = WhisperSGPipeline(threads=int(sys.argv[2]))
loaded = time.perf_counter()
audio = sum(r.duration for _, r in pipeline.transcribe_many(files) if not isinstance(r, Exception))
print(json.dumps({"audio_seconds": audio, "load_seconds": loaded - started}))
"""

RAY = """
import json, sys, time
started = time.perf_counter()
from whispersg.distributed import RaySettings, RayTranscription
from whispersg.inputs import collect_inputs
from whispersg.options import PipelineOptions
files, _ = collect_inputs([sys.argv[1]])
settings = RaySettings(address="local", workers=int(sys.argv[2]), cpus_per_worker=float(sys.argv[3]),
                       ship_audio=sys.argv[4] == "ship")
run = RayTranscription(files, PipelineOptions(), settings)
audio, failed = 0.0, 0
for _, result in run:
    if isinstance(result, Exception):
        failed += 1
    else:
        audio += result.duration
print(json.dumps({"audio_seconds": audio, "failed": failed, "connect_seconds": run.stats.connect_seconds,
                  "first_ready_seconds": run.stats.first_ready_seconds, "workers": run.stats.workers,
                  "calls": run.stats.calls, "transcribe_seconds": time.perf_counter() - started}))
"""


def run_mode(mode: str, folder: Path, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    with tempfile.TemporaryDirectory() as out:
        commands = {
            "cli": [sys.executable, "-m", "whispersg", str(folder), "-f", "json", "--quiet", "-o", out,
                    "--threads", str(threads)],
            "library": [sys.executable, "-c", LIBRARY, str(folder), str(threads)],
            "ray-1x2": [sys.executable, "-c", RAY, str(folder), "1", str(threads), "path"],
            "ray-2x1": [sys.executable, "-c", RAY, str(folder), "2", str(max(1, threads // 2)), "path"],
            "ray-1x2-ship": [sys.executable, "-c", RAY, str(folder), "1", str(threads), "ship"],
        }
        started = time.perf_counter()
        done = subprocess.run(commands[mode], capture_output=True, text=True, env=env, cwd=REPO)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed: {done.stderr[-2000:]}")
    row = {"mode": mode, "wall_seconds": round(wall, 2)}
    if done.stdout.strip():
        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--modes", default="cli,library,ray-1x2,ray-2x1,ray-1x2-ship")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    audio = _folder_seconds(args.folder)
    rows = []
    for _ in range(args.runs):
        for mode in args.modes.split(","):
            row = run_mode(mode, args.folder, args.threads)
            row["throughput"] = round(audio / row["wall_seconds"], 2)  # audio seconds per second
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"folder": str(args.folder), "audio_seconds": audio, "cpus": os.cpu_count(),
                                        "rows": rows}, indent=1) + "\n")
    return 0


def _folder_seconds(folder: Path) -> float:
    from whispersg.audio import probe_duration
    from whispersg.inputs import collect_inputs

    files, _ = collect_inputs([str(folder)])
    return round(sum(probe_duration(path) or 0.0 for path in files), 2)


if __name__ == "__main__":
    sys.exit(main())
