#!/usr/bin/env python3
"""Lockstep replay of a recording through the live transcriber, dumped for a before/after comparison.

A refactor of ``whispersg/live`` must not change what is committed: run this with the code before
and after (``PYTHONPATH`` pointing at each checkout) and compare the two dumps. In lockstep every
interim runs and time is stream time, so the dump is repeatable on any machine: every committed
segment and word with its times, every word's shown/committed times and how it was committed, and
every decode request (kind, samples heard, token cap, prompt, prefix), for three settings.

    PYTHONPATH=OLD python benchmarks/live_replay.py --out before.json
    PYTHONPATH=NEW python benchmarks/live_replay.py --out after.json
    python benchmarks/live_replay.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (LiveSettings keywords, session pipeline options)
CONFIGS = {
    "default": ({}, {}),
    "delay-off": ({"max_commit_delay": None}, {}),
    "context-prompt-cap": ({"context_chars": 40, "context_seconds": 15.0},
                           {"initial_prompt": "Singapore call.", "max_new_tokens": 60}),
}


def replay(pipeline, recording: Path, settings_keywords: dict, session_options: dict) -> dict:
    from whispersg.live.decoder import PipelineDecoder
    from whispersg.live.latency import LatencyRecorder, LiveObserver
    from whispersg.live.settings import LiveSettings
    from whispersg.live.sources import FileSource
    from whispersg.live.transcriber import LiveTranscriber

    decodes: list[list] = []

    class Requests(LiveObserver):
        def decoded(self, request, began, seconds) -> None:
            decodes.append([str(request.kind), len(request.audio), request.max_new_tokens,
                            request.initial_prompt or "", request.prefix or ""])

    latency = LatencyRecorder()
    transcript = LiveTranscriber(PipelineDecoder(pipeline, session_options), FileSource(recording, speed=0, lockstep=True),
                                 LiveSettings(**settings_keywords), observers=[latency, Requests()]).run()
    return {
        "segments": [[s.text, round(s.start, 4), round(s.end, 4), [[w.word, w.start, w.end] for w in s.words]]
                     for s in transcript.segments],
        "timings": [[t.word, round(t.end, 4), round(t.shown, 4), round(t.committed, 4), str(t.how)]
                    for t in latency.timings],
        "decodes": decodes,
    }


def compare(before: dict, after: dict) -> bool:
    same_all = True
    for name in before:
        for key in ("segments", "timings", "decodes"):
            a, b = before[name][key], after.get(name, {}).get(key)
            same = a == b
            same_all &= same
            print(f"{name:20s} {key:9s} {'identical' if same else 'DIFFERENT'} ({len(a)} vs {len(b or [])})")
            if not same and b is not None:
                first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                print(f"  first difference at {first}: {a[first] if first < len(a) else None!r} "
                      f"vs {b[first] if first < len(b) else None!r}")
    print("identical" if same_all else "different")
    return same_all


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(HERE.parent / "demo" / "sample.wav"), help="recording to replay")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="where to write the dump")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two dumps instead")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(Path(path).read_text()) for path in args.compare)
        return 0 if compare(before, after) else 1
    if not args.out:
        parser.error("--out FILE is needed to replay (or --compare BEFORE AFTER)")
    from whispersg import WhisperSGPipeline

    pipeline = WhisperSGPipeline(model=args.model, threads=args.threads, model_dir=None if args.model else
                                 tempfile.mkdtemp())  # an empty store: the built-in tiny.en, as the tests use
    dump = {name: replay(pipeline, Path(args.input), *config) for name, config in CONFIGS.items()}
    Path(args.out).write_text(json.dumps(dump, indent=1))
    for name, result in dump.items():
        print(f"{name}: {len(result['timings'])} words committed, {len(result['decodes'])} decodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
