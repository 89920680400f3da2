"""Read queries behind ``evallab results``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from evallab.store.connection import StoreConnection

__all__ = ["ResultQueries", "ResultRow"]


@dataclass(frozen=True)
class ResultRow:
    """One score of one run, with the run's main identity columns."""

    run_id: str
    campaign: str
    model: str
    quant: str
    runtime: str
    benchmark: str
    status: str
    started_at: datetime
    task: str | None
    metric: str | None
    filter: str | None
    value: float | None
    stderr: float | None
    n: int | None

    def as_json(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["started_at"] = self.started_at.isoformat()
        return d


class ResultQueries(StoreConnection):
    """Reads behind ``evallab results``."""

    def recent_results(
        self,
        *,
        model: str | None = None,
        task: str | None = None,
        campaign: str | None = None,
        limit_runs: int = 20,
    ) -> list[ResultRow]:
        """Scores of the most recent runs matching the filters (runs without scores included)."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                """
            WITH picked AS (
                SELECT r.run_id
                FROM runs r JOIN campaigns c USING (campaign_id)
                WHERE ($1::text IS NULL OR r.model_name = $1)
                  AND ($3::text IS NULL OR c.name = $3)
                  AND ($2::text IS NULL OR $2 = ANY(r.tasks))
                ORDER BY r.started_at DESC
                LIMIT $4
            )
            SELECT r.run_id::text, c.name AS campaign, r.model_name, r.quant, r.runtime_label,
                   r.benchmark, r.status, r.started_at, s.task, s.metric, s.filter, s.value,
                   s.stderr, s.n
            FROM picked p
            JOIN runs r USING (run_id)
            JOIN campaigns c USING (campaign_id)
            LEFT JOIN scores s ON s.run_id = r.run_id AND ($2::text IS NULL OR s.task = $2)
            ORDER BY r.started_at DESC, s.task, s.metric, s.filter
            """,
                model,
                task,
                campaign,
                limit_runs,
            )

        return [ResultRow(*r.values()) for r in self.run(work)]
