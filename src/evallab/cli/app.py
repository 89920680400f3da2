"""The root ``evallab`` app: every command group registered by name, and the entry point.

Each command module imports only typer, rich and the lab's errors at import time; what a command
needs (the database, scipy, lm-eval, Prefect) is imported inside its body, so ``evallab --help``
and the light commands start fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from typer.exceptions import TyperException

from evallab.cli import backup, checks, db, gc, offline, prefect, report, run, runtime
from evallab.cli.console import show_error, show_stop, styled
from evallab.errors import LabError

__all__ = ["app", "main", "run_cli"]

app = typer.Typer(
    name="evallab",
    help="A local evaluation lab for language models: model x quant x runtime, reproducibly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state: dict[str, bool] = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug or _state["debug"]


def _top_level(sub: typer.Typer) -> None:
    """Register a module's commands directly under ``evallab`` (``evallab run``, not a group)."""
    app.registered_commands.extend(sub.registered_commands)


# The order here is the order of `evallab --help`: commands first, then the groups.
_top_level(run.app)  # run, results, ingest
_top_level(offline.app)  # prefetch
_top_level(checks.app)  # regressions
_top_level(report.app)  # compare, diff, matrix
_top_level(prefect.app)  # submit
_top_level(backup.app)  # backup, restore
_top_level(gc.app)  # gc
app.add_typer(db.app, name="db")
app.add_typer(runtime.app, name="runtime")
app.add_typer(checks.pins_app, name="pins")
app.add_typer(checks.canary_app, name="canary")
app.add_typer(report.report_app, name="report")
app.add_typer(prefect.prefect_app, name="prefect")
app.add_typer(prefect.webhook_app, name="webhook")


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run the app on ``args`` (default ``sys.argv[1:]``) and return its exit code.

    Every way a command line can go wrong ends here as one message on stderr and an exit code,
    never a traceback: a LabError is one paragraph (exit 2, its own code), a usage error (unknown
    command or option, missing or malformed argument) is typer's usage message (exit 2), an
    aborted prompt or Ctrl-C exits 130.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if "--debug" in argv[:1] or os.environ.get("EVALLAB_DEBUG"):
        _state["debug"] = True
    try:
        # Without standalone mode, typer returns an Exit's code instead of exiting with it, and
        # raises usage errors for this function to show.
        rc = app(args=argv, prog_name="evallab", standalone_mode=False)
    except LabError as exc:
        show_error(exc, debug=_state["debug"])
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except TyperException as exc:
        # Usage errors (typer's vendored click): "No such command", "Missing argument"...
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            show_stop(f"error: {exc.format_message()}")
        return int(exc.exit_code)
    except typer.Abort:
        show_stop(styled("[bold red]aborted[/]"))
        return 130
    except KeyboardInterrupt:
        show_stop(styled("[bold red]interrupted[/]: finished runs are kept; re-run with --resume"))
        return 130
    return rc if isinstance(rc, int) else 0


def main() -> None:
    """Console-script entry point: run the app, turning LabErrors into one paragraph."""
    # lm-eval's own tqdm bars would tear through the rich progress display; the lab draws one
    # bar per run instead.
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(run_cli())
