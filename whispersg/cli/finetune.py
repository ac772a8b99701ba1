"""Command lines of the fine-tuning chain (``finetuning/*.py`` are thin launchers of these).

Each command parses arguments, runs one ``whispersg.finetune`` step offline and
reports what it kept and skipped; errors are one line naming the file (and line).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Callable, Optional

from whispersg.cli.common import add_logging_arguments, run_main, setup_logging, wants_debug

logger = logging.getLogger("whispersg.finetune")


def _run(parser: argparse.ArgumentParser, argv: Optional[list[str]], body: Callable[[argparse.Namespace], int]) -> int:
    args = parser.parse_args(argv)
    setup_logging(args)
    if getattr(args, "allow_download", False):
        from whispersg.offline import allow_downloads

        allow_downloads()
    else:
        from whispersg.offline import enforce_offline

        enforce_offline()
    return run_main(lambda: body(args), debug=wants_debug(argv or []) or args.debug)


PREPARED_MARKER = "whispersg_prepare.json"  # marks a folder a preparation command wrote


def _claim_output(args: argparse.Namespace) -> None:
    """Before any audio is written: the output folder is new, empty, or an earlier preparation (with --overwrite)."""
    from whispersg.writers import check_output_folder

    check_output_folder(args.output_dir, PREPARED_MARKER, args.overwrite, "preparation")


def _write_prepared(what: str, output_dir: str, examples, report) -> int:
    """Save a reader's examples as interchange files and say what was kept and skipped."""
    from whispersg.console import stderr_console
    from whispersg.finetune.interchange import write_interchange
    from whispersg.writers import atomic_write_text

    write_interchange(output_dir, examples)
    atomic_write_text(Path(output_dir) / PREPARED_MARKER, json.dumps({"corpus": what, "report": report.summary()}) + "\n")
    stderr_console().print(f"{what}: {report.summary()} → {Path(output_dir)}", markup=False)
    return 0


def _add_cleaning_arguments(parser: argparse.ArgumentParser) -> None:
    from whispersg.finetune.transcripts import DEFAULT_DROP_MARKERS

    group = parser.add_argument_group("transcript cleaning")
    group.add_argument("--exclude_markers", default=",".join(DEFAULT_DROP_MARKERS),
                       help="comma-separated marks whose utterances are skipped (default: %(default)s)")
    group.add_argument("--drop_particles", action="store_true",
                       help="drop [lah]-style discourse particles instead of keeping the word")
    group.add_argument("--keep_fillers", action="store_true", help="keep (uh)/(um) fillers as words")


def _cleaning_rules(args: argparse.Namespace):
    from whispersg.finetune.transcripts import CleaningRules

    markers = tuple(m.strip() for m in args.exclude_markers.split(",") if m.strip())
    return CleaningRules(keep_particles=not args.drop_particles, keep_fillers=args.keep_fillers, drop_markers=markers)


def _output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", "-o", required=True,
                        help="new or empty folder for audio_paths.txt, text.txt (and extracted/cut audio under audio/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a folder an earlier run of a preparation command wrote")


# ---------------------------------------------------------------- data preparation


def imda_part12_main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="imda_part1_2.py",
        description="IMDA NSC part 1/2 (SCRIPT .TXT + WAVE zips) → audio_paths.txt + text.txt.",
    )
    parser.add_argument("corpus", help="the PART1 or PART2 folder (with DATA/CHANNEL0..2)")
    _output_argument(parser)
    parser.add_argument("--channel", type=int, choices=(0, 1, 2), required=True,
                        help="microphone channel: 0 headset, 1 boundary, 2 phone (the original used 2 for part 1, 0 for part 2)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--original", dest="transcript", action="store_const", const="original", default="original",
                        help="label with the prompt as written: mixed case and punctuation, what Whisper writes "
                        "(default; prompts with markup are skipped)")
    choice.add_argument("--normalized", dest="transcript", action="store_const", const="normalized",
                        help="label with the normalised line instead (lower case, no punctuation, marks cleaned)")
    _add_cleaning_arguments(parser)
    add_logging_arguments(parser)

    def body(args: argparse.Namespace) -> int:
        from whispersg.finetune.imda import read_part12

        _claim_output(args)
        examples, report = read_part12(args.corpus, args.output_dir, args.channel, args.transcript,
                                       _cleaning_rules(args), progress=not args.quiet)
        return _write_prepared(f"IMDA part 1/2 channel {args.channel}", args.output_dir, examples, report)

    return _run(parser, argv, body)


