"""Retention of raw run outputs under the runs folder: ``evallab gc`` (see docs/backup.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from evallab.gc.apply import PACKED_INDEX, PRUNED, GcResult, apply_gc
from evallab.gc.plan import PACKED, GcAction, GcPlan, plan_gc
from evallab.paths import runs_dir
from evallab.store import Store

__all__ = [
    "PACKED",
    "PACKED_INDEX",
    "PRUNED",
    "GcAction",
    "GcPlan",
    "GcResult",
    "apply_gc",
    "collect_garbage",
    "plan_gc",
]


def collect_garbage(
    store: Store,
    *,
    keep_last: int | None = None,
    quota_gb: float | None = None,
    compress_after_days: float | None = None,
    dry_run: bool = False,
    root: Path | None = None,
) -> tuple[GcPlan, GcResult | None]:
    """Plan gc over the runs folder and, unless ``dry_run``, carry it out (CLI and nightly flow).

    Args:
        store: The results database (knows the runs and what protects them).
        keep_last: Runs per model x benchmark whose raw outputs are kept.
        quota_gb: Most gigabytes (10^9 bytes) the run folders may take.
        compress_after_days: Compress the raw outputs of runs older than this many days.
        dry_run: Only plan; nothing is deleted, compressed or recorded.
        root: The runs folder; default :func:`evallab.paths.runs_dir`.

    Returns:
        The plan, and what was done (None for a dry run).
    """
    store.migrate()  # runs.pruned_at exists from schema version 7 on
    plan = plan_gc(
        store.runs_for_retention(),
        root or runs_dir(),
        keep_last=keep_last,
        quota_bytes=None if quota_gb is None else int(quota_gb * 1e9),
        compress_after=None if compress_after_days is None else timedelta(days=compress_after_days),
        now=datetime.now(UTC),
    )
    return plan, None if dry_run else apply_gc(store, plan)
