"""Local CLI vs library vs `--ray local`: wall time and throughput on a folder and on one long stream (issue 28).

    python benchmarks/ray_scale.py ../shared/eval/audio --long_minutes 30 \
        --out benchmarks/results/ray-scale-DATE-HOST

Each mode runs in a fresh process, so model loading and (for Ray) cluster start-up are counted the way a
user meets them:
  cli        whispersg INPUT -f json --quiet (the honest local baseline; must stay within 5% of library)
  library    WhisperSGPipeline(...).transcribe_many over the same files in one process
  ray-1x2    --ray local, 1 worker x 2 threads        ray-2x1  --ray local, 2 workers x 1 thread
  ray-1x2-ship  as ray-1x2, the audio sent through the object store (--ray_ship_audio)
  ray-join-1x2  whispersg INPUT --ray HEAD:PORT --ray_workers 1: the CLI joining a one-node cluster that
                'ray start' started on loopback before the clock starts (a cluster that is already running)
The long stream is the folder's clips joined with 2 s pauses (benchmarks/long_input.py builds it).
Besides the rows it measures the constants of the scaling model in docs/distributed.md: actor start-up,
per-recording scheduling overhead, and the object store's cost per audio minute (the bytes of a WAV sent
to an actor that writes them to a file, as --ray_ship_audio does).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.long_input import build_long_recording  # noqa: E402 - the benchmarks share the stream builder

LIBRARY = """
import json, sys, time
started = time.perf_counter()
from whispersg import WhisperSGPipeline
from whispersg.inputs import collect_inputs
files, _ = collect_inputs([sys.argv[1]])
pipeline = WhisperSGPipeline(threads=int(sys.argv[2]))
loaded = time.perf_counter()
audio = sum(r.duration for _, r in pipeline.transcribe_many(files) if not isinstance(r, Exception))
print(json.dumps({"audio_seconds": audio, "load_seconds": loaded - started,
                  "transcribe_seconds": time.perf_counter() - loaded}))
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
                  "disconnect_seconds": run.stats.disconnect_seconds,
                  "calls": run.stats.calls, "transcribe_seconds": time.perf_counter() - started}))
"""

# The object store's part of --ray_ship_audio: the driver reads a file and hands its bytes to an actor,
# which writes them to a local file (what _Worker.transcribe does before decoding).
TRANSFER = """
import json, os, sys, tempfile, time
from pathlib import Path
from whispersg.distributed import _connect, _disconnect, _import_ray
ray = _import_ray("local")
_connect(ray, "local")

@ray.remote(num_cpus=1)
class Sink:
    def write(self, data):
        with tempfile.NamedTemporaryFile(suffix=".wav") as copy:
            copy.write(data)
            copy.flush()
        return len(data)

sink = Sink.remote()
ray.get(sink.write.remote(b"warm-up"))
path = Path(sys.argv[1])
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    ray.get(sink.write.remote(path.read_bytes()))
    times.append(time.perf_counter() - started)
_disconnect(ray, "local")
print(json.dumps({"bytes": path.stat().st_size, "seconds": times}))
"""


@contextlib.contextmanager
def running_cluster(cpus: int):
    """A one-node Ray cluster on loopback, started with 'ray start --block' in its own session and stopped
    (that session killed) after; yields the environment a driver needs to join it (address, token)."""
    temp = Path(tempfile.mkdtemp(prefix="wsg-bench-ray-", dir="/tmp"))  # short: Ray's socket paths are limited
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    ports = _free_ports(5)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_TOKEN_PATH=str(token), PYTHONPATH=str(REPO),
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               http_proxy="http://127.0.0.1:9", no_proxy="localhost,127.0.0.1")
    env.pop("RAY_ADDRESS", None)
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(ports[0]), "--ray-client-server-port", str(ports[1]), "--dashboard-port", str(ports[2]),
         "--dashboard-agent-listen-port", str(ports[3]), "--include-dashboard=false", "--temp-dir", str(temp),
         "--num-cpus", str(cpus), "--disable-usage-stats", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (temp / "head.log").read_text(errors="replace"):
            if head.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("ray start failed: " + (temp / "head.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        yield dict(env, RAY_AUTH_MODE="token", RAY_ADDRESS=f"127.0.0.1:{ports[0]}")
    finally:
        head.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever of this cluster still runs: its session
        log.close()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def _free_ports(count: int) -> list[int]:
    """Free loopback ports outside Ray's default worker range (10002-19999)."""
    found: list[int] = []
    for port in range(20000 + os.getpid() % 5000, 30000):
        with socket.socket() as probe:
            with contextlib.suppress(OSError):
                probe.bind(("127.0.0.1", port))
                found.append(port)
        if len(found) == count:
            return found
    raise SystemExit("no free ports")


