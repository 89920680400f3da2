"""``evallab run``, ``results`` and ``ingest``: evaluate a campaign and read what it stored."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from evallab.cli.console import console, escape, styled

__all__ = ["app"]

app = typer.Typer()


# ------------------------------------------------------------------------------------ progress


class RichReporter:
    """Draws a progress bar over the campaign's runs."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task_id: Any = None

    def run_started(self, label: str, index: int, total: int) -> None:
        if self.task_id is None:
            self.task_id = self.progress.add_task("runs", total=total)
        self.progress.update(
            self.task_id, description=f"[bold]{escape(label)}[/]", completed=index - 1
        )

    def run_finished(self, outcome: Any) -> None:
        if self.task_id is not None:
            self.progress.advance(self.task_id)
        mark = {"succeeded": "[green]✓[/]", "failed": "[red]✗[/]"}.get(outcome.status, "•")
        note = " (skipped: already succeeded with the same pins)" if outcome.skipped else ""
        self.progress.console.print(
            styled(
                mark + " {} · {} · {} {}{} {}",
                outcome.model,
                outcome.runtime,
                outcome.benchmark,
                outcome.status,
                note,
                outcome.reason[:300],
            )
        )

    def message(self, text: str | Text) -> None:
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
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Use only what is on this machine (sets HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, "
            "TRANSFORMERS_OFFLINE); checks first that every model, dataset and runtime is here "
            "and lists what is missing (fetch it with `evallab prefetch`).",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only validate: the campaign file, its pins' form, its benchmarks' tasks (and "
            "with --offline, that everything is here). Starts no model; writes nothing.",
        ),
    ] = False,
) -> None:
    """Evaluate every (model, runtime, benchmark) of a campaign and store the results."""
    if offline:
        from evallab.offline import go_offline

        # Before the Hugging Face libraries are imported: they read these once.
        go_offline()
    from evallab.spec import load_campaign, require_pinned

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    spec, base_dir = load_campaign(campaign)
    require_pinned(spec, campaign)
    if offline or check:
        from evallab.campaign.plan import check_benchmarks

        check_benchmarks(spec, base_dir)
    if offline:
        from evallab.offline import require_offline_ready

        needs = require_offline_ready(spec, base_dir, campaign)
        console.print(
            f"offline: everything this campaign needs is here ({len(needs)} item(s) checked)"
        )
    if check:
        runs = len(spec.models) * len(spec.runtimes) * len(spec.benchmarks)
        console.print(
            f"campaign {spec.name} is valid: {len(spec.models)} model(s) x {len(spec.runtimes)} "
            f"runtime(s) x {len(spec.benchmarks)} benchmark(s) = {runs} run(s); nothing was run"
        )
        return
    from evallab.campaign import CampaignEngine, DriverInfo, LocalExecutor, run_campaign
    from evallab.store import Store

    with Store.open() as store, _sigterm_interrupts():
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
            reporter.message(
                styled("Preparing campaign [bold]{}[/] (pins, models, runtimes)", spec.name)
            )
            engine = CampaignEngine(
                spec,
                base_dir,
                campaign.resolve(),
                store,
                DriverInfo("cli"),
                reporter=reporter,
                resume=resume,
                allow_unsafe_code=allow_unsafe_code,
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
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON array of score rows (one object per score) for scripts."
        ),
    ] = False,
) -> None:
    """List recent runs and their scores."""
    from evallab.store import Store

    with Store.open() as store:
        rows = store.recent_results(model=model, task=task, campaign=campaign, limit_runs=limit)
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
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace a run already stored with other content under the same run id "
            "(in one transaction).",
        ),
    ] = False,
) -> None:
    """Store finished runs from their folders (e.g. after the database was down).

    Every file is checked against the checksums the run wrote, and the scores are re-derived
    from the data files; a folder that doesn't verify is refused. Storing the same folder again
    changes nothing.
    """
    from evallab.campaign import read_run_dir
    from evallab.store import Store

    done = {
        "stored": "ingested",
        "unchanged": "already stored with the same content:",
        "replaced": "replaced",
    }
    with Store.open() as store:
        store.migrate()  # as a campaign does when it opens: the rows need the current schema
        for d in run_dirs:
            stored = read_run_dir(d)
            for warning in stored.warnings:
                console.print(styled("[yellow]warning:[/] {}", warning), highlight=False)
            outcome = store.store_run(stored, replace=replace)
            record = stored.record
            console.print(
                f"{done[outcome]} run {record.run_id} ({record.model_name} · {record.benchmark}, "
                f"{record.status})"
            )
