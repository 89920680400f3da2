"""The ``evallab`` command line. The only place errors become user-facing text."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from evallab.errors import LabError
from evallab.store.db import connect, database, run_sync

__all__ = ["app", "main"]

app = typer.Typer(
    name="evallab",
    help="A local evaluation lab for language models: model x quant x runtime, reproducibly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(
    help="The results database (embedded PostgreSQL unless EVALLAB_DATABASE_URL is set)."
)
app.add_typer(db_app, name="db")

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state: dict[str, bool] = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug or _state["debug"]


# ------------------------------------------------------------------------------------ progress


class RichReporter:
    """Draws a progress bar over the campaign's runs."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task_id: Any = None

    def run_started(self, label: str, index: int, total: int) -> None:
        if self.task_id is None:
            self.task_id = self.progress.add_task("runs", total=total)
        self.progress.update(self.task_id, description=f"[bold]{label}[/]", completed=index - 1)

    def run_finished(self, outcome: Any) -> None:
        if self.task_id is not None:
            self.progress.advance(self.task_id)
        mark = {"succeeded": "[green]✓[/]", "failed": "[red]✗[/]"}.get(outcome.status, "•")
        note = " (skipped: already succeeded with the same pins)" if outcome.skipped else ""
        self.progress.console.print(
            f"{mark} {outcome.model} · {outcome.runtime} · {outcome.benchmark} "
            f"{outcome.status}{note} {outcome.reason[:300]}"
        )

    def message(self, text: str) -> None:
        self.progress.console.print(text)


def _fmt(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None else f"{value:.4f}"


# -------------------------------------------------------------------------------------- run


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM (a service manager stopping the lab) like Ctrl-C: stop cleanly, keep runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def run(
    campaign: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip runs that already succeeded with the same pins.")
    ] = False,
    allow_unsafe_code: Annotated[
        bool,
        typer.Option(
            "--allow-unsafe-code",
            help="Let code benchmarks execute generated code WITHOUT the bubblewrap sandbox when "
            "bubblewrap is missing (recorded on every run). Dangerous.",
        ),
    ] = False,
) -> None:
    """Evaluate every (model, runtime, benchmark) of a campaign and store the results."""
    if allow_unsafe_code:
        os.environ["EVALLAB_ALLOW_UNSAFE_CODE"] = "1"
    from evallab.campaign import CampaignEngine, DriverInfo, LocalExecutor, run_campaign
    from evallab.spec import load_campaign

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    spec, base_dir = load_campaign(campaign)
    with database() as dsn, _sigterm_interrupts():
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            reporter = RichReporter(progress)
            reporter.message(f"Preparing campaign [bold]{spec.name}[/] (pins, models, runtimes)")
            engine = CampaignEngine(
                spec,
                base_dir,
                campaign.resolve(),
                dsn,
                DriverInfo("cli"),
                reporter=reporter,
                resume=resume,
            )
            result = run_campaign(engine, LocalExecutor(on_retry=reporter.message))
    table = Table(title=f"Campaign {result.name} — {result.status} ({result.campaign_id})")
    for col in ("model", "runtime", "benchmark", "task", "metric", "filter"):
        table.add_column(col)
    table.add_column("value ± stderr", justify="right")
    table.add_column("n", justify="right")
    for outcome in result.runs:
        if not outcome.scores:
            table.add_row(
                outcome.model,
                outcome.runtime,
                outcome.benchmark,
                "—",
                "—",
                "—",
                outcome.status if not outcome.skipped else "skipped",
                "",
            )
        for s in outcome.scores:
            table.add_row(
                outcome.model,
                outcome.runtime,
                outcome.benchmark,
                s.task,
                s.metric,
                s.filter,
                _fmt(s.value, s.stderr),
                str(s.n),
            )
    console.print(table)
    for note in result.notes:
        console.print(note)
    if result.failed:
        raise typer.Exit(code=1)


@app.command()
def results(
    model: Annotated[str | None, typer.Option(help="Only this model name.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    campaign: Annotated[str | None, typer.Option(help="Only this campaign name.")] = None,
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines for scripts.")] = False,
) -> None:
    """List recent runs and their scores."""
    from evallab.store.queries import recent_results

    async def _fetch(dsn: str) -> list[Any]:
        conn = await connect(dsn)
        try:
            return await recent_results(
                conn, model=model, task=task, campaign=campaign, limit_runs=limit
            )
        finally:
            await conn.close()

    with database() as dsn:
        rows = run_sync(_fetch(dsn))
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in rows], indent=1))
        return
    if not rows:
        console.print("No runs match. Run a campaign first: evallab run deployments/demo.yaml")
        return
    table = Table(title="Recent results")
    for col in (
        "run",
        "campaign",
        "model",
        "quant",
        "runtime",
        "benchmark",
        "status",
        "task",
        "metric",
        "filter",
    ):
        table.add_column(col)
    table.add_column("value ± stderr", justify="right")
    table.add_column("n", justify="right")
    for r in rows:
        table.add_row(
            r.run_id[:8],
            r.campaign,
            r.model,
            r.quant,
            r.runtime,
            r.benchmark,
            r.status,
            r.task or "—",
            r.metric or "—",
            r.filter or "—",
            _fmt(r.value, r.stderr),
            str(r.n or ""),
        )
    console.print(table)


