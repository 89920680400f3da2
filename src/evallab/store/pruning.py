"""Queries for ``evallab gc``: every run with what protects its raw outputs, and marking runs.

A run's raw outputs are never deleted while the store says they are evidence:

* **canary baseline** — the run belongs to the runtime session that recorded a current (not
  retired) canary baseline of its combination (same campaign, model, quant and runtime);
* **repro comparison** — the run is one side of a recorded reproducibility violation (the rerun
  or its reference run): the comparison stays open until a rerun reproduces;
* **regression** — one of its scores was flagged as a regression.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from evallab.store.connection import StoreConnection

__all__ = ["PruneQueries", "RunRetention"]

_RUNS_SQL = """
WITH baselines AS (
    SELECT DISTINCT campaign_id, run_id, model_name, quant, runtime_label
      FROM canaries
     WHERE is_baseline AND retired_at IS NULL
)
SELECT r.run_id, r.model_name, r.benchmark, r.status, r.started_at, r.pruned_at,
       r.compressed_at,
       array_remove(ARRAY[
           CASE WHEN EXISTS (
               SELECT 1 FROM baselines b
                WHERE b.run_id = r.run_id
                   OR (b.run_id IS NULL AND b.campaign_id = r.campaign_id
                       AND b.model_name = r.model_name AND b.quant = r.quant
                       AND b.runtime_label = r.runtime_label))
                THEN 'canary baseline' END,
           CASE WHEN EXISTS (
               SELECT 1 FROM repro_violations v
                WHERE v.run_id = r.run_id OR v.reference_run_id = r.run_id)
                THEN 'repro comparison' END,
           CASE WHEN EXISTS (
               SELECT 1 FROM score_checks c WHERE c.run_id = r.run_id AND c.is_regression)
                THEN 'regression' END
       ], NULL) AS protected_by
  FROM runs r
 ORDER BY r.started_at, r.run_id
"""


@dataclass(frozen=True)
class RunRetention:
    """A run as ``evallab gc`` sees it.

    Attributes:
        run_id: The run.
        model_name: Its model (keep-last counts per model x benchmark).
        benchmark: Its benchmark.
        status: running, succeeded, failed or invalid.
        started_at: When it started (oldest goes first).
        pruned_at: When its raw outputs were deleted, or None.
        compressed_at: When its raw outputs were compressed, or None.
        protected_by: Why its raw outputs must never be deleted (empty: they may be).
    """

    run_id: uuid.UUID
    model_name: str
    benchmark: str
    status: str
    started_at: datetime
    pruned_at: datetime | None
    compressed_at: datetime | None
    protected_by: tuple[str, ...]


class PruneQueries(StoreConnection):
    """The store's methods for pruning and compressing raw run outputs."""

    def runs_for_retention(self) -> list[RunRetention]:
        """Every run, oldest first, with what protects its raw outputs."""

        async def work(conn: asyncpg.Connection) -> list[RunRetention]:
            return [
                RunRetention(
                    run_id=r["run_id"],
                    model_name=r["model_name"],
                    benchmark=r["benchmark"],
                    status=r["status"],
                    started_at=r["started_at"],
                    pruned_at=r["pruned_at"],
                    compressed_at=r["compressed_at"],
                    protected_by=tuple(r["protected_by"]),
                )
                for r in await conn.fetch(_RUNS_SQL)
            ]

        return self.run(work)

    def mark_pruned(self, run_ids: Sequence[uuid.UUID], reason: str) -> int:
        """Record that these runs' raw outputs were deleted; returns how many rows changed."""

        async def work(conn: asyncpg.Connection) -> int:
            done = await conn.execute(
                "UPDATE runs SET pruned_at = now(), pruned_reason = $2 "
                "WHERE run_id = ANY($1::uuid[]) AND pruned_at IS NULL",
                list(run_ids),
                reason,
            )
            return int(done.split()[-1])

        return self.run(work)

    def mark_compressed(self, run_ids: Sequence[uuid.UUID]) -> int:
        """Record that these runs' raw outputs were compressed; returns how many rows changed."""

        async def work(conn: asyncpg.Connection) -> int:
            done = await conn.execute(
                "UPDATE runs SET compressed_at = now() "
                "WHERE run_id = ANY($1::uuid[]) AND compressed_at IS NULL",
                list(run_ids),
            )
            return int(done.split()[-1])

        return self.run(work)
