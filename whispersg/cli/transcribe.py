"""`whispersg FILE_OR_DIR…`: transcribe recordings into txt/srt/vtt/tsv/json files.

Also dispatches `whispersg models …` and `whispersg serve`.  Parsing and printing only; the work
is done by WhisperSGPipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from whispersg.cli.common import (
    ArgumentParser,
    add_logging_arguments,
    add_pipeline_arguments,
    microphone_choice,
    options_from_args,
    run_main,
    setup_logging,
    wants_debug,
)
from whispersg.console import print_error, print_warning, stderr_console
from whispersg.distributed import RaySettings
from whispersg.errors import OptionError, WhisperSGError
from whispersg.writers import (
    TEXT_FORMATS,
    format_segment_line,
    read_output_sources,
    record_output_source,
    source_identity,
    write_transcript,
)

OUTPUT_FORMAT_CHOICES = ("all", "txt", "srt", "vtt", "tsv", "json", "rttm", "aud")
SUBCOMMANDS = ("models", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="whispersg",
        description=(
            "Transcribe recordings offline with Whisper tuned for Singaporean English: voice activity detection, "
            "batched CTranslate2 inference, word timestamps, subtitle and transcript files. "
            "Other commands: 'whispersg models list|download|path|convert' manages the local model store; 'whispersg serve' runs the local transcription service (API and browser page)."
        ),
    )
    parser.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR",
                        help="audio or video files, or folders searched recursively for them")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output_dir", default="output", help="folder for the output files (default: output)")
    out.add_argument("-f", "--output_format", default="all", choices=OUTPUT_FORMAT_CHOICES,
                     help="format of the output files; all = txt, srt, vtt, tsv and json; aud = Audacity labels "
                          "(default: all)")
    out.add_argument("--max_line_width", type=int, default=None,
                     help="srt/vtt: wrap subtitle lines at this many characters")
    out.add_argument("--max_line_count", type=int, default=None,
                     help="srt/vtt: at most this many lines per subtitle (needs --max_line_width)")
    out.add_argument("--highlight_words", action="store_true",
                     help="srt/vtt: underline each word as it is spoken")
    out.add_argument("--skip_existing", action="store_true",
                     help="skip inputs whose output files all exist already, written from the same source file (resume a batch)")
    # The original WhisperSG wrote files only with --save_results; they are always written now.
    out.add_argument("--save_results", action="store_true", help=argparse.SUPPRESS)
    out.add_argument("--print_progress", action="store_const", const=True, default=None,
                     help="the original WhisperSG's progress switch: progress bars are shown on stderr unless --quiet")
    out.add_argument("--no_print_progress", dest="print_progress", action="store_const", const=False,
                     help=argparse.SUPPRESS)
    mic = parser.add_argument_group("record from a microphone, then transcribe")
    mic.add_argument("--mic_id", default=None,
                     help="record from this PyAudio input device until Enter or Ctrl-C, then transcribe the recording "
                          "('list' shows the devices; needs the [live] extra)")
    mic.add_argument("--save_recording", action="store_true",
                     help="with --mic_id: keep the recording as WAV in the output folder")
    add_ray_arguments(parser)
    add_pipeline_arguments(parser)
    add_logging_arguments(parser)
    parser.add_argument("--version", action="version", version=f"whispersg {_version()}")
    return parser


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per RaySettings field, with its help and default."""
    from dataclasses import fields

    group = parser.add_argument_group("scale out on a Ray cluster (needs the [ray] extra)")
    for setting in fields(RaySettings):
        meta = setting.metadata
        if setting.type in ("bool", bool):
            group.add_argument(meta["flag"], dest=f"ray_{setting.name}", action="store_true", help=meta["help"])
            continue
        convert = {"Optional[int]": int, "int": int, "Optional[float]": float}.get(str(setting.type), str)
        suffix = f" (default: {setting.default})" if setting.default is not None and "default:" not in meta["help"] else ""
        group.add_argument(meta["flag"], dest=f"ray_{setting.name}", type=convert, default=setting.default,
                           metavar=meta.get("metavar"), help=meta["help"] + suffix)


def ray_settings_from_args(args: argparse.Namespace) -> Optional[RaySettings]:
    """RaySettings from the --ray* flags; None without --ray (the run stays on this machine)."""
    from dataclasses import fields

    if getattr(args, "ray_address", None) is None:
        return None
    return RaySettings(**{s.name: getattr(args, f"ray_{s.name}") for s in fields(RaySettings)}).validate()


def _version() -> str:
    from whispersg import __version__

    return __version__


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    audio_seconds: float = 0.0
    workers: int = 0  # Ray workers used; 0 for a run on this machine
    started: float = field(default_factory=time.perf_counter)


