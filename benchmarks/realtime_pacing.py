#!/usr/bin/env python3
"""``/v1/realtime`` WER as the client's pace changes: what the live transcriber decodes depends on when
the audio arrives (interims run only while it keeps up), so one pace says little.

Each recording is sent in-process (FastAPI's TestClient, no socket) at every pace, ``--repeats``
times: ``burst`` is the whole recording in one message, a number is the pause in seconds after each
100 ms frame (0: frames as fast as the socket takes them), ``P:N`` pauses only after the first N
frames (a client that starts paced, then catches up).  Run it once per kernel set
(``CT2_FORCE_CPU_ISA``, see ``whispersg.kernels``) and with ``PYTHONPATH`` at each checkout to
compare code.  Writes ``--out NAME.json`` and ``NAME.md``.

    python benchmarks/realtime_pacing.py --out benchmarks/results/realtime-pacing-DATE-vm-avx512
    python benchmarks/realtime_pacing.py --manifest ../shared/eval/manifest.jsonl --paces burst 0.02 --repeats 1 --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PACES = ("burst", "0", "0.005", "0.01", "0.02", "0.03", "0.05", "0.05:30")
FRAME_SECONDS = 0.1


def send(client, pcm: bytes, pace: str, query: str) -> str:
    """The committed text of one session fed ``pcm`` at ``pace``."""
    from whispersg.audio import SAMPLE_RATE

    frame = int(SAMPLE_RATE * FRAME_SECONDS) * 2
    frames = [pcm] if pace == "burst" else [pcm[i : i + frame] for i in range(0, len(pcm), frame)]
    pause, _, paced_frames = ("0" if pace == "burst" else pace).partition(":")
    limit = int(paced_frames) if paced_frames else len(frames)
    messages = []
    with client.websocket_connect(f"/v1/realtime?{query}") as socket_:
        socket_.receive_json()
        for index, data in enumerate(frames):
            socket_.send_bytes(data)
            if float(pause) and index < limit:
                time.sleep(float(pause))
        socket_.send_text(json.dumps({"type": "stop"}))
        while (message := socket_.receive_json())["type"] not in ("done", "error"):
            messages.append(message)
    if message["type"] == "error":
        raise RuntimeError(message["message"])
    return " ".join(s["text"].strip() for m in messages if m["type"] == "committed" for s in m["segments"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", help="manifest.jsonl of recordings (default: the demo call)")
    parser.add_argument("--paces", nargs="+", default=list(DEFAULT_PACES), help="burst, a pause per frame, or P:N")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max_commit_delay", type=float, help="the session's setting (default: the server's)")
    parser.add_argument("--out", required=True, help="results path without extension")
    args = parser.parse_args()

    import numpy as np
    from fastapi.testclient import TestClient

    from whispersg import WhisperSGPipeline
    from whispersg.audio import load_audio
    from whispersg.metrics import corpus_wer, read_stm
    from whispersg.serve.app import create_app

    if args.manifest:
        root = Path(args.manifest).parent
        rows = [json.loads(line) for line in Path(args.manifest).read_text().splitlines() if line.strip()]
        clips = [(root / row["audio"], row["text"]) for row in rows]
    else:
        demo = HERE.parent / "demo"
        clips = [(demo / "sample.wav", " ".join(row[3] for row in read_stm(demo / "sample.stm")))]
    pcms = [(np.clip(load_audio(str(path)), -1, 1) * 32767).astype("<i2").tobytes() for path, _ in clips]
    references = [text for _, text in clips]
    # An empty model store: the built-in tiny.en, as the tests use.
    pipeline = WhisperSGPipeline(threads=args.threads, model_dir=tempfile.mkdtemp())
    query = "language=en" + ("" if args.max_commit_delay is None else f"&max_commit_delay={args.max_commit_delay:g}")
    results = []
    with TestClient(create_app(pipeline)) as client:
        for pace in args.paces:
            for repeat in range(args.repeats):
                began = time.monotonic()
                texts = [send(client, pcm, pace, query) for pcm in pcms]
                wer = corpus_wer(references, texts)
                results.append({"pace": pace, "repeat": repeat, "wer": round(wer, 4),
                                "seconds": round(time.monotonic() - began, 1)})
                print(f"{pace:>8} #{repeat}: WER {wer:.4f}", flush=True)
    summary = {"clips": len(clips), "query": query, "kernels": os.environ.get("CT2_FORCE_CPU_ISA", "native"),
               "cpu": platform.processor() or platform.machine(), "results": results}
    Path(args.out + ".json").write_text(json.dumps(summary, indent=1))
    lines = [f"# /v1/realtime WER by pace ({len(clips)} recording(s), kernels {summary['kernels']}, {query})", "",
             "| pace | WER per repeat |", "|---|---|"]
    for pace in args.paces:
        wers = " / ".join(f"{r['wer']:.3f}" for r in results if r["pace"] == pace)
        lines.append(f"| {pace} | {wers} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
