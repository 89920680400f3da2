"""Validity, reproducibility and regression rules applied to every run.

* :func:`judge_run_validity` — telemetry rules: sustained over-temperature, slowdown throttle
  reasons, another process on the run's GPU. A reason means the run is ``invalid``.
* :func:`find_repro_violations` — a run whose ``run_key`` (pins + config + environment
  fingerprint) equals an earlier valid run's must reproduce its scores within a tolerance.
* :func:`find_regressions` — a score more than ``sigma`` standard deviations worse than the mean
  of its (model, quant, runtime, task, metric, filter) history over earlier valid runs.

The database functions record what they find (``repro_violations``, ``score_checks`` and run
tags), so dashboards and alerts read stored rows instead of recomputing statistics.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from evallab.spec import ChecksSpec
from evallab.telemetry import SLOWDOWN_REASONS, TelemetryRow

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "NON_REPRODUCIBLE_TAG",
    "CampaignGuard",
    "Regression",
    "ReproViolation",
    "find_regressions",
    "find_repro_violations",
    "judge_run_validity",
    "list_regressions",
    "mark_invalid",
]

NON_REPRODUCIBLE_TAG = "non_reproducible"
_UNSET: Any = object()


class ChecksSpecHolder(Protocol):
    """What :class:`CampaignGuard` reads from a campaign spec."""

    @property
    def checks(self) -> ChecksSpec: ...

    @property
    def seed(self) -> int: ...

    @property
    def benchmarks(self) -> Any: ...


# ------------------------------------------------------------------------------ validity rules


def _over_temperature(rows: Sequence[TelemetryRow], limit_c: float, window_s: float) -> str | None:
    start: TelemetryRow | None = None
    peak = float("-inf")
    for row in sorted(rows, key=lambda r: r.ts):
        temp = row.temperature_c
        if temp is None or temp <= limit_c:
            # The rule wants the heat *sustained*: any cooler sample restarts the window.
            start, peak = None, float("-inf")
            continue
        if start is None:
            start = row
        peak = max(peak, temp)
        held = (row.ts - start.ts).total_seconds()
        if held >= window_s:
            return (
                f"GPU {row.gpu_index} temperature above {limit_c:g} °C for {held:.0f} s "
                f"(limit {window_s:g} s), peak {peak:g} °C from {start.ts.isoformat()}"
            )
    return None


def _throttled(rows: Sequence[TelemetryRow]) -> str | None:
    seen: dict[str, datetime] = {}
    for row in rows:
        for reason in row.throttle_reasons:
            if reason in SLOWDOWN_REASONS and reason not in seen:
                seen[reason] = row.ts
    if not seen:
        return None
    first = min(seen.values())
    return f"GPU throttled ({', '.join(sorted(seen))}) first at {first.isoformat()}"


def _foreign_processes(rows: Sequence[TelemetryRow]) -> str | None:
    pids: set[int] = set()
    count = 0
    first: datetime | None = None
    for row in rows:
        if row.other_processes > 0:
            pids.update(row.other_pids)
            count = max(count, row.other_processes)
            first = row.ts if first is None else min(first, row.ts)
    if first is None:
        return None
    who = f"pids {', '.join(map(str, sorted(pids)))}" if pids else f"{count} process(es)"
    return f"another process used the run's GPU ({who}) first at {first.isoformat()}"


def judge_run_validity(rows: Sequence[TelemetryRow], checks: ChecksSpec) -> str | None:
    """Apply the validity rules to a run's telemetry.

    Args:
        rows: The run's telemetry samples (any order).
        checks: Thresholds (``max_temperature_c``, ``temperature_window_s``).

    Returns:
        Why the run is invalid (every rule that fired, ``; ``-joined), or None when it is valid.
    """
    reasons = [
        r
        for r in (
            _over_temperature(rows, checks.max_temperature_c, checks.temperature_window_s),
            _throttled(rows),
            _foreign_processes(rows),
        )
        if r
    ]
    return "; ".join(reasons) or None


async def mark_invalid(conn: asyncpg.Connection, run_id: uuid.UUID, reason: str) -> None:
    """Set a run's status to ``invalid`` with ``reason`` (excluded from history from then on)."""
    await conn.execute(
        "UPDATE runs SET status = 'invalid', status_reason = $2 WHERE run_id = $1", run_id, reason
    )


# --------------------------------------------------------------------------- repro window


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