def _subcommand(name: str):
    """The ``main`` of ``whispersg models`` or ``whispersg serve``, imported only when it runs."""
    if name == "models":
        from whispersg.cli import models

        return models.main
    from whispersg.cli import serve

    return serve.main


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _subcommand(argv[0])(argv[1:])
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if not args.inputs and args.mic_id is None:
        parser.print_help()
        return 0
    setup_logging(args)
    if args.print_progress is False:
        logging.getLogger("whispersg").warning("--print_progress False: progress bars are always shown on stderr; "
                                               "--quiet hides them (and all but errors and warnings)")
    return run_main(lambda: _transcribe_all(args), debug=wants_debug(argv))


def _record_microphone(args: argparse.Namespace) -> Optional[Path]:
    """Record --mic_id until Enter or Ctrl-C into a WAV; return its path (None after listing devices)."""
    import tempfile
    import threading

    from whispersg.audio import SAMPLE_RATE
    from whispersg.capture import MicrophoneSource, RecordingWriter

    device = microphone_choice(args.mic_id)
    if device is None:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(args.output_dir) if args.save_recording else Path(tempfile.mkdtemp(prefix="whispersg-"))
    recording = RecordingWriter(folder / f"recording-{stamp}.wav")
    source = MicrophoneSource(device)
    stop = threading.Event()
    hint = "Ctrl-C to stop and transcribe"
    if sys.stdin.isatty():
        threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
        hint = "press Enter or " + hint
    console = stderr_console()
    source.start()
    if not args.quiet:  # printed whether or not stdin is a terminal: scripts wait for this line
        console.print(f"recording… {hint}", highlight=False)
    seconds = 0.0
    try:
        with console.status(f"recording… {hint}") as status:
            while not stop.is_set():
                block = source.read(timeout=0.1)
                if block is not None:
                    recording.write(block)
                    seconds += len(block) / SAMPLE_RATE
                    status.update(f"recording {seconds:5.1f} s… {hint}")
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
        while (block := source.read(timeout=0.0)) is not None:
            recording.write(block)
        recording.close()
    if not args.quiet:
        console.print(f"recorded {seconds:.1f} s" + (f" to {recording.path}" if args.save_recording else ""), highlight=False,
                      markup=False)
    return recording.path


def formats_for(args: argparse.Namespace) -> list[str]:
    if args.output_format != "all":
        return [args.output_format]
    return [*TEXT_FORMATS, "rttm"] if args.diarize else list(TEXT_FORMATS)


def _transcribe_all(args: argparse.Namespace) -> int:
    from whispersg.inputs import collect_inputs, output_stems

    if args.max_line_count and not args.max_line_width:
        raise OptionError("--max_line_count needs --max_line_width")
    if args.max_line_width is not None and args.max_line_width < 1:
        raise OptionError(f"--max_line_width must be positive (got {args.max_line_width})")
    options = options_from_args(args)
    ray_settings = ray_settings_from_args(args)
    if args.output_format == "rttm" and not options.diarize:
        raise OptionError("--output_format rttm needs --diarize (speaker turns come from diarization)")
    report = BatchReport()
    if args.mic_id is not None:
        recorded = _record_microphone(args)
        if recorded is None:
            return 0
        args.inputs = [*args.inputs, str(recorded)]
    inputs, input_errors = collect_inputs(args.inputs)
    for path, message in input_errors:
        print_error(message)
        report.failed.append((path, message))
    output_dir = Path(args.output_dir)
    formats = formats_for(args)
    recorded = read_output_sources(output_dir)
    stems = output_stems(inputs, {stem: record["path"] for stem, record in recorded.items()})
    pending = []
    sources: dict[Path, tuple[str, dict]] = {}
    for path in inputs:
        targets = [output_dir / f"{stems[path]}.{fmt}" for fmt in formats]
        identity = source_identity(path)
        earlier = recorded.get(stems[path])
        # Outputs without a record (an earlier version wrote them) count as done, as they always did.
        if args.skip_existing and all(t.exists() for t in targets) and earlier in (None, identity):
            report.skipped.append(path)
        else:
            pending.append((path, targets))
            sources[path] = (stems[path], identity)
    if pending:
        writer_options = {
            "max_line_width": args.max_line_width,
            "max_line_count": args.max_line_count,
            "highlight_words": args.highlight_words,
        }
        if ray_settings is None:
            pipeline = _load_pipeline(options, args.quiet)
            transcribe = lambda paths, on_progress: pipeline.transcribe_many(paths, progress=on_progress)  # noqa: E731
        else:
            transcribe = _ray_transcriber(options, ray_settings, report, args.quiet)
        _run_batch(transcribe, options, pending, writer_options, report, args.quiet, args.debug,
                   record=lambda path: record_output_source(output_dir, *sources[path]),
                   per_file_progress=ray_settings is None)
    for path in report.skipped:
        if not args.quiet:
            print_warning(f"{path}: outputs exist, skipped (--skip_existing)")
    _print_summary(report, args.quiet, stderr_console())
    return 1 if report.failed else 0


