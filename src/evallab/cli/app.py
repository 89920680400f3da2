"""The root ``evallab`` app: every command group registered by name, and the entry point.

Each command module imports only typer, rich and the lab's errors at import time; what a command
needs (the database, scipy, lm-eval, Prefect) is imported inside its body, so ``evallab --help``
and the light commands start fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import click
import typer

from evallab.cli import backup, checks, db, gc, prefect, report, run, runtime
from evallab.cli.console import show_error, show_stop
from evallab.errors import LabError

__all__ = ["app", "main"]

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


def main() -> None:
    """Console-script entry point: run the app, turning LabErrors into one paragraph."""
    # lm-eval's own tqdm bars would tear through the rich progress display; the lab draws one
    # bar per run instead.
    os.environ.setdefault("TQDM_DISABLE", "1")
    if "--debug" in sys.argv[1:2] or os.environ.get("EVALLAB_DEBUG"):
        _state["debug"] = True
    try:
        # Without standalone mode, typer returns an Exit's code instead of exiting with it.
        rc = app(standalone_mode=False)
    except LabError as exc:
        show_error(exc, debug=_state["debug"])
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        show_stop("[bold red]aborted[/]")
        sys.exit(130)
    except KeyboardInterrupt:
        show_stop("[bold red]interrupted[/]: finished runs are kept; re-run with --resume")
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
