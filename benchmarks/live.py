#!/usr/bin/env python3
"""Live-mode benchmark: latency, lag growth, memory and WER of whispersg_live's transcriber.

Eval clips are joined with 1 s pauses into one stream of --minutes minutes and replayed through the
file source in real time (computation included). For every committed word: when it ended in the
stream, when it was first shown (in an interim hypothesis or committed) and when it was committed.
Reported overall and per minute, with RSS sampled each minute, and live WER against the offline
pipeline's WER on the same stream.  Every decode the transcriber makes is logged too (greedy
interim, forced, chunk end), with each minute's interim spacing and share of time spent decoding.

    python benchmarks/live.py --manifest ../shared/eval/manifest.jsonl --minutes 5
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from whispersg import WhisperSGPipeline  # noqa: E402
from whispersg.audio import SAMPLE_RATE, load_audio  # noqa: E402
from whispersg.cli.live import add_live_settings_arguments, live_settings_from_args  # noqa: E402
from whispersg.errors import OptionError  # noqa: E402
from whispersg.live.latency import LatencyRecorder, LiveObserver  # noqa: E402
from whispersg.live.sources import FileSource  # noqa: E402
from whispersg.live.transcriber import LiveTranscriber  # noqa: E402
from whispersg.metrics import corpus_wer  # noqa: E402


class DecodeLog(LiveObserver):
    """Every decode the live transcriber makes: when it began (``time.monotonic``), how long it took,
    how much audio it read and what it was for."""

    def __init__(self) -> None:
        self.decodes: list[tuple[float, float, float, str]] = []  # began, seconds, audio seconds, kind

    def decoded(self, request, began: float, seconds: float) -> None:
        self.decodes.append((began, seconds, request.seconds, str(request.kind)))

    def summary(self, started_at: Optional[float], speed: float, minutes: int) -> dict:
        """Per kind: count, median seconds and audio seconds; per minute of session time (real-time
        replays only): interims, their median spacing and the share of the minute spent decoding."""
        by_kind = {kind: {"decodes": len(rows), "median_s": statistics.median(r[1] for r in rows),
                          "median_audio_s": statistics.median(r[2] for r in rows)}
                   for kind in ("interim", "forced", "chunk")
                   for rows in [[r for r in self.decodes if r[3] == kind]] if rows}
        per_minute = {}
        if started_at is not None and speed:
            for minute in range(minutes):
                rows = [r for r in self.decodes if minute * 60 <= (r[0] - started_at) * speed < (minute + 1) * 60]
                interims = [r[0] for r in rows if r[3] == "interim"]
                spacing = [b - a for a, b in zip(interims, interims[1:])]
                per_minute[minute] = {"interims": len(interims),
                                      "interim_spacing_median_s": statistics.median(spacing) if spacing else None,
                                      "busy_fraction": sum(r[1] for r in rows) / 60}
        return {"by_kind": by_kind, "per_minute": per_minute}


def build_stream(manifest: Path, minutes: float, pause: float = 1.0) -> tuple[np.ndarray, str, float]:
    """The clips joined with pauses, repeated until ``minutes``; their reference; one pass's seconds."""
    rows = [json.loads(l) for l in manifest.read_text().splitlines() if l.strip()]
    pieces, texts, total = [], [], 0.0
    period = None
    silence = np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)
    while total < minutes * 60:
        if pieces and period is None:
            period = total
        for row in rows:
            audio = load_audio(manifest.parent / row["audio"])
            pieces += [audio, silence]
            texts.append(row["text"])
            total += len(audio) / SAMPLE_RATE + pause
            if total >= minutes * 60:
                break
    return np.concatenate(pieces), " ".join(texts), period or total


# A content minute is compared across passes only where each pass committed this many of its words.
MIN_WORDS_PER_PASS = 20