def _load_pipeline(options, quiet: bool):
    from rich.markup import escape

    from whispersg.pipeline import WhisperSGPipeline

    console = stderr_console()
    with console.status("loading model…", spinner="dots") if not quiet else contextlib.nullcontext():
        pipeline = WhisperSGPipeline(options)
    if not quiet:
        console.print(f"model [bold]{escape(pipeline.model_name)}[/] ({escape(str(pipeline.model.path))})", highlight=False)
    return pipeline


def _ray_transcriber(options, settings: RaySettings, report: BatchReport, quiet: bool):
    """transcribe(paths, on_progress) running on Ray: results as the workers finish them, as Paths."""
    from whispersg.console import stderr_console
    from whispersg.distributed import RayTranscription

    def transcribe(paths, on_progress):
        run = RayTranscription(paths, options, settings)
        by_name = {str(path): path for path in paths}
        announced = 0
        for name, result in run:
            if not quiet and len(run.stats.workers) > announced:
                announced = len(run.stats.workers)
                nodes = len({worker["node_id"] for worker in run.stats.workers})
                stderr_console().print(f"Ray: {announced} worker(s) on {nodes} node(s)", highlight=False)
            report.workers = len(run.stats.workers)
            yield by_name[name], result

    return transcribe


def _write_all_or_none(transcript, targets: list[Path], writer_options: dict) -> None:
    """Write every requested format, or (if one fails, e.g. a full disk) remove those this call wrote,
    so an input never has a partial set of outputs that --skip_existing would take as done."""
    written: list[Path] = []
    try:
        for target in targets:
            write_transcript(transcript, target, target.suffix.lstrip("."), **writer_options)
            written.append(target)
    except BaseException:
        for target in written:
            target.unlink(missing_ok=True)
        raise


def _run_batch(transcribe, options, pending, writer_options, report: BatchReport, quiet: bool, debug: bool, record,
               per_file_progress: bool = True) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console(),
        disable=quiet,
        transient=True,
    )
    # With speakers, lines are printed once they are known (after diarization).
    stream_lines = not quiet and not options.diarize and per_file_progress
    file_tasks: dict[Path, object] = {}

    def file_task(path: Path):
        if path not in file_tasks:
            file_tasks[path] = progress.add_task(escape(_short_name(path)), total=1.0)  # names are not markup
        return file_tasks[path]

    def on_progress(path: Path, done: float, total: float, segments) -> None:
        progress.update(file_task(path), completed=done / total if total else 1.0)
        if stream_lines:
            for segment in segments:
                print(format_segment_line(segment), flush=True)

    targets_of = dict(pending)
    with progress:
        overall = progress.add_task("all files", total=len(pending))
        # Short files share decoding batches, so several can be in progress at once; each is
        # finished (written, reported) in input order.
        for path, result in transcribe([path for path, _ in pending], on_progress):
            targets = targets_of[path]
            try:
                if isinstance(result, Exception):
                    raise result
                if not quiet and not stream_lines:
                    for segment in result.segments:
                        print(format_segment_line(segment), flush=True)
                _write_all_or_none(result, targets, writer_options)
                record(path)
            except Exception as error:  # one bad file must not stop the batch
                if isinstance(error, WhisperSGError):
                    message = str(error)
                else:
                    message = f"{path}: unexpected {type(error).__name__}: {error} (run with --debug for the traceback)"
                if debug:
                    logging.getLogger("whispersg").error("%s failed", path, exc_info=error)
                print_error(message)
                report.failed.append((path, message))
            else:
                report.done.append(path)
                report.audio_seconds += result.duration
                if not quiet:
                    stderr_console().print(f"[green]✓[/] {escape(str(path))} → {escape(', '.join(str(t) for t in targets))}",
                                           highlight=False)
            if path in file_tasks:
                progress.remove_task(file_tasks.pop(path))
            progress.advance(overall)


def _short_name(path: Path, width: int = 32) -> str:
    name = path.name
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _print_summary(report: BatchReport, quiet: bool, console) -> None:
    wall = time.perf_counter() - report.started
    if quiet and not report.failed:
        return
    rtf = wall / report.audio_seconds if report.audio_seconds else 0.0
    workers = f" · {report.workers} Ray worker{'s' if report.workers != 1 else ''}" if report.workers else ""
    console.print(
        f"{len(report.done)} transcribed, {len(report.failed)} failed, {len(report.skipped)} skipped · "
        f"{report.audio_seconds / 60:.1f} min of audio in {wall:.1f} s (real-time factor {rtf:.3f}){workers}",
        highlight=False,
    )


if __name__ == "__main__":
    sys.exit(main())
