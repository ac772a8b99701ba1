"""User-facing output: rich consoles (messages on stderr, results on stdout)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    from rich.markup import escape

    stderr_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # one line whatever the width


def print_warning(message: str) -> None:
    from rich.markup import escape

    stderr_console().print(f"[bold yellow]warning:[/] {escape(message)}")
