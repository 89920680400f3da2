"""The nightly maintenance flows: a backup of the results database, and gc of raw outputs.

Both call the same code as ``evallab backup`` and ``evallab gc`` (docs/backup.md) on the lab's
results database (``EVALLAB_DATABASE_URL``, the ``results`` block, or the embedded server). They
run on the ``lab`` pool; neither needs a GPU.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from blocks.lab import results_database
from evallab.backup import backup_and_rotate
from evallab.gc import collect_garbage
from evallab.store import Store

__all__ = ["backup_database", "gc_raw_outputs"]


@flow(name="backup", log_prints=True, retries=1, retry_delay_seconds=300)
def backup_database(
    out_dir: str | None = None, keep_daily: int = 7, keep_weekly: int = 4
) -> dict[str, object]:
    """Back up the results database and rotate the backups folder.

    Args:
        out_dir: Backups folder (default ``<lab home>/backups``).
        keep_daily: Days whose newest backup is kept.
        keep_weekly: ISO weeks whose newest backup is kept.

    Returns:
        The archive, its sha256, rows, and the backups rotation deleted.
    """
    logger = get_run_logger()
    with results_database() as dsn:
        result, rotation = backup_and_rotate(
            Path(out_dir) if out_dir else None, daily=keep_daily, weekly=keep_weekly, dsn=dsn
        )
    logger.info(
        "backup %s: %d rows, sha256 %s; rotation deleted %d",
        result.archive,
        result.manifest.total_rows,
        result.manifest.archive.sha256,
        len(rotation.delete),
    )
    return {
        "archive": str(result.archive),
        "sha256": result.manifest.archive.sha256,
        "rows": result.manifest.total_rows,
        "deleted": [str(b.archive) for b in rotation.delete],
    }


@flow(name="gc", log_prints=True)
def gc_raw_outputs(
    keep_last: int | None = 10,
    quota_gb: float | None = None,
    compress_after_days: float | None = 30,
    dry_run: bool = False,
) -> dict[str, int]:
    """Prune and compress raw run outputs (never canary baselines, repro comparisons, regressions).

    Returns:
        How many runs were pruned and compressed, and the bytes freed.
    """
    logger = get_run_logger()
    with results_database() as dsn, Store(dsn) as store:
        plan, done = collect_garbage(
            store,
            keep_last=keep_last,
            quota_gb=quota_gb,
            compress_after_days=compress_after_days,
            dry_run=dry_run,
        )
    for run, why in plan.spared:
        logger.info("kept %s (%s %s): %s", run.run_id, run.model_name, run.benchmark, why)
    for a in plan.actions:
        logger.info(
            "%s %s (%s %s): %s", a.action, a.run.run_id, a.run.model_name, a.run.benchmark, a.reason
        )
    if plan.over_quota:
        logger.warning("the run folders stay over the quota: what remains is protected")
    return {
        "pruned": done.pruned if done else 0,
        "compressed": done.compressed if done else 0,
        "freed_bytes": done.freed_bytes if done else 0,
    }
