"""Commands for the reproducibility checks: ``pins check``, ``canary baseline``, ``regressions``.

Registered in :mod:`evallab.cli.app`: ``regressions`` at top level, ``pins`` and ``canary`` as
groups.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from evallab.cli.console import console, styled
from evallab.errors import PinError

if TYPE_CHECKING:
    pass

__all__ = ["app", "canary_app", "pins_app"]

app = typer.Typer(help="Pins, canaries and regressions.", no_args_is_help=True)
pins_app = typer.Typer(help="Resolve and verify a campaign's pins.", no_args_is_help=True)
canary_app = typer.Typer(help="Canary determinism baselines.", no_args_is_help=True)

_STATUS_STYLE = {
    "ok": "green",
    "info": "dim",
    "unpinned": "yellow",
    "refused": "bold red",
    "mismatch": "bold red",
}


@pins_app.command("check")
def pins_check(
    campaign: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
) -> None:
    """Print the campaign's resolved pins without running anything; exit 1 if any is refused."""
    from evallab.campaign.plan import check_benchmarks
    from evallab.pins import verify_pins
    from evallab.spec import load_campaign

    spec, base_dir = load_campaign(campaign)
    # Unknown tasks and unreadable task YAMLs are named as such, not as unresolvable pins.
    check_benchmarks(spec, base_dir)
    with console.status("Resolving pins (models, datasets, runtimes, environment)"):
        report = verify_pins(spec, base_dir, raise_on_refusal=False)
    table = Table(title=f"Pins of campaign {spec.name}")
    for col in ("kind", "name", "requested", "resolved", "status", "detail"):
        table.add_column(col, overflow="fold")
    for row in report.rows:
        style = _STATUS_STYLE.get(row.status, "")
        table.add_row(
            row.kind,
            row.name,
            row.requested,
            row.resolved,
            styled(f"[{style}]{{}}[/]" if style else "{}", row.status),
            row.detail,
        )
    console.print(table)
    if report.refused:
        names = ", ".join(f"{r.kind} {r.name}" for r in report.refused)
        raise PinError(
            f"{len(report.refused)} pin(s) refused (see the table): the campaign would stop "
            "before running anything",
            value=names,
            fix="pin the refused revisions to the commit shas shown, install the pinned runtime "
            "versions, or set allow_unpinned: true for branch/tag revisions",
        )
    if report.unpinned:
        console.print(
            styled(
                f"[yellow]{len(report.unpinned)} unpinned revision(s) accepted "
                "(allow_unpinned: true); runs will be tagged unpinned.[/]"
            )
        )


@canary_app.command("baseline")
def canary_baseline(
    reset: Annotated[
        bool, typer.Option("--reset", help="Retire baselines so the next session records new ones.")
    ] = False,
    model: Annotated[str | None, typer.Option(help="Only this model name.")] = None,
    runtime: Annotated[str | None, typer.Option(help="Only this runtime label.")] = None,
) -> None:
    """Show current canary baselines, or retire them with --reset after a deliberate change."""
    from evallab.canary.check import reset_baselines
    from evallab.store import Store

    with Store.open() as store:
        retired = reset_baselines(store, model=model, runtime=runtime) if reset else 0
        rows = store.current_canary_baselines(model=model, runtime=runtime)
    if reset:
        console.print(
            f"retired {retired} baseline row(s); the next session of each combination records "
            "a new baseline"
        )
    table = Table(title="Current canary baselines")
    for col in ("model", "revision", "quant", "runtime", "version", "GPU", "canary", "recorded"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.model_name),
            str(r.model_revision),
            str(r.quant),
            str(r.runtime_label),
            str(r.runtime_version),
            str(r.gpu_name or "-"),
            str(r.canary_version),
            str(r.recorded),
        )
    console.print(table if rows else "no current canary baselines")


@app.command("regressions")
def regressions(
    days: Annotated[int, typer.Option(help="Only runs started in the last N days.")] = 30,
    model: Annotated[str | None, typer.Option(help="Only this model name.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 200,
) -> None:
    """List scores more than the configured sigma below their history (valid runs only)."""
    from evallab.store import Store

    since = datetime.now(UTC) - timedelta(days=days)
    with Store.open() as store:
        found = store.recent_regressions(since=since, model=model, limit=limit)
    if not found:
        console.print(f"no regressions in the last {days} days")
        return
    table = Table(title=f"Regressions in the last {days} days")
    for col in ("started", "model", "quant", "runtime", "benchmark", "task", "metric"):
        table.add_column(col, overflow="fold")
    for col in ("value", "history mean ± sd", "n", "z"):
        table.add_column(col, justify="right")
    for r in found:
        table.add_row(
            f"{r.started_at:%Y-%m-%d %H:%M}",
            r.model_name,
            r.quant,
            r.runtime_label,
            r.benchmark,
            r.task,
            f"{r.metric},{r.filter}",
            f"{r.value:.4f}",
            f"{r.history_mean:.4f} ± {r.history_sd:.4f}",
            str(r.history_n),
            f"{r.z:+.1f}",
        )
    console.print(table)
