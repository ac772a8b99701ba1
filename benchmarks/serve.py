"""Load benchmark of `whispersg serve` on loopback: throughput, latency, no lost request.

Starts the real server (a subprocess, the built-in or a given model), then sends
a bounded number of OpenAI-style transcription requests in two phases:

1. within capacity: ``--concurrency`` clients (fewer than workers + queue), all must succeed;
2. overload: more clients than workers + queue; the excess must get 429 at once,
   every request must get an answer, and the server must still be healthy after.

Requests go to 127.0.0.1 only and stop after ``--requests`` each phase or ``--max_seconds``.
Writes ``benchmarks/results/serve-<date>-<host>.json`` and ``.md``.

    python -m benchmarks.serve --requests 24 --concurrency 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from whispersg.audio import SAMPLE_RATE, load_audio  # noqa: E402
from whispersg.metrics import corpus_wer, read_stm  # noqa: E402


def clips_from(manifest: Path | None) -> list[dict]:
    if manifest is None:
        text = " ".join(row[3] for row in read_stm(REPO / "demo" / "sample.stm"))
        return [{"path": REPO / "demo" / "sample.wav", "text": text}]
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [{"path": manifest.parent / row["audio"], "text": row["text"]} for row in rows]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def send(base: str, clip: dict) -> dict:
    started = time.perf_counter()
    try:
        with open(clip["path"], "rb") as audio:
            response = httpx.post(f"{base}/v1/audio/transcriptions", files={"file": (Path(clip["path"]).name, audio)},
                                  data={"model": "whisper-1"}, timeout=600)
        status = response.status_code
        text = response.json().get("text", "") if status == 200 else ""
    except httpx.HTTPError as error:
        status, text = f"no answer: {type(error).__name__}", ""
    return {"status": status, "latency": time.perf_counter() - started, "text": text, "reference": clip["text"],
            "seconds": clip["seconds"]}


def run_phase(base: str, clips: list[dict], requests: int, concurrency: int, deadline: float) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = []
        for index in range(requests):
            if time.monotonic() > deadline:
                break
            futures.append(pool.submit(send, base, clips[index % len(clips)]))
        answers = [future.result() for future in futures]
    wall = time.perf_counter() - started
    ok = [a for a in answers if a["status"] == 200]
    latencies = [a["latency"] for a in ok]
    return {
        "concurrency": concurrency,
        "sent": len(answers),
        "ok": len(ok),
        "rejected_429": sum(a["status"] == 429 for a in answers),
        "other_errors": sum(a["status"] not in (200, 429) for a in answers),
        "lost": sum(isinstance(a["status"], str) for a in answers),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(ok) / wall, 3) if wall else 0.0,
        "audio_s_per_s": round(sum(a["seconds"] for a in ok) / wall, 2) if wall else 0.0,
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 2) if latencies else None,
        "latency_max_s": round(max(latencies), 2) if latencies else None,
        "wer": round(corpus_wer([a["reference"] for a in ok], [a["text"] for a in ok]), 4) if ok else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=None, help="clips to send (default: demo/sample.wav)")
    parser.add_argument("--model", default=None, help="model for the server (default: the server's default)")
    parser.add_argument("--requests", type=int, default=24, help="requests per phase (default: 24)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients in the within-capacity phase (default: 4)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max_queue", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max_seconds", type=float, default=900, help="stop sending after this long (default: 900)")
    parser.add_argument("--tag", default="", help="suffix for the result file names")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.concurrency > args.workers + args.max_queue:
        parser.error("--concurrency must fit in workers + max_queue for the within-capacity phase")

    clips = clips_from(args.manifest)
    for clip in clips:
        clip["seconds"] = len(load_audio(clip["path"])) / SAMPLE_RATE
    port = free_port()
    command = [sys.executable, "-m", "whispersg", "serve", "--port", str(port), "--threads", str(args.threads),
               "--workers", str(args.workers), "--max_queue", str(args.max_queue), "-q"]
    if args.model:
        command += ["--model", args.model]
    server = subprocess.Popen(command, env=dict(os.environ, NO_COLOR="1"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.max_seconds
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {server.stdout.read()}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        model = httpx.get(f"{base}/health").json()["model"]
        within = run_phase(base, clips, args.requests, args.concurrency, deadline)
        overload_clients = args.workers + args.max_queue + 4
        overload = run_phase(base, clips, args.requests, overload_clients, deadline)
        health = httpx.get(f"{base}/health", timeout=5).json()
        rss = peak_rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    results = {
        "date": dt.date.today().isoformat(), "machine": platform.node(), "model": model, "threads": args.threads,
        "workers": args.workers, "max_queue": args.max_queue,
        "clips": len(clips), "clip_seconds_mean": round(float(np.mean([c["seconds"] for c in clips])), 2),
        "within_capacity": within, "overload": overload, "server_healthy_after": health["status"] == "ok",
        "server_queue_after": health["queue"], "server_peak_rss_mb": round(rss, 1),
        "server_exit_code": server.returncode,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"serve-{results['date']}-{platform.node() or 'host'}" + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = []
    for name, phase in (("within capacity", within), ("overload", overload)):
        rows.append(f"| {name} | {phase['concurrency']} | {phase['sent']} | {phase['ok']} | {phase['rejected_429']} | "
                    f"{phase['other_errors']} | {phase['lost']} | {phase['requests_per_s']} | {phase['audio_s_per_s']} | "
                    f"{phase['latency_p50_s']} / {phase['latency_p95_s']} s | {phase['wer']} |")
    markdown = "\n".join([
        f"Service load benchmark · {model} · {args.threads} threads · {args.workers} worker(s), queue {args.max_queue} · "
        f"{len(clips)} clip(s) of {results['clip_seconds_mean']} s on average · {results['date']}",
        "",
        "| phase | clients | sent | 200 | 429 | other errors | lost | requests/s | audio s per s | latency p50 / p95 | WER |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Server healthy afterwards: {results['server_healthy_after']}; peak RSS {results['server_peak_rss_mb']} MB; "
        f"exit code after Ctrl-C: {results['server_exit_code']}.",
    ]) + "\n"
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    lost = within["lost"] + overload["lost"]
    return 0 if lost == 0 and within["ok"] == within["sent"] and results["server_healthy_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
