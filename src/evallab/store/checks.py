"""Queries for the repro window and the regression checks.

What a check finds is stored (``repro_violations``, ``score_checks`` and run tags), so dashboards
and alerts read rows instead of recomputing statistics. The rules themselves are described in
:mod:`evallab.analysis.repro` and :mod:`evallab.analysis.regressions`, which call these methods.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

import asyncpg

from evallab.store.connection import StoreConnection

__all__ = ["CheckQueries", "Regression", "ReproViolation"]


@dataclass(frozen=True)
class ReproViolation:
    """A score that differs from the reference run with the same pins by more than allowed."""

    run_id: uuid.UUID
    reference_run_id: uuid.UUID
    task: str
    metric: str
    filter: str
    value: float
    reference_value: float
    rel_diff: float
    tolerance: float

    def describe(self) -> str:
        """One line naming both values."""
        return (
            f"{self.task} {self.metric},{self.filter}: {self.value:.6g} vs "
            f"{self.reference_value:.6g} "
            f"in run {self.reference_run_id} ({self.rel_diff:.2%} apart, tolerance "
            f"{self.tolerance:.2%})"
        )


@dataclass(frozen=True)
class Regression:
    """A score far below (or, for lower-is-better metrics, above) its series' history."""

    run_id: uuid.UUID
    started_at: datetime
    model_name: str
    quant: str
    runtime_label: str
    benchmark: str
    task: str
    metric: str
    filter: str
    value: float
    history_mean: float
    history_sd: float
    history_n: int
    z: float
    sigma: float

    def describe(self) -> str:
        """One line: which series, the new value, and the history it fell out of."""
        return (
            f"{self.model_name} [{self.quant}, {self.runtime_label}] {self.task} "
            f"{self.metric},{self.filter}: {self.value:.4g} vs mean {self.history_mean:.4g} "
            f"± {self.history_sd:.2g} over {self.history_n} runs (z = {self.z:+.1f})"
        )


# The reference is the earliest valid run with the same key and fingerprint: comparing with the
# first run (not the latest) keeps slow drift from hiding inside the tolerance step by step.
_REPRO_SQL = """
WITH me AS (
    SELECT run_id, run_key, env_fingerprint, started_at FROM runs WHERE run_id = $1
), ref AS (
    SELECT r.run_id
      FROM runs r, me
     WHERE r.run_key = me.run_key
       AND r.env_fingerprint = me.env_fingerprint
       AND r.run_id <> me.run_id
       AND r.status = 'succeeded'
       AND r.started_at < me.started_at
     ORDER BY r.started_at
     LIMIT 1
)
SELECT s.run_id, ref.run_id AS reference_run_id, s.task, s.metric, s.filter,
       s.value, p.value AS reference_value,
       abs(s.value - p.value) / greatest(abs(s.value), abs(p.value)) AS rel_diff
  FROM ref
  JOIN scores p ON p.run_id = ref.run_id
  JOIN scores s ON s.run_id = $1 AND s.task = p.task AND s.metric = p.metric
               AND s.filter = p.filter
 WHERE s.value <> p.value
   AND abs(s.value - p.value) > $2 * greatest(abs(s.value), abs(p.value))
 ORDER BY s.task, s.metric, s.filter
"""


# One statement: compute each score's history over earlier valid runs of the same series (the
# runs_series_idx index keeps this to the series' own runs), then store it. `z` is signed so
# that negative is always worse: lower-is-better metrics flip the sign.
_CHECK_SQL = """
WITH me AS (
    SELECT run_id, model_name, quant, runtime_label, started_at FROM runs WHERE run_id = $1
), hist AS (
    SELECT s.task, s.metric, s.filter,
           count(*) AS n, avg(s.value) AS mean, stddev_samp(s.value) AS sd
      FROM me
      JOIN runs r ON r.model_name = me.model_name AND r.quant = me.quant
                 AND r.runtime_label = me.runtime_label AND r.status = 'succeeded'
                 AND r.started_at < me.started_at AND r.run_id <> me.run_id
      JOIN scores s ON s.run_id = r.run_id
      JOIN scores mine ON mine.run_id = me.run_id AND mine.task = s.task
                      AND mine.metric = s.metric AND mine.filter = s.filter
     GROUP BY s.task, s.metric, s.filter
), scored AS (
    SELECT s.run_id, s.task, s.metric, s.filter, s.value,
           coalesce(h.n, 0) AS n, h.mean, h.sd,
           CASE WHEN h.sd > 0
                THEN (s.value - h.mean) / h.sd
                     * CASE WHEN s.higher_is_better IS false THEN -1 ELSE 1 END
           END AS z
      FROM scores s
      LEFT JOIN hist h ON h.task = s.task AND h.metric = s.metric AND h.filter = s.filter
     WHERE s.run_id = $1
)
INSERT INTO score_checks (run_id, task, metric, filter, value, history_n, history_mean,
                          history_sd, z, sigma, min_history, is_regression)
SELECT run_id, task, metric, filter, value, n, mean, sd, z, $2::float8, $3::int,
       coalesce(n >= $3::int AND z < -($2::float8), false)
  FROM scored
ON CONFLICT (run_id, task, metric, filter) DO UPDATE
   SET value = EXCLUDED.value, history_n = EXCLUDED.history_n,
       history_mean = EXCLUDED.history_mean, history_sd = EXCLUDED.history_sd,
       z = EXCLUDED.z, sigma = EXCLUDED.sigma, min_history = EXCLUDED.min_history,
       is_regression = EXCLUDED.is_regression, checked_at = now()
"""