def imda_part3_main(argv: Optional[list[str]] = None) -> int:
    from whispersg.finetune.imda import PART3_MICS

    parser = argparse.ArgumentParser(
        prog="imda_part3.py",
        description="IMDA NSC part 3+ (TextGrid conversations) → clips + audio_paths.txt + text.txt.",
    )
    parser.add_argument("corpus", help="the PART3 folder (with 'Audio Same CloseMic', 'Scripts Same', …)")
    _output_argument(parser)
    parser.add_argument("--mic", nargs="+", choices=sorted(PART3_MICS), default=sorted(PART3_MICS),
                        help="microphones to cut clips from (default: all present)")
    parser.add_argument("--padding", type=float, default=0.1, help="seconds added before and after each interval (default: 0.1)")
    parser.add_argument("--min_duration", type=float, default=0.3, help="skip intervals shorter than this many seconds")
    _add_cleaning_arguments(parser)
    add_logging_arguments(parser)

    def body(args: argparse.Namespace) -> int:
        from whispersg.finetune.imda import read_part3

        _claim_output(args)
        examples, report = read_part3(args.corpus, args.output_dir, tuple(args.mic), args.padding, args.min_duration,
                                      _cleaning_rules(args), progress=not args.quiet)
        return _write_prepared("IMDA part 3", args.output_dir, examples, report)

    return _run(parser, argv, body)


def common_voice_main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="common_voice.py",
        description="Common Voice release (<split>.tsv + clips/) → audio_paths.txt + text.txt.",
    )
    parser.add_argument("corpus", help="the language folder of a release (e.g. cv-corpus-17.0/en)")
    _output_argument(parser)
    parser.add_argument("--split", default="validated", help="which TSV to read (default: validated)")
    parser.add_argument("--sample", type=int, default=None, help="keep a random sample of N clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample (default: 0)")
    parser.add_argument("--min_up_votes", type=int, default=0, help="skip clips with fewer up votes")
    parser.add_argument("--max_down_votes", type=int, default=None, help="skip clips with more down votes")
    parser.add_argument("--as_written", action="store_true",
                        help="keep sentences exactly as written (default: the original recipe's clean-up: "
                        "double quotation marks removed, a final full stop added where no end mark is)")
    add_logging_arguments(parser)

    def body(args: argparse.Namespace) -> int:
        from whispersg.finetune.common_voice import read_common_voice

        _claim_output(args)
        examples, report = read_common_voice(args.corpus, args.split, args.sample, args.seed, args.min_up_votes,
                                             args.max_down_votes, clean_text=not args.as_written)
        return _write_prepared("Common Voice", args.output_dir, examples, report)

    return _run(parser, argv, body)


def finalize_main(argv: Optional[list[str]] = None) -> int:
    from whispersg.finetune.finalize import DEDUPLICATE_MODES, MAX_CLIP_SECONDS, SPLIT_MODES

    parser = argparse.ArgumentParser(
        prog="finalize_data.py",
        description="Interchange folders → a datasets DatasetDict (train/test) of audio and sentences, saved to disk.",
    )
    parser.add_argument("sources", nargs="+", help="folders holding audio_paths.txt and text.txt")
    parser.add_argument("--output", "-o", required=True,
                        help="new or empty folder to save the DatasetDict in (an earlier dataset there: see --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier dataset saved by this command in --output")
    parser.add_argument("--test_size", type=float, default=0.2,
                        help="fraction held out for testing; 0 = train only, 1 = test only (default: 0.2)")
    parser.add_argument("--split_by", choices=SPLIT_MODES, default=None,
                        help="keep each speaker (and conversation), each conversation, or nothing on one side of the "
                        "split (default: speaker when the sources name every speaker, else clip)")
    parser.add_argument("--seed", type=int, default=42, help="seed of de-duplication and split (default: 42)")
    parser.add_argument("--deduplicate", choices=DEDUPLICATE_MODES, default="speaker",
                        help="drop repeated transcripts of the same speaker (default), of anyone (text), "
                        "or none (off: read corpora whose speakers re-read prompts on purpose)")
    parser.add_argument("--max_seconds", type=float, default=MAX_CLIP_SECONDS, help="drop longer clips (default: 30)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json to measure labels with (default: the built-in Whisper tokenizer)")
    add_logging_arguments(parser)

    def body(args: argparse.Namespace) -> int:
        from whispersg.console import stderr_console
        from whispersg.finetune.finalize import finalize

        result = finalize(args.sources, args.output, args.test_size, args.seed, args.deduplicate,
                          args.max_seconds, args.tokenizer, progress=not args.quiet, overwrite=args.overwrite,
                          split_by=args.split_by)
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(result.skipped.items())) or "none"
        stderr_console().print(
            f"saved {result.train} train + {result.test} test examples (split by {result.split_by}) to {result.output} "
            f"({result.dataset_bytes / 1e6:.1f} MB, {result.size_ratio:.2f}× the audio); skipped: {skipped}", markup=False
        )
        return 0

    return _run(parser, argv, body)