async def find_repro_violations(
    conn: asyncpg.Connection, run_id: uuid.UUID, tolerance: float
) -> list[ReproViolation]:
    """Compare a run with the earliest valid run of the same ``run_key``; record differences.

    Scores are compared relative to the larger magnitude of the two (``|a-b| / max(|a|,|b|)``),
    so 0.5 % means 0.5 % of the score whichever run is larger. Violations are stored in
    ``repro_violations`` and the run is tagged ``non_reproducible`` (it stays valid: the numbers
    are real, just not deterministic).

    Args:
        conn: An open connection.
        run_id: The run just ingested.
        tolerance: Allowed relative difference (0.005 = 0.5 %).

    Returns:
        One violation per differing (task, metric, filter); empty when the run reproduces or has
        no earlier twin.
    """
    rows = await conn.fetch(_REPRO_SQL, run_id, tolerance)
    found = [
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
        for r in rows
    ]
    async with conn.transaction():
        await conn.execute("DELETE FROM repro_violations WHERE run_id = $1", run_id)
        if found:
            await conn.executemany(
                "INSERT INTO repro_violations (run_id, reference_run_id, task, metric, filter, "
                "value, reference_value, rel_diff, tolerance) "
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
                NON_REPRODUCIBLE_TAG,
            )
        else:
            await conn.execute(
                "UPDATE runs SET tags = array_remove(tags, $2) WHERE run_id = $1",
                run_id,
                NON_REPRODUCIBLE_TAG,
            )
    return found


# ------------------------------------------------------------------------------ regressions


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


def _regression(r: asyncpg.Record) -> Regression:
    return Regression(**{k: r[k] for k in Regression.__dataclass_fields__})


async def find_regressions(
    conn: asyncpg.Connection, run_id: uuid.UUID, checks: ChecksSpec
) -> list[Regression]:
    """Check every score of a run against its history, store the result, return regressions.

    History is the same (model, quant, runtime label, task, metric, filter) over earlier runs
    with status ``succeeded`` (invalid runs never count). A score regresses when at least
    ``checks.regression_min_history`` such runs exist and it lies more than
    ``checks.regression_sigma`` standard deviations on the worse side of their mean.

    Args:
        conn: An open connection.
        run_id: The run just ingested (its status decides nothing here; a later invalidation
            removes its regressions from ``v_regressions``).
        checks: Thresholds.

    Returns:
        The run's regressions, worst first.
    """
    await conn.execute(_CHECK_SQL, run_id, checks.regression_sigma, checks.regression_min_history)
    rows = await conn.fetch(
        """
        SELECT c.run_id, r.started_at, r.model_name, r.quant, r.runtime_label, r.benchmark,
               c.task, c.metric, c.filter, c.value, c.history_mean, c.history_sd, c.history_n,
               c.z, c.sigma
          FROM score_checks c JOIN runs r ON r.run_id = c.run_id
         WHERE c.run_id = $1 AND c.is_regression
         ORDER BY c.z
        """,
        run_id,
    )
    return [_regression(r) for r in rows]


async def list_regressions(
    conn: asyncpg.Connection,
    *,
    run_ids: Sequence[uuid.UUID] | None = None,
    since: datetime | None = None,
    model: str | None = None,
    limit: int = 200,
) -> list[Regression]:
    """Regressions recorded in ``v_regressions`` (valid runs only), newest first.

    Args:
        conn: An open connection.
        run_ids: Only these runs (e.g. a campaign's).
        since: Only runs started at or after this time.
        model: Only this model name.
        limit: At most this many rows.
    """
    rows = await conn.fetch(
        _LIST_SQL, list(run_ids) if run_ids is not None else None, since, model, limit
    )
    return [_regression(r) for r in rows]


# ------------------------------------------------------------------------ runner integration


class _SampledHarness:
    """Wraps a harness so every ``run`` call (retries included) is sampled by NVML."""

    def __init__(self, inner: Any, guard: CampaignGuard) -> None:
        self._inner = inner
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def run(self, request: Any) -> Any:
        with self._guard.sampler() as rows:
            try:
                return self._inner.run(request)
            finally:
                self._guard.rows.extend(rows)


