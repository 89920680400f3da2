"""``evallab gc``: retention of raw run outputs under the runs folder (docs/backup.md).

Registered at top level in :mod:`evallab.cli.app`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from evallab.cli.console import console, styled

__all__ = ["app"]

app = typer.Typer(help="Retention of raw run outputs.", no_args_is_help=True)


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB"


@app.command("gc")
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go; delete nothing.")
    ] = False,
    keep_last: Annotated[
        int | None,
        typer.Option(
            "--keep-last",
            min=1,
            help="Keep raw outputs of the newest N runs per model x benchmark.",
        ),
    ] = None,
    quota: Annotated[
        float | None,
        typer.Option(
            "--quota",
            min=0,
            help="Prune the oldest raw outputs until the run folders take at most this many GB.",
        ),
    ] = None,
    compress_after: Annotated[
        float | None,
        typer.Option(
            "--compress-after",
            min=0,
            help="Compress raw outputs of runs older than this many days into raw.tar.zst.",
        ),
    ] = None,
) -> None:
    """Prune and compress raw run outputs (never canary baselines, repro comparisons, regressions).

    The database keeps every score and per-sample outcome of a pruned run.
    """
    from evallab.errors import ConfigError
    from evallab.gc import collect_garbage
    from evallab.paths import runs_dir
    from evallab.store import Store

    if keep_last is None and quota is None and compress_after is None:
        raise ConfigError(
            "gc needs at least one rule",
            value="evallab gc",
            fix="pass --keep-last N, --quota GB and/or --compress-after DAYS (with --dry-run "
            "to see what they would do)",
        )
    with Store.open() as store:
        plan, result = collect_garbage(
            store,
            keep_last=keep_last,
            quota_gb=quota,
            compress_after_days=compress_after,
            dry_run=dry_run,
        )
    verb = "would" if dry_run else "did"
    table = Table(title=f"gc of {runs_dir()} ({_gb(plan.total_bytes)} in run folders)")
    for col in ("action", "run", "model", "benchmark", "started", "size", "reason"):
        table.add_column(col, overflow="fold")
    for a in plan.actions:
        table.add_row(
            a.action,
            str(a.run.run_id)[:8],
            a.run.model_name,
            a.run.benchmark,
            f"{a.run.started_at:%Y-%m-%d %H:%M}",
            _gb(a.size_bytes),
            a.reason,
        )
    for run, why in plan.spared:
        table.add_row(
            styled("[green]keep[/]"),
            str(run.run_id)[:8],
            run.model_name,
            run.benchmark,
            f"{run.started_at:%Y-%m-%d %H:%M}",
            "",
            why,
        )
    if plan.actions or plan.spared:
        console.print(table)
    prunes = sum(a.action == "prune" for a in plan.actions)
    compressions = len(plan.actions) - prunes
    freed = plan.freed_bytes if result is None else result.freed_bytes
    console.print(
        f"gc {verb} prune {prunes} run(s) and compress {compressions}, freeing "
        f"{'at least ' if result is None and compressions else ''}{_gb(freed)}"
        + (" (dry run: nothing was changed)" if dry_run else "")
    )
    if plan.over_quota and plan.quota_bytes is not None:
        console.print(
            styled(
                "[yellow]still over the {} quota[/]: what remains is protected (canary "
                "baselines, repro comparisons, regressions) or still running",
                _gb(plan.quota_bytes),
            )
        )