def original_recipe_main(argv: Optional[list[str]] = None) -> int:
    from whispersg.finetune.recipe import COMMON_VOICE_SAMPLE, PART1_CHANNEL, PART2_CHANNEL

    parser = argparse.ArgumentParser(
        prog="original_recipe.py",
        description=f"The original WhisperSG data: IMDA part 1 channel {PART1_CHANNEL} + part 2 channel {PART2_CHANNEL} "
        "labelled with the prompts as written, and a Common Voice sample with its clean-up → OUTPUT/imda and "
        "OUTPUT/common_voice (prepared datasets split by speaker), ready for train.py.",
    )
    parser.add_argument("--part1", help="the IMDA NSC PART1 folder (with DATA/CHANNEL2)")
    parser.add_argument("--part2", help="the IMDA NSC PART2 folder (with DATA/CHANNEL0)")
    parser.add_argument("--common_voice", help="a Common Voice language folder (validated.tsv + clips/)")
    parser.add_argument("--common_voice_sample", type=int, default=COMMON_VOICE_SAMPLE,
                        help="seeded random sample of Common Voice clips (default: %(default)s)")
    parser.add_argument("--part3", help="also the IMDA PART3 conversations: not in the original, whose labels are "
                        "lower case without punctuation, so only by choice")
    parser.add_argument("--output_dir", "-o", required=True, help="folder for prep/ and the prepared datasets")
    parser.add_argument("--test_size", type=float, default=0.2, help="held-out fraction, split by speaker (default: 0.2)")
    parser.add_argument("--seed", type=int, default=42, help="seed of sampling, de-duplication and split (default: 42)")
    parser.add_argument("--overwrite", action="store_true", help="replace prepared datasets an earlier run wrote")
    add_logging_arguments(parser)

    def body(args: argparse.Namespace) -> int:
        from whispersg.console import stderr_console
        from whispersg.finetune.recipe import prepare_original_recipe

        result = prepare_original_recipe(args.output_dir, args.part1, args.part2, args.common_voice,
                                         args.common_voice_sample, args.part3, args.test_size, args.seed,
                                         progress=not args.quiet, overwrite=args.overwrite)
        console = stderr_console()
        for name, summary in result.reads.items():
            console.print(f"{name}: {summary}", markup=False)
        for name, report in result.datasets.items():
            console.print(f"{name}: {report.train} train + {report.test} test examples → {report.output}", markup=False)
        console.print(f"next: {result.train_command()}", markup=False)
        return 0

    return _run(parser, argv, body)


# ---------------------------------------------------------------- training and evaluation