class CampaignGuard:
    """The checks a campaign runs around its runtime sessions and benchmarks.

    The runner calls, in order: :meth:`start_session` after a runtime starts (canary + version
    snapshot), :meth:`before_benchmark` (versions re-checked), :meth:`wrap` on the harness
    (telemetry), :meth:`judge` before ingest (validity + tags), :meth:`after_ingest` (repro
    window and regressions; notes for the end-of-run summary).

    Args:
        spec: The campaign.
        dsn: Results database.
        campaign_id: The campaign's id (canary rows belong to it).
        gpu_name: GPU name recorded with canary baselines.
        nvml: NVML backend; the real one (or None on CPU machines) when not given.
    """

    def __init__(
        self,
        spec: ChecksSpecHolder,
        dsn: str,
        campaign_id: uuid.UUID,
        *,
        gpu_name: str = "",
        nvml: Any = _UNSET,
    ) -> None:
        from evallab.pins import snapshot_versions
        from evallab.telemetry import open_nvml

        self.spec = spec
        self.checks: ChecksSpec = spec.checks
        self.dsn = dsn
        self.campaign_id = campaign_id
        self.gpu_name = gpu_name
        self.nvml = open_nvml() if nvml is _UNSET else nvml
        self.harness_names = sorted({b.harness for b in spec.benchmarks})
        self.baseline = snapshot_versions(self.harness_names, gpu=self._gpu_source())
        self.session_snapshot = self.baseline
        self.session_tags: list[str] = []
        self.rows: list[TelemetryRow] = []
        self.notes: list[str] = []

    def _gpu_source(self) -> Any:
        # Without NVML there is no GPU identity to compare: an empty one on both sides.
        from evallab.environment import GpuIdentity

        class _NoGpu:
            def gpu_identity(self, index: int = 0) -> GpuIdentity:
                return GpuIdentity()

        return self.nvml if self.nvml is not None else _NoGpu()

    def start_session(self, session: Any, model: Any) -> None:
        """Canary the new session and snapshot the runtime version it reports."""
        from evallab.canary import run_canary
        from evallab.pins import VersionSnapshot, recheck_versions, running_runtime

        recheck_versions(self.baseline, session=None, gpu=self._gpu_source())
        self.session_snapshot = VersionSnapshot(
            self.baseline.gpu, self.baseline.harnesses, running_runtime(session)
        )
        result = run_canary(
            session,
            model,
            dsn=self.dsn,
            campaign_id=self.campaign_id,
            policy=self.checks.canary,
            seed=self.spec.seed,
            gpu_name=self.gpu_name,
        )
        self.session_tags = result.tags if result is not None else []
        if result is not None and result.status == "drift":
            self.notes.append(
                f"canary drift tolerated (checks.canary: warn) for {model.name} on "
                f"{session.info.label}: {'; '.join(result.details)}"
            )

    def before_benchmark(self, session: Any) -> None:
        """Stop the campaign if the driver, CUDA, harness or runtime version changed."""
        from evallab.pins import recheck_versions

        recheck_versions(self.session_snapshot, session=session, gpu=self._gpu_source())
        self.rows = []

    def sampler(self) -> Any:
        """A telemetry sampler for the current run."""
        from evallab.telemetry import TelemetrySampler

        return TelemetrySampler(self.nvml, interval_s=self.checks.telemetry_interval_s)

    def wrap(self, harness: Any) -> Any:
        """The harness, sampled by NVML while it runs."""
        return _SampledHarness(harness, self)

    def judge(self) -> tuple[str | None, list[str]]:
        """(invalid reason or None, tags) for the run just finished."""
        return judge_run_validity(self.rows, self.checks), list(self.session_tags)

    def telemetry_records(self) -> list[tuple[Any, ...]]:
        """The run's telemetry rows in ``telemetry`` column order (after ``run_id``)."""
        return [r.as_record() for r in self.rows]

    def after_ingest(self, run_id: uuid.UUID, status: str) -> list[str]:
        """Repro window and regression checks for a stored run; returns note lines."""
        if status != "succeeded":
            return []
        from evallab.store.db import connect, run_sync

        async def _go() -> list[str]:
            conn = await connect(self.dsn)
            try:
                repro = await find_repro_violations(conn, run_id, self.checks.repro_tolerance)
                regs = await find_regressions(conn, run_id, self.checks)
            finally:
                await conn.close()
            lines = [f"non-reproducible: {v.describe()}" for v in repro]
            lines += [f"regression: {r.describe()}" for r in regs]
            return lines

        lines = run_sync(_go())
        self.notes.extend(lines)
        return lines

    def close(self) -> None:
        """Release NVML."""
        if self.nvml is not None:
            self.nvml.close()
