"""`whispersg_live`: transcribe a microphone, a file replayed in real time, or PCM on stdin.

Parsing and printing only; the work is done by whispersg.live on top of WhisperSGPipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from dataclasses import fields
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
from whispersg.console import stderr_console
from whispersg.live.display import SESSION_FORMATS, LiveDisplay, SessionWriter
from whispersg.live.settings import LiveSettings

# Pipeline options that make no sense for a live stream (the live segmenter replaces them).
# Live --diarize clusters speakers online with the embedded models (no pyannote pipeline, no minimum count).
NOT_LIVE = frozenset({"vad_method", "vad_onset", "vad_offset", "chunk_size", "chunk_context", "min_speech_duration",
                      "min_silence_duration", "speech_pad", "batch_size", "condition_on_previous_text",
                      "diarize_model", "min_speakers", "segment_resolution"})


def add_live_settings_arguments(group) -> None:
    """One flag per LiveSettings field, with its help and default; the values stay text until
    ``live_settings_from_args`` hands them to LiveSettings' one validation."""
    for option in fields(LiveSettings):
        group.add_argument(f"--{option.name}", default=None, metavar=option.metadata.get("metavar"),
                           help=f"{option.metadata['help']} (default {option.default})")


def live_settings_from_args(args: argparse.Namespace) -> LiveSettings:
    """LiveSettings from parsed flags: only flags the user gave override the defaults."""
    return LiveSettings.from_text({name: getattr(args, name) for name in LiveSettings.field_names()
                                   if getattr(args, name, None) is not None})


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="whispersg_live",
        description="Transcribe speech as it is spoken, offline: from a microphone (--mic_id), a recording "
                    "replayed in real time (--input FILE) or raw 16 kHz s16le PCM on stdin (--input -). "
                    "Stop with Enter or Ctrl-C; everything said so far is kept.",
    )
    source = parser.add_argument_group("audio source")
    source.add_argument("--mic_id", default=None, help="PyAudio input device index, or 'list' to show the devices")
    source.add_argument("--input", default=None, metavar="FILE|-", help="replay a recording, or read PCM from stdin (-)")
    source.add_argument("--speed", type=float, default=1.0, help="replay speed of --input FILE (0 = as fast as possible; default 1)")
    live = parser.add_argument_group("segmentation")
    add_live_settings_arguments(live)
    live.add_argument("--silence_threshold", type=float, default=None, metavar="RMS",
                      help="the original WhisperSG's loudness of silence; not used: the streaming VAD finds "
                           "silence (tune --vad_threshold)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output_dir", default="output", help="folder for the session transcript (default: output)")
    out.add_argument("-f", "--output_format", default="txt", choices=SESSION_FORMATS, help="session transcript format (default: txt)")
    out.add_argument("--save_recording", action="store_true", help="also save the captured audio as WAV")
    add_pipeline_arguments(parser, exclude=NOT_LIVE)
    add_logging_arguments(parser)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mic_id is None and args.input is None:
        parser.print_help()
        return 0
    setup_logging(args)
    if args.silence_threshold is not None:
        # An RMS level has no counterpart in a speech probability, so it is not converted.
        logging.getLogger("whispersg").warning(
            "--silence_threshold is not used: a Silero VAD, not a loudness level, finds silence now; "
            "tune --vad_threshold (speech probability, default %g) instead", LiveSettings.vad_threshold)
    return run_main(lambda: _run(args), debug=wants_debug(argv))


def _run(args: argparse.Namespace) -> int:
    from whispersg.capture import RecordingWriter
    from whispersg.live.sources import open_source
    from whispersg.live.transcriber import LiveTranscriber
    from whispersg.pipeline import WhisperSGPipeline

    console = stderr_console()
    mic_id = microphone_choice(args.mic_id)
    if args.mic_id == "list":
        return 0
    settings = live_settings_from_args(args)
    source = open_source(mic_id, args.input, args.speed)
    options = options_from_args(args)
    with console.status("loading model…") if not args.quiet else contextlib.nullcontext():
        pipeline = WhisperSGPipeline(options)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = f"live-{stamp}" if not args.input or args.input == "-" else f"{Path(args.input).stem}-live"
    output_dir = Path(args.output_dir)
    writer = SessionWriter(output_dir / f"{stem}.{args.output_format}", args.output_format)
    recording = RecordingWriter(output_dir / f"{stem}.wav") if args.save_recording else None
    display = LiveDisplay(quiet=args.quiet)

    def on_commit(segments) -> None:
        writer.append(segments)
        display.committed(segments)

    speakers = None
    if options.diarize:
        from whispersg.live.speakers import OnlineSpeakers

        speakers = OnlineSpeakers(pipeline.speaker_embedder(), max_speakers=options.num_speakers or options.max_speakers)
    interactive = sys.stdin.isatty() and args.input != "-"

    def announce() -> None:  # printed whether or not stdin is a terminal: scripts wait for this line
        if not args.quiet:
            console.print("listening… " + ("press Enter or Ctrl-C to stop" if interactive else "Ctrl-C to stop"),
                          highlight=False)

    transcriber = LiveTranscriber(pipeline, source, settings, on_update=display.update, on_commit=on_commit,
                                  recording=recording, speakers=speakers, on_start=announce)
    if interactive:
        threading.Thread(target=_stop_on_enter, args=(transcriber,), daemon=True).start()
    try:
        with display:
            transcript = transcriber.run()
    except KeyboardInterrupt:
        transcript = None
    finally:
        writer.close()
        if recording is not None:
            recording.close()
    if not args.quiet:
        spoken = transcript.duration if transcript else 0.0
        console.print(f"session saved to {writer.path}" + (f" and {recording.path}" if recording else "")
                      + (f" · {spoken / 60:.1f} min of audio" if spoken else ""), highlight=False, markup=False)
    return 0


def _stop_on_enter(transcriber) -> None:
    try:
        sys.stdin.readline()
    except (OSError, ValueError):
        return
    transcriber.stop_requested.set()



if __name__ == "__main__":
    sys.exit(main())