_TRAINING_HELP = {
    "datasets": "prepared dataset folders (from finalize_data.py)",
    "output_dir": "folder for checkpoints, TensorBoard logs and the final model",
    "weights": "share of each dataset in the training mix (e.g. 0.7 0.3; normalised to sum 1); without "
               "--oversample no example repeats, so the source that runs out first limits the mix; default: concatenate",
    "oversample": "with --weights, use every example of every dataset and repeat the smaller ones to keep the shares",
    "base_model": "Whisper checkpoint to start from: a local folder or a hub id in the local cache",
    "language": "language of a multilingual base model, put in the labels' prefix (unset: en); not for .en models",
    "task": "transcribe or translate (multilingual base models)",
    "train_only": "what is trained, the rest frozen: all, decoder (encoder frozen) or embeddings (the decoder's "
                  "token embeddings, tied to its output: teaches words with the least forgetting)",
    "blend": "share of what training changed that the saved model keeps: 1 keeps all, 0.5 saves the weights halfway "
             "between the base and the tuned model (weight-space ensembling: most of the gain, less forgetting); "
             "checkpoints stay unblended",
    "learning_rate": "peak learning rate",
    "warmup_steps": "linear warm-up steps",
    "batch_size": "examples per device per step",
    "effective_batch_size": "examples per optimiser update (gradient accumulation makes up the difference)",
    "num_train_epochs": "passes over the training data",
    "max_steps": "stop after this many updates (overrides epochs when > 0)",
    "optim": "optimiser (transformers name: adafactor, adamw_torch, …)",
    "gradient_checkpointing": "trade compute for memory",
    "eval_steps": "evaluate WER every N updates",
    "save_steps": "save a standalone checkpoint every N updates",
    "save_total_limit": "keep at most this many checkpoints (the best is always kept)",
    "logging_steps": "log loss every N updates",
    "generation_max_length": "longest generated transcript at evaluation (tokens)",
    "max_eval_samples": "evaluate on at most this many (seeded random) test examples; 0 = all",
    "seed": "seed of shuffling, mixing and initialisation",
    "resume_from_checkpoint": "continue a run from a checkpoint folder, or 'latest'",
    "dataloader_num_workers": "processes decoding audio for the trainer",
    "report_to": "logging integrations (tensorboard, none, …)",
    "overwrite": "train again into --output_dir holding an earlier run (it must otherwise be new or empty)",
}


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainingSettings`` field, defaults taken from the dataclass."""
    from whispersg.finetune.train import TRAIN_ONLY, TrainingSettings

    for spec in fields(TrainingSettings):
        default = spec.default if spec.default is not MISSING else (
            spec.default_factory() if spec.default_factory is not MISSING else None)
        help_text = _TRAINING_HELP[spec.name] + ("" if default is None else f" (default: {default})")
        kind = str(spec.type)
        if spec.name == "datasets":
            parser.add_argument("datasets", nargs="+", help=help_text)
        elif kind.startswith("list") or "list[" in kind:
            item = float if "float" in kind else str
            parser.add_argument(f"--{spec.name}", nargs="+", type=item, default=default, help=help_text)
        elif kind == "bool":
            parser.add_argument(f"--{spec.name}", action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            convert = float if "float" in kind else int if "int" in kind else str
            parser.add_argument(f"--{spec.name}", type=convert, default=default, required=spec.name == "output_dir",
                                choices=TRAIN_ONLY if spec.name == "train_only" else None, help=help_text)


def train_main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Fine-tune Whisper on prepared datasets with Seq2SeqTrainer; checkpoints are standalone "
        "(convert the result with: whispersg models convert OUTPUT_DIR).",
    )
    add_training_arguments(parser)
    parser.add_argument("--allow_download", action="store_true",
                        help="let transformers fetch --base_model from the Hugging Face hub (off: local files only)")
    add_logging_arguments(parser)

    def body(args: argparse.Namespace) -> int:
        from whispersg.finetune.train import TrainingSettings, train

        settings = TrainingSettings(**{spec.name: getattr(args, spec.name) for spec in fields(TrainingSettings)})
        metrics = train(settings)
        print(json.dumps(metrics, indent=2))
        return 0

    return _run(parser, argv, body)


def evaluate_main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="WER of one or more models (HF checkpoints or CTranslate2 folders/names) on a prepared "
        "dataset split or a JSON-lines manifest; the first model is the baseline of the table.",
    )
    parser.add_argument("--model", action="append", required=True,
                        help="model to score (repeat: first = baseline), e.g. --model tiny.en --model runs/sg")
    parser.add_argument("--data", required=True, help="prepared dataset folder or manifest .jsonl ({audio, text} per line)")
    parser.add_argument("--split", default="test", help="split of a prepared dataset (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N utterances")
    parser.add_argument("--language", default=None,
                        help="language of multilingual models (Hugging Face checkpoints default to en, as in training; "
                        "CTranslate2 models detect it)")
    parser.add_argument("--task", default="transcribe", choices=("transcribe", "translate"),
                        help="task of multilingual models (default: transcribe)")
    parser.add_argument("--output", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--allow_download", action="store_true",
                        help="let transformers fetch hub ids (e.g. openai/whisper-small.en) (off: local cache only)")
    add_logging_arguments(parser)

    def body(args: argparse.Namespace) -> int:
        from whispersg.finetune.evaluate import comparison_table, evaluate_model, load_test_data
        from whispersg.writers import atomic_write_text

        utterances = load_test_data(args.data, args.split, args.limit)
        results = [evaluate_model(model, utterances, args.language, args.task) for model in args.model]
        print(comparison_table(results))
        if args.output:
            rows = [{"model": r.model, "wer": r.wer, "utterances": r.utterances} for r in results]
            atomic_write_text(Path(args.output), json.dumps(rows, indent=2) + "\n")
        return 0

    return _run(parser, argv, body)
