"""Where the CLI's text goes: the one console for results, and the one way errors are shown.

Every command prints through :data:`console` (stdout); errors, interruptions and aborts go to
stderr through :func:`show_error` and :func:`show_stop`, so scripts can read the results alone.
"""

from __future__ import annotations

import sys
import traceback

from rich.console import Console

from evallab.errors import LabError

__all__ = ["console", "show_error", "show_stop"]

# Piped output (tests, logs, `| less`) gets a fixed width wide enough for the result tables,
# instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
_err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def show_error(exc: LabError, *, debug: bool = False) -> None:
    """Print a LabError as one paragraph on stderr (with its traceback first under --debug)."""
    if debug:
        traceback.print_exc()
    _err.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)


def show_stop(text: str) -> None:
    """Print why the command stopped early (Ctrl-C, SIGTERM, an aborted prompt) on stderr."""
    _err.print(text)
