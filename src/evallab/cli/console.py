"""Where the CLI's text goes: the one console for results, and the one way errors are shown.

Every command prints through :data:`console` (stdout); errors, interruptions and aborts go to
stderr through :func:`show_error` and :func:`show_stop`, so scripts can read the results alone.

Both consoles have rich markup **off**: run labels, task names, file paths and error messages
carry user text (``model=[/x]``, ``[bold]``) that must print as written, never be read as
markup (a stray ``[/x]`` would otherwise raise a MarkupError in the middle of a command). Text
that is styled on purpose goes through :func:`styled`, whose template is the lab's own and whose
user values are escaped.
"""

from __future__ import annotations

import sys
import traceback

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from evallab.errors import LabError

__all__ = ["console", "escape", "show_error", "show_stop", "styled"]

# Piped output (tests, logs, `| less`) gets a fixed width wide enough for the result tables,
# instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160, markup=False)
_err = Console(stderr=True, width=None if sys.stderr.isatty() else 160, markup=False)


def styled(template: str, *values: object) -> Text:
    """Rich markup written by the lab, with user values filled in escaped.

    Args:
        template: Markup with ``{}`` placeholders, e.g. ``"[bold]A[/] {}"``.
        values: Values for the placeholders; each is escaped, so it prints as written.

    Returns:
        The styled text, printable on the markup-free consoles and usable as a table cell.
    """
    return Text.from_markup(template.format(*(escape(str(v)) for v in values)))


def show_error(exc: LabError, *, debug: bool = False) -> None:
    """Print a LabError as one paragraph on stderr (with its traceback first under --debug)."""
    if debug:
        traceback.print_exc()
    _err.print(styled("[bold red]error:[/] {}", exc.message), highlight=False, soft_wrap=True)


def show_stop(text: Text | str) -> None:
    """Print why the command stopped early (Ctrl-C, SIGTERM, an aborted prompt) on stderr."""
    _err.print(text)