def same_audio_later(timings, period: float) -> dict:
    """Commit latency of the same audio on each pass over the clips, per minute of the clip list.

    Per-minute medians move with what is being said (dense speech waits longer than short phrases
    between pauses); comparing a minute of audio with itself replayed later isolates lag growth.
    """
    by_minute: dict[int, dict[int, list[float]]] = {}
    for t in timings:
        repeat, position = divmod(t.end, period)
        by_minute.setdefault(int(position // 60), {}).setdefault(int(repeat), []).append(t.committed - t.end)
    medians = {minute: {repeat: statistics.median(values) for repeat, values in sorted(passes.items())
                        if len(values) >= MIN_WORDS_PER_PASS}
               for minute, passes in sorted(by_minute.items())}
    ratios = [row[repeat] / row[0] for row in medians.values() if 0 in row for repeat in row if repeat > 0]
    return {"period_s": period, "medians_by_pass": medians, "later_over_first": ratios,
            "later_over_first_median": statistics.median(ratios) if ratios else None}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> tuple[float, float, float]:
    """(CPU time stolen from this VM by its host, CPU time every process here used, this process's
    own CPU time), seconds since boot or start: how much of the machine the benchmark had.  Zeros
    where /proc/stat is missing."""
    own = time.process_time()
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0, own
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system = fields[0:3]
    irq, softirq, steal = fields[5:8]
    return steal / ticks, (user + nice + system + irq + softirq) / ticks, own


def machine_per_minute(samples: list[tuple[float, float, float, float]], minutes: int, speed: float) -> dict:
    """Per minute of session (stream) time: the share of the machine's CPUs stolen by the host and
    used by other processes (from ``samples`` of (wall seconds since the replay began, *cpu_seconds()))."""
    cpus = os.cpu_count() or 1
    result = {}
    for minute in range(minutes):
        inside = [s for s in samples if minute * 60 <= s[0] * speed <= (minute + 1) * 60]
        if len(inside) < 2:
            continue
        (t0, steal0, busy0, own0), (t1, steal1, busy1, own1) = inside[0], inside[-1]
        capacity = (t1 - t0) * cpus
        result[minute] = {"stolen": (steal1 - steal0) / capacity,
                          "others": max(0.0, (busy1 - busy0) - (own1 - own0)) / capacity}
    return result


def same_audio_line(later: dict) -> str:
    ratios = later["later_over_first"]
    if not ratios:
        return "| same audio replayed later / first pass, per minute | n/a (the stream holds one pass of the clips) |"
    return (f"| same audio replayed later / first pass, per minute of the clips ({later['period_s'] / 60:.1f} min a pass) | "
            f"median {later['later_over_first_median']:.2f}×, range {min(ratios):.2f}–{max(ratios):.2f}× ({len(ratios)} minutes) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=str(HERE.parent.parent / "shared" / "eval" / "manifest.jsonl"))
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed (1 = real time; 0 = as fast as possible, WER only)")
    add_live_settings_arguments(parser.add_argument_group("live settings (whispersg_live's flags)"))
    parser.add_argument("--lockstep", action="store_true",
                        help="replay in lockstep (every interim runs; latencies in stream time, computing time "
                             "left out): repeatable WER and algorithmic latency on any machine")
    parser.add_argument("--tag", default=None, help="suffix of the result files")
    args = parser.parse_args()
    try:
        settings = live_settings_from_args(args)  # refused before anything is loaded, as whispersg_live does
    except OptionError as error:
        parser.error(str(error))

    stream, reference, period = build_stream(Path(args.manifest), args.minutes)
    pipeline = WhisperSGPipeline(model=args.model, threads=args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stream.wav"
        with wave.open(str(path), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(SAMPLE_RATE)
            handle.writeframes((np.clip(stream, -1, 1) * 32767).astype("<i2").tobytes())
        offline_text = pipeline.transcribe(path).text
        memory: list[tuple[float, float]] = []
        cpu: list[tuple[float, float, float, float]] = []
        stop = threading.Event()

        def sample_memory() -> None:
            started = time.monotonic()
            while not stop.wait(10):
                memory.append((time.monotonic() - started, rss_mb()))

        def sample_cpu() -> None:
            while not stop.wait(5):
                if source.started_at is not None:
                    cpu.append((time.monotonic() - source.started_at, *cpu_seconds()))

        threading.Thread(target=sample_memory, daemon=True).start()
        source = FileSource(path, speed=0, lockstep=True) if args.lockstep else FileSource(path, speed=args.speed)
        decode_log, latency = DecodeLog(), LatencyRecorder()
        transcriber = LiveTranscriber(pipeline, source, settings, observers=[decode_log, latency])
        if not args.lockstep:
            threading.Thread(target=sample_cpu, daemon=True).start()
        transcript = transcriber.run()
        stop.set()
    timings = latency.timings
    shown = [t.shown - t.end for t in timings]
    committed = [t.committed - t.end for t in timings]
    per_minute = {}
    stream_minutes = int(np.ceil(len(stream) / SAMPLE_RATE / 60))
    for minute in range(stream_minutes):
        in_minute = [t for t in timings if minute * 60 <= t.end < (minute + 1) * 60]
        if in_minute:
            per_minute[minute] = {"committed_median": statistics.median(t.committed - t.end for t in in_minute),
                                  "words": len(in_minute),
                                  "shown_median": statistics.median(t.shown - t.end for t in in_minute)}
    overall = statistics.median(committed) if committed else float("nan")
    decodes = decode_log.summary(None if args.lockstep else source.started_at, args.speed, stream_minutes)
    results = {
        "date": dt.date.today().isoformat(), "machine": platform.node(), "minutes": len(stream) / SAMPLE_RATE / 60,
        "model": pipeline.model_name, "threads": args.threads, "words": len(timings), "speed": args.speed,
        **dataclasses.asdict(settings), "lockstep": args.lockstep,
        "shown_median_s": statistics.median(shown) if shown else None, "shown_p95_s": percentile(shown, 95),
        "committed_median_s": overall, "committed_p95_s": percentile(committed, 95),
        "committed_early_fraction": sum(t.early for t in timings) / len(timings) if timings else 0.0,
        "committed_by": {how: {"words": len(values), "median_s": statistics.median(values)}
                         for how in ("agreed", "forced", "chunk")
                         for values in [[t.committed - t.end for t in timings if t.how == how]] if values},
        "per_minute": per_minute,
        "max_minute_deviation": max((abs(v["committed_median"] - overall) / overall for v in per_minute.values()), default=0.0),
        "live_wer": corpus_wer([reference], [transcript.text]), "offline_wer": corpus_wer([reference], [offline_text]),
        "same_audio_later": same_audio_later(timings, period),
        "rss_mb": memory, "dropped_seconds": transcriber.state.dropped_seconds,
        # word, end, shown, committed (stream / session seconds), how it was committed
        "word_timings": [[t.word, round(t.end, 3), round(t.shown, 3), round(t.committed, 3), t.how] for t in timings],
        "decodes": decodes,
        # share of the machine's CPUs the host stole and other processes used, per minute of session time
        "machine_per_minute": machine_per_minute(cpu, stream_minutes, args.speed),
        "cuts": {reason: sum(1 for c in transcriber.cuts if c.reason == reason) for reason in {c.reason for c in transcriber.cuts}},
        # every decode: began (session seconds; monotonic clock in lockstep), seconds, audio seconds, kind
        "decode_log": [[round(began - (0.0 if args.lockstep else source.started_at), 3), round(seconds, 3),
                        round(audio, 2), kind] for began, seconds, audio, kind in decode_log.decodes],
    }
    minute_medians = ", ".join(f"{value['committed_median']:.2f}" for value in per_minute.values())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"live-{results['date']}-{platform.node() or 'host'}" + (f"-{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"Live benchmark · {results['minutes']:.1f} min stream · {results['model']} · {args.threads} threads · {results['date']}"
        f" · max_commit_delay {settings.max_commit_delay or 'off'} · context {settings.context_chars} chars, {settings.context_seconds:g} s of audio" + (" · lockstep (stream time)" if args.lockstep else ""),
        "",
        "| metric | value |", "|---|---|",
        f"| word first shown after it ends: median / p95 | {results['shown_median_s']:.2f} s / {results['shown_p95_s']:.2f} s |",
        f"| word committed after it ends: median / p95 | {results['committed_median_s']:.2f} s / {results['committed_p95_s']:.2f} s |",
        f"| words committed before their chunk ended (interims agreed, or --max_commit_delay) | {results['committed_early_fraction'] * 100:.0f}% |",
        "| committed by: words, median latency | " + "; ".join(f"{how} {value['words']}, {value['median_s']:.2f} s"
                                                          for how, value in results["committed_by"].items()) + " |",
        f"| per-minute committed medians | {minute_medians} s |",
        f"| largest per-minute deviation from the overall committed median | {results['max_minute_deviation'] * 100:.0f}% |",
        same_audio_line(results["same_audio_later"]),
        f"| live WER / offline WER (same stream) | {results['live_wer']:.4f} / {results['offline_wer']:.4f} "
        f"({results['live_wer'] / results['offline_wer']:.2f}×) |",
        f"| RSS first / last sample | {memory[0][1]:.0f} MB / {memory[-1][1]:.0f} MB |" if memory else "| RSS | n/a |",
        f"| audio dropped | {results['dropped_seconds']:.1f} s |",
        f"| cuts | {results['cuts']} |",
        "| decodes: count, median seconds, median audio seconds | " + "; ".join(
            f"{kind} {value['decodes']}, {value['median_s']:.2f} s, {value['median_audio_s']:.1f} s"
            for kind, value in decodes["by_kind"].items()) + " |",
    ]
    if decodes["per_minute"]:
        spacing = ", ".join("–" if v["interim_spacing_median_s"] is None else f"{v['interim_spacing_median_s']:.2f}"
                            for v in decodes["per_minute"].values())
        busy = ", ".join(f"{v['busy_fraction'] * 100:.0f}" for v in decodes["per_minute"].values())
        lines += [f"| per-minute interim spacing medians (session time) | {spacing} s |",
                  f"| per-minute share of time spent decoding | {busy} % |"]
    if results["machine_per_minute"]:
        taken = ", ".join(f"{v['stolen'] * 100:.0f}/{v['others'] * 100:.0f}" for v in results["machine_per_minute"].values())
        lines.append(f"| per-minute share of the CPUs stolen by the host / used by other processes | {taken} % |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
