"""What every WhisperSG command shares: flags built from PipelineOptions, logging, error exits."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import MISSING, fields
from typing import Any, Callable, Optional, Sequence

from whispersg.console import print_error, stderr_console
from whispersg.errors import OptionError, WhisperSGError
from whispersg.options import PipelineOptions, build_options

logger = logging.getLogger("whispersg")

GROUP_TITLES = {
    "model": "model and hardware",
    "asr": "decoding",
    "vad": "voice activity detection",
    "align": "word timestamps",
    "diarize": "speaker diarization",
}

BOOLEAN_WORDS = {"true": True, "false": False}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that also takes on/off flags in the original WhisperSG's and WhisperX's spelling,
    ``--flag True|False`` (their str2bool flags), as well as ``--flag`` and ``--no_flag``."""

    def parse_known_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                         namespace: Optional[argparse.Namespace] = None) -> tuple[argparse.Namespace, list[str]]:
        given = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._spell_booleans(given), namespace)

    def _spell_booleans(self, argv: list[str]) -> list[str]:
        """``--flag True`` → ``--flag``; ``--flag False`` → ``--no_flag``, or nothing where off is the default."""
        switches = {name: action for action in self._actions if isinstance(action, argparse._StoreConstAction)
                    and isinstance(action.const, bool) for name in action.option_strings}
        out: list[str] = []
        index = 0
        while index < len(argv):
            token = argv[index]
            if token == "--":  # everything after it is an input
                return out + argv[index:]
            name, _, inline = token.partition("=")
            action = switches.get(name)
            value = inline if inline else argv[index + 1] if action and index + 1 < len(argv) else ""
            if action is None or value.lower() not in BOOLEAN_WORDS:
                out.append(token)
                index += 1
                continue
            wanted = BOOLEAN_WORDS[value.lower()]
            same = [a for a in switches.values() if a.dest == action.dest and a.const is wanted]
            if same:
                out.append(same[0].option_strings[0])
            elif action.default != wanted:
                out.append(token)  # no way to say it: argparse reports the value it cannot take
                index += 1
                continue
            index += 1 if inline else 2
        return out


def _none_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else convert(text)

    parse.__name__ = convert.__name__
    return parse


def _field_type(annotation: str) -> Callable[[str], Any]:
    base = annotation.replace("Optional[", "").rstrip("]")
    convert: Callable[[str], Any] = {"int": int, "float": float}.get(base, str)
    return _none_or(convert) if annotation.startswith("Optional[") else convert


def _switch_value(flag: str, when_true: str, when_false: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in BOOLEAN_WORDS:
            raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
        return when_true if BOOLEAN_WORDS[text.lower()] else when_false

    parse.__name__ = flag
    return parse


def add_pipeline_arguments(parser: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    """Add one flag per PipelineOptions field, grouped, with the field's default and help."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in fields(PipelineOptions):
        meta = option.metadata
        if option.name in exclude or meta.get("cli") is False:
            continue
        group_name = meta.get("group", "asr")
        group = groups.get(group_name) or parser.add_argument_group(GROUP_TITLES.get(group_name, group_name))
        groups[group_name] = group
        default = option.default if option.default is not MISSING else None
        help_text = meta.get("help", "")
        if option.type in ("bool", bool):
            names = [f"--{option.name}", *meta.get("flags", ())]
            group.add_argument(*names, dest=option.name, action="store_const", const=True, default=None,
                               help=f"{help_text} (default: {'on' if default else 'off'})")
            group.add_argument(f"--no_{option.name}", dest=option.name, action="store_const", const=False,
                               default=None, help=argparse.SUPPRESS if not default else f"turn off --{option.name}")
            continue
        names = [f"--{option.name}", *meta.get("flags", ())]
        suffix = f" (default: {default})" if default is not None else ""
        group.add_argument(*names, dest=option.name, type=_field_type(str(option.type)), default=None,
                           choices=meta.get("choices"), help=help_text + suffix)
        if meta.get("switch"):
            flag, when_true, when_false = meta["switch"]
            group.add_argument(flag, dest=option.name, type=_switch_value(flag, when_true, when_false), default=None,
                               metavar="True|False", help=f"--{option.name} {when_true} (True) or {when_false} (False)")


def options_from_args(args: argparse.Namespace, base: Optional[PipelineOptions] = None) -> PipelineOptions:
    """PipelineOptions from parsed flags: only flags the user gave override the defaults."""
    given = {
        option.name: getattr(args, option.name)
        for option in fields(PipelineOptions)
        if getattr(args, option.name, None) is not None
    }
    for option in fields(PipelineOptions):
        if option.name in given and option.metadata.get("note"):
            logger.warning(option.metadata["note"])
    return build_options(base, **given)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output verbosity")
    group.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors and warnings")
    group.add_argument("--verbose", "-v", action="store_true", help="log what each stage does")
    group.add_argument("--debug", action="store_true", help="log everything and show tracebacks on errors")


# API keys in a log line: an Authorization header (text or bytes tuple, any case) and an api_key= query value.
SECRET_PATTERNS = (
    re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*(?:b?['\"])?(?:bearer\s+)?)[^'\"\s,)&]+"),
    re.compile(r"(?i)(api_key=)[^&\s'\"]+"),
)


class RedactSecrets(logging.Filter):
    """Replace API keys in every record passing the handler (uvicorn's and ours) with <redacted>."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for pattern in SECRET_PATTERNS:
            redacted = pattern.sub(r"\1<redacted>", redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(args: argparse.Namespace) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = RichHandler(console=stderr_console(), show_time=False, show_path=args.debug, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("whispersg").setLevel(level)
    if args.debug:
        root.setLevel(logging.DEBUG)
    logging.getLogger("faster_whisper").setLevel(logging.DEBUG if args.debug else logging.ERROR)


def run_main(body: Callable[[], int], debug: bool) -> int:
    """Run a command body: known errors print one line, anything else names --debug."""
    try:
        return _run_then_ignore_late_interrupts(body)
    except KeyboardInterrupt:
        print_error("interrupted; finished outputs are kept")
        return 130
    except WhisperSGError as error:
        if debug:
            raise
        print_error(str(error))
        return error.exit_code
    except Exception as error:  # noqa: BLE001 - last line of defence for users
        if debug:
            raise
        print_error(f"unexpected {type(error).__name__}: {error} (run again with --debug for the traceback)")
        return 1


def _run_then_ignore_late_interrupts(body: Callable[[], int]) -> int:
    """Run the command; once it has finished (outputs saved), a Ctrl-C during interpreter exit is ignored
    instead of printing a traceback from Python's thread shutdown."""
    import signal
    import threading

    try:
        return body()
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv


def microphone_choice(value: Optional[str]) -> Optional[int]:
    """Interpret --mic_id: a device index, or 'list' (prints the input devices and returns None)."""
    if value is None:
        return None
    if value == "list":
        from whispersg.capture import list_input_devices

        for index, name, channels, rate in list_input_devices():
            print(f"{index}\t{name}\t{channels} ch\t{rate} Hz")
        return None
    try:
        return int(value)
    except ValueError as error:
        raise OptionError(f"--mic_id must be a device number or 'list' (got {value!r})") from error