_LIST_SQL = """
SELECT run_id, time AS started_at, model_name, quant, runtime_label, benchmark, task, metric,
       filter, value, history_mean, history_sd, history_n, z, sigma
  FROM v_regressions
 WHERE ($1::uuid[] IS NULL OR run_id = ANY ($1::uuid[]))
   AND ($2::timestamptz IS NULL OR time >= $2)
   AND ($3::text IS NULL OR model_name = $3)
 ORDER BY time DESC, model_name, task, metric
 LIMIT $4
"""

_RUN_REGRESSIONS_SQL = """
SELECT c.run_id, r.started_at, r.model_name, r.quant, r.runtime_label, r.benchmark,
       c.task, c.metric, c.filter, c.value, c.history_mean, c.history_sd, c.history_n,
       c.z, c.sigma
  FROM score_checks c JOIN runs r ON r.run_id = c.run_id
 WHERE c.run_id = $1 AND c.is_regression
 ORDER BY c.z
"""

_REGRESSION_FIELDS = [f.name for f in fields(Regression)]


def _regression(r: asyncpg.Record) -> Regression:
    return Regression(**{k: r[k] for k in _REGRESSION_FIELDS})


class CheckQueries(StoreConnection):
    """The store's methods for the repro window, regression checks and run validity."""

    def mark_invalid(self, run_id: uuid.UUID, reason: str) -> None:
        """Set a run's status to ``invalid`` with ``reason`` (left out of history from then on)."""

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE runs SET status = 'invalid', status_reason = $2 WHERE run_id = $1",
                run_id,
                reason,
            )

        self.run(work)

    def repro_differences(self, run_id: uuid.UUID, tolerance: float) -> list[ReproViolation]:
        """Scores of ``run_id`` further than ``tolerance`` from its reference run's.

        The reference is the earliest earlier ``succeeded`` run with the same run key and
        environment fingerprint; the difference is relative to the larger magnitude.
        """

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(_REPRO_SQL, run_id, tolerance)

        return [
            ReproViolation(
                run_id=r["run_id"],
                reference_run_id=r["reference_run_id"],
                task=r["task"],
                metric=r["metric"],
                filter=r["filter"],
                value=r["value"],
                reference_value=r["reference_value"],
                rel_diff=r["rel_diff"],
                tolerance=tolerance,
            )
            for r in self.run(work)
        ]

    def record_repro_violations(
        self, run_id: uuid.UUID, found: Sequence[ReproViolation], *, tag: str
    ) -> None:
        """Replace the run's stored violations with ``found``; tag the run if any, else untag it.

        One transaction: a re-check never leaves old and new violations mixed.
        """

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM repro_violations WHERE run_id = $1", run_id)
                if found:
                    await conn.executemany(
                        "INSERT INTO repro_violations (run_id, reference_run_id, task, metric, "
                        "filter, value, reference_value, rel_diff, tolerance) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        [
                            (
                                v.run_id,
                                v.reference_run_id,
                                v.task,
                                v.metric,
                                v.filter,
                                v.value,
                                v.reference_value,
                                v.rel_diff,
                                v.tolerance,
                            )
                            for v in found
                        ],
                    )
                    await conn.execute(
                        "UPDATE runs SET tags = array_append(tags, $2) "
                        "WHERE run_id = $1 AND NOT ($2 = ANY (tags))",
                        run_id,
                        tag,
                    )
                else:
                    await conn.execute(
                        "UPDATE runs SET tags = array_remove(tags, $2) WHERE run_id = $1",
                        run_id,
                        tag,
                    )

        self.run(work)

    def check_scores(self, run_id: uuid.UUID, sigma: float, min_history: int) -> list[Regression]:
        """Store every score's check against its history; return the run's regressions.

        Args:
            run_id: The run whose scores are checked.
            sigma: How many standard deviations on the worse side make a regression.
            min_history: Fewer earlier valid runs than this never make one.

        Returns:
            The run's regressions, worst first.
        """

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            await conn.execute(_CHECK_SQL, run_id, sigma, min_history)
            return await conn.fetch(_RUN_REGRESSIONS_SQL, run_id)

        return [_regression(r) for r in self.run(work)]

    def recent_regressions(
        self,
        *,
        run_ids: Sequence[uuid.UUID] | None = None,
        since: datetime | None = None,
        model: str | None = None,
        limit: int = 200,
    ) -> list[Regression]:
        """Regressions recorded in ``v_regressions`` (valid runs only), newest first.

        Args:
            run_ids: Only these runs (e.g. a campaign's).
            since: Only runs started at or after this time.
            model: Only this model name.
            limit: At most this many rows.
        """
        ids = list(run_ids) if run_ids is not None else None

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(_LIST_SQL, ids, since, model, limit)

        return [_regression(r) for r in self.run(work)]
