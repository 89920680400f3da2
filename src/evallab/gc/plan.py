"""What ``evallab gc`` would do to the run folders, decided before anything is touched.

The plan is computed from the database and the folders' current sizes, so ``--dry-run`` shows
exactly what a real run then does. In order:

1. **keep-last**: per model x benchmark, raw outputs older than the newest N runs are pruned;
2. **quota**: while the run folders still add up to more than the quota, the oldest remaining
   raw outputs are pruned (compression is not counted on: the plan stays exact);
3. **compress**: remaining runs older than the given age are packed into ``raw.tar.zst``.

Runs the store marks as evidence (a current canary baseline, an open repro comparison, a
regression) are never pruned — they are listed as spared — and a run still running is not
touched at all.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from evallab.store.pruning import RunRetention

__all__ = ["GcAction", "GcPlan", "folder_size", "plan_gc"]

PACKED = "raw.tar.zst"


def folder_size(folder: Path) -> int:
    """Bytes in the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@dataclass(frozen=True)
class GcAction:
    """One thing gc does to one run folder.

    Attributes:
        run: The run, as the store sees it.
        folder: Its folder under the runs folder.
        action: ``prune`` (delete the raw outputs, keep checksums) or ``compress``.
        reason: Why (``keep-last 5``, ``quota 100 GB``, ``older than 30 days``).
        size_bytes: The folder's size now.
    """

    run: RunRetention
    folder: Path
    action: Literal["prune", "compress"]
    reason: str
    size_bytes: int


@dataclass
class GcPlan:
    """Everything gc would do, and what it would have done but may not.

    Attributes:
        actions: Prunes and compressions, in the order they run.
        spared: Runs a rule would have pruned, with the evidence that protects them.
        total_bytes: The run folders' size now.
        quota_bytes: The quota, if one was given.
        over_quota: The run folders stay over the quota after pruning all that may go.
    """

    actions: list[GcAction] = field(default_factory=list)
    spared: list[tuple[RunRetention, str]] = field(default_factory=list)
    total_bytes: int = 0
    quota_bytes: int | None = None
    over_quota: bool = False

    @property
    def freed_bytes(self) -> int:
        """Bytes the prunes free (compression frees more, not known in advance)."""
        return sum(a.size_bytes for a in self.actions if a.action == "prune")


def plan_gc(
    runs: list[RunRetention],
    root: Path,
    *,
    keep_last: int | None = None,
    quota_bytes: int | None = None,
    compress_after: timedelta | None = None,
    now: datetime,
) -> GcPlan:
    """Decide what to prune and compress under ``root`` (the runs folder).

    Args:
        runs: Every run, from :meth:`Store.runs_for_retention`.
        root: The runs folder (a run's folder is ``root/<run_id>``).
        keep_last: Runs per model x benchmark whose raw outputs are kept (None: no limit).
        quota_bytes: Most bytes the run folders may take (None: no quota).
        compress_after: Compress raw outputs of runs older than this (None: never).
        now: The time "older than" is measured from.
    """
    sizes: dict[uuid.UUID, int] = {}
    live: list[RunRetention] = []
    for run in runs:
        folder = root / str(run.run_id)
        if run.pruned_at is None and run.status != "running" and folder.is_dir():
            sizes[run.run_id] = folder_size(folder)
            live.append(run)
    plan = GcPlan(total_bytes=sum(sizes.values()), quota_bytes=quota_bytes)
    pruned: set[uuid.UUID] = set()

    def prune(run: RunRetention, reason: str) -> bool:
        if run.protected_by:
            plan.spared.append((run, f"{reason}, but kept: {', '.join(run.protected_by)}"))
            return False
        pruned.add(run.run_id)
        plan.actions.append(
            GcAction(run, root / str(run.run_id), "prune", reason, sizes[run.run_id])
        )
        return True

    if keep_last is not None:
        series: dict[tuple[str, str], list[RunRetention]] = defaultdict(list)
        for run in runs:  # every run counts towards the newest N, pruned or not
            series[(run.model_name, run.benchmark)].append(run)
        for members in series.values():
            newest_first = sorted(members, key=lambda r: r.started_at, reverse=True)
            for run in newest_first[keep_last:]:
                if run.run_id in sizes:
                    prune(run, f"keep-last {keep_last}")
    if quota_bytes is not None:
        used = plan.total_bytes - plan.freed_bytes
        for run in live:  # oldest first
            if used <= quota_bytes:
                break
            if run.run_id not in pruned and prune(run, f"quota {quota_bytes / 1e9:g} GB"):
                used -= sizes[run.run_id]
        plan.over_quota = used > quota_bytes
    if compress_after is not None:
        cutoff = now - compress_after
        for run in live:
            folder = root / str(run.run_id)
            if (
                run.run_id not in pruned
                and run.compressed_at is None
                and run.started_at < cutoff
                and not (folder / PACKED).exists()
            ):
                age = f"older than {compress_after.total_seconds() / 86400:g} days"
                plan.actions.append(GcAction(run, folder, "compress", age, sizes[run.run_id]))
    return plan
