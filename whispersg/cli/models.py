"""`whispersg models list|download|path|convert|export`: inspect and fill the local model store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from whispersg.cli.common import run_main, wants_debug
from whispersg.console import stderr_console
from whispersg.models import (
    BUILTIN_MODEL,
    CONVERT_QUANTIZATIONS,
    EXPORT_FORMATS,
    HUB_REPOS,
    builtin_model_path,
    convert_checkpoint,
    default_store,
    download_model,
    installed_models,
    resolve_model,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whispersg models", description="Manage the local Whisper model store.")
    parser.add_argument("--model_dir", default=None, help="model store folder (default: $WHISPERSG_MODEL_DIR, ./models in a checkout, else ~/.cache/whispersg/models)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="show installed and downloadable models")
    download = sub.add_parser("download", help="fetch a model into the store (needs a network)")
    download.add_argument("name", help="model name (e.g. whispersg_small.en, small.en) or hub id owner/name")
    download.add_argument("--force", action="store_true", help="download again even if present")
    download.add_argument("--hf_token", default=None,
                          help="Hugging Face token for gated or private models (never logged); prefer the HF_TOKEN "
                               "environment variable, which other users cannot read in ps")
    path = sub.add_parser("path", help="print the folder a model name resolves to")
    path.add_argument("name", nargs="?", default=None, help="model name or folder (default: the default model)")
    convert = sub.add_parser("convert", help="convert a Hugging Face Whisper checkpoint (e.g. a fine-tuning output) to CTranslate2")
    convert.add_argument("checkpoint", help="checkpoint folder (config.json, model.safetensors, tokenizer.json)")
    convert.add_argument("--output", "-o", default=None, help="output folder (default: <store>/<checkpoint name>-ct2)")
    convert.add_argument("--quantization", default="int8", choices=CONVERT_QUANTIZATIONS, help="weight type of the converted model (default: int8)")
    convert.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    export = sub.add_parser("export", help="rebuild a Hugging Face transformers checkpoint from a CTranslate2 model "
                                           "(to fine-tune it further)")
    export.add_argument("model", help="model name (e.g. tiny.en) or CTranslate2 model folder")
    export.add_argument("--format", default="transformers", choices=EXPORT_FORMATS,
                        help="checkpoint format (default: transformers: WhisperForConditionalGeneration + processor)")
    export.add_argument("--output", "-o", required=True, help="output folder (new or empty; an earlier export with --force)")
    export.add_argument("--force", action="store_true", help="replace an earlier export in the output folder")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    store = Path(args.model_dir) if args.model_dir else None
    commands = {"list": _list, "download": _download, "path": _path, "convert": _convert, "export": _export}
    return run_main(lambda: commands[args.command](args, store), debug=wants_debug(argv or []))


def _list(args: argparse.Namespace, store: Optional[Path]) -> int:
    from rich.console import Console
    from rich.table import Table

    store = store or default_store()
    installed = installed_models(store)
    default = resolve_model(None, store)
    table = Table(title=f"model store: {store}")
    table.add_column("name")
    table.add_column("status")
    table.add_column("location / source")
    for name, path in installed.items():
        status = "built-in" if name == BUILTIN_MODEL and path == builtin_model_path() else "installed"
        if name == default.name:
            status += ", default"
        table.add_row(name, status, str(path))
    for name, repo in HUB_REPOS.items():
        if name not in installed:
            table.add_row(name, "not installed", f"whispersg models download {name}  ({repo})")
    Console().print(table)
    return 0


def _download(args: argparse.Namespace, store: Optional[Path]) -> int:
    from rich.markup import escape

    if args.hf_token:  # a flag's value is in the process list for every user of the machine (#26)
        stderr_console().print("[yellow]warning:[/] --hf_token on the command line is visible to other users (ps); "
                               "set HF_TOKEN instead", highlight=False)
    with stderr_console().status(f"downloading {escape(args.name)}…"):
        target = download_model(args.name, store, token=args.hf_token, force=args.force)
    print(target)
    return 0


def _path(args: argparse.Namespace, store: Optional[Path]) -> int:
    print(resolve_model(args.name, store).path)
    return 0


def _convert(args: argparse.Namespace, store: Optional[Path]) -> int:
    from rich.markup import escape

    checkpoint = Path(args.checkpoint)
    output = Path(args.output) if args.output else (store or default_store()) / f"{checkpoint.resolve().name}-ct2"
    with stderr_console().status(f"converting {escape(str(checkpoint))} to CTranslate2 ({args.quantization})…"):
        target = convert_checkpoint(checkpoint, output, args.quantization, force=args.force)
    stderr_console().print(f"converted; transcribe with: whispersg --model {target} FILE", markup=False)
    print(target)
    return 0


def _export(args: argparse.Namespace, store: Optional[Path]) -> int:
    from rich.markup import escape

    from whispersg.finetune.export import export_transformers

    model = resolve_model(args.model, store)
    with stderr_console().status(f"exporting {escape(str(model.path))} to {args.format}…"):
        target = export_transformers(model.path, Path(args.output), force=args.force)
    stderr_console().print(f"exported; fine-tune it with: python finetuning/train.py --base_model {target} …",
                           markup=False)
    print(target)
    return 0
