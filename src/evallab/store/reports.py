"""Queries for the static leaderboard site: every run with its scores, canary and telemetry.

The site (:mod:`evallab.report`) reads the whole history at once; these methods return plain
dataclasses (a run's columns as a dict) so templates and charts never see database records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from evallab.store.analysis import ScoreValue
from evallab.store.connection import StoreConnection
from evallab.store.ingest import register_codecs

__all__ = [
    "CanarySummary",
    "ReportQueries",
    "SiteRun",
    "TelemetryPoint",
    "TelemetrySummary",
]


@dataclass
class SiteRun:
    """A run as the site shows it: every column of ``runs`` plus its campaign's name."""

    columns: dict[str, Any]
    """Column name -> value (``campaign`` is the campaign's name; jsonb columns decoded)."""
    scores: list[ScoreValue] = field(default_factory=list)
    """Its scores, ordered by task, metric and filter."""


@dataclass(frozen=True)
class CanarySummary:
    """A run's canary rows, counted."""

    prompts: int
    matched: int
    drifted: int
    baseline: int
    version: str


@dataclass(frozen=True)
class TelemetryPoint:
    """One GPU-0 sample, as charted."""

    ts: datetime
    temperature_c: float | None
    power_w: float | None


@dataclass
class TelemetrySummary:
    """A run's telemetry: aggregates over all its GPUs, and one GPU's thinned series.

    The series is of the run's first GPU (``series_gpu``, the lowest NVML index it used).
    """

    samples: int
    gpus: int
    max_temp: float | None
    mean_temp: float | None
    mean_power: float | None
    max_power: float | None
    max_mem: float | None
    mean_util: float | None
    other_processes: int | None
    throttle: list[str]
    series: list[TelemetryPoint] = field(default_factory=list)
    series_gpu: int = 0


class ReportQueries(StoreConnection):
    """The store's methods for the static leaderboard site."""

    def site_runs(self) -> list[SiteRun]:
        """Every run with its scores, oldest first (by start time, then run id)."""

        async def work(conn: asyncpg.Connection) -> list[SiteRun]:
            # Decoded jsonb: provenance shows configs as sorted JSON whoever opened the store.
            await register_codecs(conn)
            rows = await conn.fetch(
                """
                SELECT r.*, c.name AS campaign
                FROM runs r JOIN campaigns c USING (campaign_id)
                ORDER BY r.started_at, r.run_id
                """
            )
            runs = {r["run_id"]: SiteRun(dict(r)) for r in rows}
            for s in await conn.fetch(
                "SELECT run_id, task, metric, filter, value, stderr, n, higher_is_better "
                "FROM scores ORDER BY task, metric, filter"
            ):
                runs[s["run_id"]].scores.append(ScoreValue(**dict(s)))
            return list(runs.values())

        return self.run(work)

    def canary_summaries(self) -> dict[UUID, CanarySummary]:
        """Per run with canary rows: how many prompts matched, drifted or set the baseline."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                """
                SELECT run_id, count(*) AS prompts,
                       count(*) FILTER (WHERE matches_baseline) AS matched,
                       count(*) FILTER (WHERE matches_baseline = false) AS drifted,
                       count(*) FILTER (WHERE is_baseline) AS baseline,
                       max(canary_version) AS version
                FROM canaries WHERE run_id IS NOT NULL GROUP BY run_id
                """
            )

        return {
            r["run_id"]: CanarySummary(
                r["prompts"], r["matched"], r["drifted"], r["baseline"], r["version"]
            )
            for r in self.run(work)
        }

    def telemetry_summaries(self) -> dict[UUID, TelemetrySummary]:
        """Per run with telemetry: aggregates, and ~400 evenly spaced points of its first GPU.

        The first GPU is the lowest index the run used, so a run on GPU 1 alone has a series too.
        """

        async def work(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], ...]:
            summary = await conn.fetch(
                """
                SELECT run_id, count(*) AS samples, count(DISTINCT gpu_index) AS gpus,
                       max(temperature_c) AS max_temp, avg(temperature_c) AS mean_temp,
                       avg(power_w) AS mean_power, max(power_w) AS max_power,
                       max(memory_used_mb) AS max_mem, avg(utilization_pct) AS mean_util,
                       max(other_processes) AS other_processes,
                       (SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}')
                        FROM telemetry t2, unnest(t2.throttle_reasons) x
                        WHERE t2.run_id = t.run_id) AS throttle
                FROM telemetry t GROUP BY run_id
                """
            )
            series = await conn.fetch(
                """
                SELECT run_id, gpu_index, ts, temperature_c, power_w FROM (
                    SELECT run_id, gpu_index, ts, temperature_c, power_w,
                           min(gpu_index) OVER (PARTITION BY run_id) AS first_gpu,
                           row_number() OVER (PARTITION BY run_id, gpu_index ORDER BY ts) AS i,
                           count(*) OVER (PARTITION BY run_id, gpu_index) AS n
                    FROM telemetry
                ) s WHERE gpu_index = first_gpu AND (i - 1) % greatest(1, n / 400) = 0
                ORDER BY run_id, ts
                """
            )
            return summary, series

        summary, series = self.run(work)
        out: dict[UUID, TelemetrySummary] = {}
        for r in summary:
            values = dict(r)
            run_id = values.pop("run_id")
            out[run_id] = TelemetrySummary(**{**values, "throttle": list(values["throttle"])})
        for p in series:
            out[p["run_id"]].series_gpu = p["gpu_index"]
            out[p["run_id"]].series.append(
                TelemetryPoint(p["ts"], p["temperature_c"], p["power_w"])
            )
        return out

    def campaign_names_by_recency(self) -> list[str]:
        """Campaign names, the one with the latest start first."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                "SELECT name, max(started_at) AS last FROM campaigns GROUP BY name "
                "ORDER BY last DESC"
            )

        return [r["name"] for r in self.run(work)]