def run_mode(mode: str, source: Path, threads: int) -> dict:
    if mode == "ray-join-1x2":
        with running_cluster(threads) as env:
            return _run_mode(mode, source, threads, env)
    return _run_mode(mode, source, threads, dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1"))


def _run_mode(mode: str, source: Path, threads: int, env: dict) -> dict:
    env = dict(env, NO_COLOR="1")
    with tempfile.TemporaryDirectory() as out:
        commands = {
            "cli": [sys.executable, "-m", "whispersg", str(source), "-f", "json", "--quiet", "-o", out,
                    "--threads", str(threads)],
            "library": [sys.executable, "-c", LIBRARY, str(source), str(threads)],
            "ray-1x2": [sys.executable, "-c", RAY, str(source), "1", str(threads), "path"],
            "ray-2x1": [sys.executable, "-c", RAY, str(source), "2", str(max(1, threads // 2)), "path"],
            "ray-1x2-ship": [sys.executable, "-c", RAY, str(source), "1", str(threads), "ship"],
            "ray-join-1x2": [sys.executable, "-m", "whispersg", str(source), "-f", "json", "--quiet", "-o", out,
                             "--threads", str(threads), "--ray", env.get("RAY_ADDRESS", ""), "--ray_workers", "1"],
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


def measure_transfer(stream: Path, repeats: int = 5) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", TRANSFER, str(stream), str(repeats)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"transfer failed: {done.stderr[-2000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    audio_minutes = measured["bytes"] / (16000 * 2 * 60)  # 16 kHz 16-bit mono WAV
    median = statistics.median(measured["seconds"])
    return {"megabytes": round(measured["bytes"] / 1e6, 1), "audio_minutes": round(audio_minutes, 1),
            "median_seconds": round(median, 3), "seconds_per_audio_minute": round(median / audio_minutes, 4)}


def constants(rows: list[dict], recordings: int) -> dict:
    """The scaling model's inputs from one input set's rows (medians over the runs)."""
    def median(mode: str, key: str = "wall_seconds"):
        values = [row[key] for row in rows if row["mode"] == mode and key in row]
        return statistics.median(values) if values else None

    cli, ray = median("cli"), median("ray-1x2")
    found: dict = {}
    if cli and ray:
        found["ray_overhead_seconds"] = round(ray - cli, 2)
        found["ray_overhead_fraction"] = round((ray - cli) / cli, 4)
    join = median("ray-join-1x2")
    if cli and join:
        found["ray_join_overhead_seconds"] = round(join - cli, 2)
        found["ray_join_overhead_fraction"] = round((join - cli) / cli, 4)
    if median("cli") and median("library"):
        found["cli_over_library"] = round(median("cli") / median("library"), 4)
    first_ready, connect = median("ray-1x2", "first_ready_seconds"), median("ray-1x2", "connect_seconds")
    if first_ready is not None and connect is not None:
        found["cluster_start_seconds"] = round(connect, 2)
        stop = median("ray-1x2", "disconnect_seconds")
        if stop is not None:
            found["cluster_stop_seconds"] = round(stop, 2)
        found["actor_start_seconds"] = round(first_ready - connect, 2)
        loads = [w["load_seconds"] for row in rows if row["mode"] == "ray-1x2" for w in row.get("workers", [])]
        found["actor_model_load_seconds"] = round(statistics.median(loads), 2) if loads else None
        local = median("library", "transcribe_seconds")
        ray_done = median("ray-1x2", "transcribe_seconds")
        if local and ray_done:
            # After the first actor is ready, what Ray adds to the library's transcription time (dispatch,
            # results back, shutdown), spread over the recordings: an upper bound per recording.
            found["per_recording_overhead_seconds"] = round((ray_done - first_ready - local) / recordings, 4)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--modes", default="cli,library,ray-1x2,ray-2x1,ray-1x2-ship,ray-join-1x2")
    parser.add_argument("--long_modes", default="cli,ray-1x2,ray-2x1,ray-join-1x2", help="modes run on the long stream")
    parser.add_argument("--long_minutes", type=float, default=30.0, help="long stream length (0: none)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write STEM.json and STEM.md")
    args = parser.parse_args()
    from whispersg.inputs import collect_inputs

    clips, _ = collect_inputs([str(args.folder)])
    report: dict = {"date": dt.date.today().isoformat(), "host": platform.node().split(".")[0] or "host",
                    "cpus": os.cpu_count(), "threads": args.threads, "runs": args.runs, "sets": []}
    with tempfile.TemporaryDirectory() as scratch:
        sets = [("dev set", args.folder, args.modes)]
        stream = None
        if args.long_minutes:
            stream = Path(scratch) / "long" / f"stream-{args.long_minutes:g}min.wav"
            stream.parent.mkdir()
            build_long_recording(clips, args.long_minutes, stream)
            sets.append((f"{args.long_minutes:g}-min stream", stream.parent, args.long_modes))
        for name, source, modes in sets:
            audio = _seconds(source)
            rows = []
            for _ in range(args.runs):
                for mode in modes.split(","):
                    row = run_mode(mode, source, args.threads)
                    row["throughput"] = round(audio[0] / row["wall_seconds"], 2)  # audio seconds per second
                    rows.append(row)
                    print(json.dumps({"set": name, **row}), flush=True)
                    entry = {"name": name, "recordings": audio[1], "audio_seconds": audio[0], "rows": rows,
                             "constants": constants(rows, audio[1])}
                    _save(args.out, {**report, "sets": [*report["sets"], entry]})  # a long run keeps what it has
            report["sets"].append(entry)
        if stream is not None:
            report["transfer"] = measure_transfer(stream)
            print(json.dumps({"transfer": report["transfer"]}), flush=True)
    _save(args.out, report)
    return 0


def _save(out: Path | None, report: dict) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        out.with_suffix(".md").write_text(_markdown(report))


def _seconds(source: Path) -> tuple[float, int]:
    from whispersg.audio import probe_duration
    from whispersg.inputs import collect_inputs

    files, _ = collect_inputs([str(source)])
    return round(sum(probe_duration(path) or 0.0 for path in files), 2), len(files)


def _markdown(report: dict) -> str:
    lines = [f"Machine: {report['host']} ({report['cpus']} CPUs) · tiny.en int8 (the default model here) · "
             f"{report['threads']} threads · {report['runs']} run(s) each, fresh process · {report['date']}", ""]
    for entry in report["sets"]:
        lines += [f"### {entry['name']}: {entry['recordings']} recording(s), {entry['audio_seconds'] / 60:.1f} min",
                  "", "| mode | wall (s) | audio s / s | start-up (s) |", "|---|---:|---:|---:|"]
        for row in entry["rows"]:
            startup = row.get("first_ready_seconds", row.get("load_seconds"))
            lines.append(f"| {row['mode']} | {row['wall_seconds']} | {row['throughput']} | "
                         f"{'' if startup is None else round(startup, 2)} |")
        lines += ["", "Constants: " + ", ".join(f"{k} {v}" for k, v in entry["constants"].items()), ""]
    if "transfer" in report:
        t = report["transfer"]
        lines.append(f"Object store (--ray_ship_audio): {t['megabytes']} MB ({t['audio_minutes']} audio min) to an "
                     f"actor and onto its disk in {t['median_seconds']} s: {t['seconds_per_audio_minute']} s per audio minute.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
