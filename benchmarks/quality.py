#!/usr/bin/env python3
"""Transcript quality across CPU kernels: the numbers behind the tests' quality bounds.

CTranslate2 picks its CPU kernels by instruction set, and Intel MKL (its int8 matrix products)
picks its own, so int8 tiny.en can say different things on different CPUs.  Each kernel set here
runs in its own process with ``CT2_FORCE_CPU_ISA`` and ``MKL_ENABLE_INSTRUCTIONS`` set
(``whispersg.kernels``), which is how one machine reproduces another CPU.  Per kernel set: the demo call's WER, the dev manifest's
corpus WER (overall and per accent group, as ``whispersg FOLDER`` runs it), how many words the
repetition guard removed (copies of a repeat heard fewer times alone, and re-decoded words
the window had), and any word or segment of zero length.  ``--no_guard`` measures the
same without the guard, for the before/after of the guard itself.

    python benchmarks/quality.py --kernels AVX2 AVX512 --out benchmarks/results/quality.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
from whispersg.kernels import KERNELS, kernel_environment  # noqa: E402
DEFAULT_MANIFEST = REPO.parent / "shared" / "eval" / "manifest.jsonl"
DEMO_WAV = REPO / "demo" / "sample.wav"
DEMO_STM = REPO / "demo" / "sample.stm"


def worker(args: argparse.Namespace) -> dict:
    from whispersg import WhisperSGPipeline, asr
    from whispersg.metrics import corpus_wer, read_stm

    removed: list[str] = []

    def counted(guard):
        def run(words, *rest):
            kept = guard(words, *rest)
            removed.extend(w.word for w in words if all(w is not k for k in kept))
            return kept
        return run

    if args.no_guard:  # no repeat check, and a re-decoded stretch adds whatever it heard
        asr.WhisperDecoder._check_repeats = lambda self, items, decoded, *rest: decoded
        asr.new_words = lambda found, existing: found
    else:
        asr.drop_copies, asr.new_words = counted(asr.drop_copies), counted(asr.new_words)
    pipeline = WhisperSGPipeline(model=args.model, threads=args.threads, model_dir=args.model_dir)
    rows = [json.loads(line) for line in Path(args.manifest).read_text().splitlines() if line.strip()]
    paths = [str(Path(args.manifest).parent / row["audio"]) for row in rows]

    demo = pipeline.transcribe(str(DEMO_WAV))
    demo_removed = len(removed)
    reference = " ".join(text for _, _, _, text in read_stm(DEMO_STM))
    transcripts, failed = [], []
    for path, result in pipeline.transcribe_many(paths):
        if isinstance(result, Exception):
            failed.append(f"{Path(path).name}: {type(result).__name__}: {result}")
            transcripts.append(None)
        else:
            transcripts.append(result)
    hyps = [t.text if t is not None else "" for t in transcripts]
    result = {
        "demo_wer": corpus_wer([reference], [demo.text]),
        "demo_text": demo.text,
        "demo_words_removed": demo_removed,
        "dev_wer": corpus_wer([r["text"] for r in rows], hyps),
        "failed": failed,
        "dev_words_removed": len(removed) - demo_removed,
        "removed": removed,
        "hypotheses": hyps,
    }
    for accent in sorted({r["accent"] for r in rows}):
        keep = [i for i, r in enumerate(rows) if r["accent"] == accent]
        result[f"dev_wer_{accent}"] = corpus_wer([rows[i]["text"] for i in keep], [hyps[i] for i in keep])
    every = [demo] + [t for t in transcripts if t is not None]
    result["zero_length_segments"] = sum(s.end <= s.start for t in every for s in t.segments)
    result["zero_length_words"] = sum(w.end <= w.start for t in every for w in t.words)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", nargs="+", default=["native", "AVX2", "AVX512"],
                        choices=["native", *KERNELS], metavar="KERNEL",
                        help=f"kernel sets to run: native (this CPU's own), {', '.join(KERNELS)} (default: native AVX2 AVX512)")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="JSONL of {audio, text, accent}")
    parser.add_argument("--model", default="tiny.en", help="model name or folder (default: tiny.en)")
    parser.add_argument("--model_dir", default=None, help="model store (default: the usual one)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--no_guard", action="store_true", help="measure without the repetition guard")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if not Path(args.manifest).is_file():
        raise SystemExit(f"{args.manifest}: no such manifest; pass --manifest PATH")
    results = {"date": dt.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
               "model": args.model, "threads": args.threads, "guard": not args.no_guard, "kernels": {}}
    for kernel in args.kernels:
        command = [sys.executable, __file__, "--worker", "--manifest", args.manifest, "--model", args.model,
                   "--threads", str(args.threads)] + (["--no_guard"] if args.no_guard else [])
        if args.model_dir:
            command += ["--model_dir", args.model_dir]
        env = dict(os.environ) if kernel == "native" else kernel_environment(kernel)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"kernel {kernel}: the worker failed:\n{done.stderr[-2000:]}")
        found = json.loads(done.stdout.strip().splitlines()[-1])
        results["kernels"][kernel] = found
        print(f"{kernel:8s} demo {found['demo_wer']:.4f}  dev {found['dev_wer']:.4f} "
              f"(singapore {found['dev_wer_singapore']:.4f}, other {found['dev_wer_other']:.4f})  "
              f"removed {found['demo_words_removed']}+{found['dev_words_removed']}  "
              f"zero-length {found['zero_length_segments']} seg / {found['zero_length_words']} words  "
              f"failed {len(found['failed'])}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