@app.command()
def ingest(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (runs/<run_id>).")],
) -> None:
    """Re-ingest finished runs from their folders (e.g. after the database was down). Idempotent."""
    from evallab.campaign import read_run_dir
    from evallab.store.campaigns import store_run

    with database() as dsn:
        for d in run_dirs:
            stored = read_run_dir(d)
            store_run(dsn, stored)
            record = stored.record
            console.print(
                f"ingested run {record.run_id} ({record.model_name} · {record.benchmark}, "
                f"{record.status})"
            )


# --------------------------------------------------------------------------------------- db


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (the package's store/sql/migrations) and re-create the views."""
    from evallab.store.migrate import migrate

    async def _go(dsn: str) -> list[Any]:
        conn = await connect(dsn)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    with database() as dsn:
        applied = run_sync(_go(dsn))
    if applied:
        for m in applied:
            console.print(f"applied {m.path.name}")
    else:
        console.print("database is up to date")


@db_app.command("status")
def db_status() -> None:
    """Show which migrations the database has applied."""
    from evallab.store.db import redact
    from evallab.store.migrate import migration_status

    async def _go(dsn: str) -> list[Any]:
        conn = await connect(dsn)
        try:
            return await migration_status(conn)
        finally:
            await conn.close()

    with database() as dsn:
        rows = run_sync(_go(dsn))
        console.print(f"database: {redact(dsn)}")
    table = Table()
    for col in ("version", "name", "applied", "applied at", "checksum"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            f"{r.version:04d}",
            r.name,
            "yes" if r.applied else "[yellow]pending[/]",
            r.applied_at or "",
            "ok" if r.checksum_ok else "[red]EDITED[/]",
        )
    console.print(table)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded server and keep it running until `evallab db stop`."""
    from evallab.paths import lab_home
    from evallab.store.db import _embedded_port
    from evallab.store.embedded import EmbeddedPostgres

    lease = EmbeddedPostgres(lab_home(), port=_embedded_port()).acquire(permanent=True)
    console.print(f"embedded PostgreSQL running until `evallab db stop`: {lease.dsn}")


@db_app.command("stop")
def db_stop(
    force: Annotated[
        bool,
        typer.Option("--force", help="Stop it even while other lab commands are using it."),
    ] = False,
) -> None:
    """Stop the embedded server, or let the lab commands still using it stop it when they end."""
    from evallab.paths import lab_home
    from evallab.store.db import _embedded_port
    from evallab.store.embedded import EmbeddedPostgres

    outcome = EmbeddedPostgres(lab_home(), port=_embedded_port()).shutdown(force=force)
    if outcome.stopped:
        console.print("embedded PostgreSQL stopped")
    elif not outcome.was_running:
        console.print("embedded PostgreSQL is not running")
    else:
        console.print(
            f"embedded PostgreSQL keeps running for {len(outcome.clients)} lab "
            f"process{'es' if len(outcome.clients) != 1 else ''} still using it; the last one "
            "stops it when it ends (`evallab db stop --force` stops it now):",
            highlight=False,
        )
        for client in outcome.clients:
            console.print(f"  pid {client.pid}: {client.command}", highlight=False)


# ---------------------------------------------------------------------- mounted sub-commands


def _mount(module: str, attr: str, name: str | None) -> None:
    if importlib.util.find_spec(module) is None:
        return
    sub = getattr(importlib.import_module(module), attr, None)
    if sub is None:
        return
    if name:
        app.add_typer(sub, name=name)
    else:
        for cmd in sub.registered_commands:
            app.registered_commands.append(cmd)
        for grp in sub.registered_groups:
            app.registered_groups.append(grp)


_mount("evallab.cli_runtime", "app", "runtime")
_mount("evallab.cli_checks", "app", None)
_mount("evallab.cli_report", "app", None)
_mount("evallab.cli_prefect", "app", None)


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
        if _state["debug"]:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("[bold red]aborted[/]")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: finished runs are kept; re-run with --resume")
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
