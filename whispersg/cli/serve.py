"""`whispersg serve`: run the local transcription service (OpenAI-compatible API and browser page).

Parsing and printing only; the service is whispersg.serve.app around one WhisperSGPipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Optional

from whispersg.cli.common import (
    ArgumentParser,
    add_logging_arguments,
    add_pipeline_arguments,
    options_from_args,
    run_main,
    setup_logging,
    wants_debug,
)
from whispersg.console import stderr_console
from whispersg.errors import OptionError, missing_extra

API_KEY_ENV = "WHISPERSG_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="whispersg serve",
        description="Serve transcription on this machine: an OpenAI-compatible HTTP API (/v1/audio/transcriptions, "
                    "/v1/audio/translations, /v1/models), live transcription over a WebSocket (/v1/realtime) and a "
                    "browser page (/). Offline; the model is loaded once and shared by every request.",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 serves the network)")
    server.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    server.add_argument("--api_key", default=None,
                        help=f"require 'Authorization: Bearer KEY' on every /v1 request (default: ${API_KEY_ENV}, else none)")
    server.add_argument("--workers", type=int, default=1, help="transcriptions run at once (default: 1)")
    server.add_argument("--max_queue", type=int, default=8,
                        help="transcriptions that may wait; more are refused with 429 (default: 8)")
    server.add_argument("--max_upload_mb", type=float, default=200.0, help="largest upload accepted, in MB (default: 200)")
    server.add_argument("--max_live_sessions", type=int, default=2, help="live microphone sessions at once (default: 2)")
    add_pipeline_arguments(parser)
    add_logging_arguments(parser)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return run_main(lambda: _serve(args), debug=wants_debug(argv))


def _serve(args: argparse.Namespace) -> int:
    from rich.markup import escape

    for name, minimum in (("workers", 1), ("max_queue", 0), ("max_live_sessions", 0), ("port", 0)):
        if getattr(args, name) < minimum:
            raise OptionError(f"--{name} must be at least {minimum} (got {getattr(args, name)})")
    if args.max_upload_mb <= 0:
        raise OptionError(f"--max_upload_mb must be positive (got {args.max_upload_mb})")
    try:
        import uvicorn

        from whispersg.serve.app import ServeSettings, create_app
    except ImportError as error:
        raise missing_extra("whispersg serve", "serve", error.name or "fastapi") from error
    from whispersg.pipeline import WhisperSGPipeline

    console = stderr_console()
    options = options_from_args(args)
    with console.status("loading model…") if not args.quiet else contextlib.nullcontext():
        pipeline = WhisperSGPipeline(options)
    if args.api_key and not args.quiet:
        console.print(f"[yellow]warning:[/] --api_key on the command line is visible to other users (ps); "
                      f"set {API_KEY_ENV} instead", highlight=False)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    settings = ServeSettings(api_key=api_key, workers=args.workers, max_queue=args.max_queue,
                             max_upload_mb=args.max_upload_mb, max_live_sessions=args.max_live_sessions,
                             bind=(args.host, args.port))
    app = create_app(pipeline, settings)
    if not args.quiet:
        shown_host = f"[{args.host}]" if ":" in args.host else args.host
        console.print(f"serving [bold]{escape(pipeline.model_name)}[/] on http://{shown_host}:{args.port}/ "
                      f"(API under /v1{', API key required' if api_key else ''}); Ctrl-C stops", highlight=False)
        if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
            console.print("[yellow]warning:[/] listening beyond this machine without --api_key: anyone who can "
                          "reach it can transcribe", highlight=False)
    try:
        # uvicorn finishes the requests in flight, then re-raises the signal that stopped it.
        # log_config=None: uvicorn's records go through our handler, which redacts keys; info shows the access log.
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=args.verbose or args.debug,
                    log_level="debug" if args.debug else "info" if args.verbose else "warning", ws_max_size=1 << 20)
    except KeyboardInterrupt:
        pass
    if not args.quiet:
        console.print("server stopped", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
