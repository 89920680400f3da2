"""Queries for comparisons between runs: selecting runs, their outcomes, scores and provenance.

The methods return plain dataclasses (:class:`RunRef`, :class:`OutcomeSet`,
:class:`ScoreValue`, :class:`CampaignRef`); the statistics built on them live in
:mod:`evallab.analysis`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import numpy.typing as npt

from evallab.store.connection import StoreConnection
from evallab.store.outcome_sets import unpack_digests

__all__ = [
    "PROVENANCE_FIELDS",
    "AnalysisQueries",
    "CampaignRef",
    "OutcomeSet",
    "RunRef",
    "ScoreValue",
    "run_ref",
]

#: Provenance columns of ``runs`` that ``evallab diff`` compares, in display order.
PROVENANCE_FIELDS = (
    "benchmark",
    "model_name",
    "model_source",
    "model_id",
    "model_revision",
    "model_sha256",
    "pinned",
    "quant",
    "weights_sha256",
    "model_provenance",
    "runtime",
    "runtime_label",
    "runtime_version",
    "runtime_commit",
    "runtime_command",
    "runtime_extra",
    "harness",
    "harness_version",
    "harness_commit",
    "tasks",
    "tasks_commit",
    "tasks_sha256",
    "dataset_revisions",
    "task_hashes",
    "seed",
    "num_fewshot",
    "sample_limit",
    "generation_config",
    "lab_version",
    "lab_commit",
    "env_fingerprint",
    "python_version",
    "torch_version",
    "hostname",
    "gpu_name",
    "gpu_driver",
    "cuda_version",
    "status",
    "status_reason",
    "tags",
    "run_key",
    "raw_sha256",
)
_JSONB_FIELDS = {
    "dataset_revisions",
    "task_hashes",
    "generation_config",
    "model_provenance",
    "runtime_extra",
}

_RUN_COLUMNS = """
    r.run_id, r.campaign_id, c.name AS campaign, r.benchmark, r.model_name, r.quant, r.runtime,
    r.runtime_label, r.status, r.status_reason, r.started_at, r.raw_path, r.samples_per_min
"""
_RUNS = f"SELECT {_RUN_COLUMNS} FROM runs r JOIN campaigns c USING (campaign_id)"

# Selector key -> the condition it puts on runs r JOIN campaigns c (``$n`` is its parameter).
_FILTERS = {
    "model": "r.model_name = ${n}",
    "benchmark": "r.benchmark = ${n}",
    "quant": "r.quant = ${n}",
    "runtime": "(r.runtime = ${n} OR r.runtime_label = ${n})",
    "campaign": "(c.name = ${n} OR c.campaign_id::text LIKE ${n} || '%')",
}


@dataclass(frozen=True)
class RunRef:
    """The identity of one run, enough to label it and find its raw outputs."""

    run_id: UUID
    campaign_id: UUID
    campaign: str
    benchmark: str
    model: str
    quant: str
    runtime: str
    runtime_label: str
    status: str
    status_reason: str
    started_at: datetime
    raw_path: str
    samples_per_min: float | None = None

    @property
    def short_id(self) -> str:
        """First 8 hex digits of the run id."""
        return str(self.run_id)[:8]

    @property
    def combo(self) -> str:
        """``model[@quant] / runtime``: the column a run belongs to in a matrix."""
        quant = f"@{self.quant}" if self.quant and self.quant != "none" else ""
        return f"{self.model}{quant} / {self.runtime_label}"

    @property
    def label(self) -> str:
        """Human label: ``model[@quant] / runtime / benchmark (short id)``."""
        return f"{self.combo} / {self.benchmark} ({self.short_id})"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["run_id"] = str(self.run_id)
        d["campaign_id"] = str(self.campaign_id)
        d["started_at"] = self.started_at.isoformat()
        d["label"] = self.label
        return d


def run_ref(row: Mapping[str, Any] | asyncpg.Record) -> RunRef:
    """A :class:`RunRef` from a row holding the run identity columns (``_RUN_COLUMNS``)."""
    return RunRef(
        run_id=row["run_id"],
        campaign_id=row["campaign_id"],
        campaign=row["campaign"],
        benchmark=row["benchmark"],
        model=row["model_name"],
        quant=row["quant"],
        runtime=row["runtime"],
        runtime_label=row["runtime_label"],
        status=row["status"],
        status_reason=row["status_reason"],
        started_at=row["started_at"],
        raw_path=row["raw_path"],
        # Absent from rows of callers that select only the identity columns of older versions.
        samples_per_min=row.get("samples_per_min"),
    )


@dataclass(frozen=True)
class CampaignRef:
    """One execution of a campaign."""

    campaign_id: UUID
    name: str


@dataclass(frozen=True)
class OutcomeSet:
    """One run's per-document outcomes on one (task, metric, filter), in stored order."""

    run_id: UUID
    task: str
    metric: str
    filter: str
    doc_ids: npt.NDArray[np.int64]
    doc_hashes: npt.NDArray[np.void]
    """32-byte digests, comparable element-wise."""
    values: npt.NDArray[np.float64]


@dataclass(frozen=True)
class ScoreValue:
    """One aggregate score of one run."""

    run_id: UUID
    task: str
    metric: str
    filter: str
    value: float
    stderr: float | None
    n: int
    higher_is_better: bool | None


def _decoded(name: str, value: object) -> object:
    # jsonb arrives as text unless codecs are registered: hand callers the decoded object.
    if name in _JSONB_FIELDS and isinstance(value, str):
        return json.loads(value)
    return value


class AnalysisQueries(StoreConnection):
    """The store's methods for comparisons between runs (selectors, outcomes, matrices)."""

    def has_runs(self) -> bool:
        """Whether the database holds any run at all."""

        async def work(conn: asyncpg.Connection) -> bool:
            return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM runs)"))

        return self.run(work)

    def runs_with_id_prefix(self, prefix: str) -> list[RunRef]:
        """Runs whose id starts with ``prefix`` (lower-case hex and dashes), newest first."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                f"{_RUNS} WHERE r.run_id::text LIKE $1 ORDER BY r.started_at DESC", prefix + "%"
            )

        return [run_ref(r) for r in self.run(work)]

    def runs_matching(self, filters: Sequence[tuple[str, str]]) -> list[RunRef]:
        """Runs matching every ``(key, value)`` selector filter, newest first.

        Args:
            filters: Keys ``model``, ``benchmark``, ``quant``, ``runtime`` (name or label) and
                ``campaign`` (name or campaign-id prefix); at least one.

        Raises:
            ValueError: an unknown key, or no filter.
        """
        if not filters:
            raise ValueError("runs_matching needs at least one filter")
        where: list[str] = []
        args: list[str] = []
        for key, value in filters:
            if key not in _FILTERS:
                raise ValueError(f"unknown selector key {key!r}")
            args.append(value)
            where.append(_FILTERS[key].format(n=len(args)))
        sql = f"{_RUNS} WHERE {' AND '.join(where)} ORDER BY r.started_at DESC"

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(sql, *args)

        return [run_ref(r) for r in self.run(work)]

    def runs_of_campaigns(self, campaign_ids: Sequence[UUID]) -> list[RunRef]:
        """Every run of these campaign executions, newest first."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                f"{_RUNS} WHERE r.campaign_id = ANY($1::uuid[]) ORDER BY r.started_at DESC",
                list(campaign_ids),
            )

        return [run_ref(r) for r in self.run(work)]

    def campaigns_named(self, name: str) -> list[CampaignRef]:
        """Every execution of the campaign called ``name``, first started first."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                "SELECT campaign_id, name FROM campaigns WHERE name = $1 ORDER BY started_at", name
            )

        return [CampaignRef(r["campaign_id"], r["name"]) for r in self.run(work)]

    def campaigns_with_id_prefix(self, prefix: str) -> list[CampaignRef]:
        """Campaign executions whose id starts with ``prefix`` (lower-case)."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                "SELECT campaign_id, name FROM campaigns WHERE campaign_id::text LIKE $1 || '%'",
                prefix,
            )

        return [CampaignRef(r["campaign_id"], r["name"]) for r in self.run(work)]

    def campaign_names(self) -> list[str]:
        """The distinct names of recorded campaigns (unordered)."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch("SELECT DISTINCT name FROM campaigns")

        return [r["name"] for r in self.run(work)]

    def outcomes_for(self, run_ids: Sequence[UUID]) -> list[OutcomeSet]:
        """The per-document outcome sets of these runs (one per run, task, metric and filter).

        Reads the stored array sets directly (one row per task and metric, not one per document).
        """

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                """
                SELECT run_id, task, metric, filter, doc_ids AS ids, doc_hashes AS hashes,
                       "values" AS vals
                FROM sample_outcome_sets WHERE run_id = ANY($1::uuid[])
                """,
                list(run_ids),
            )

        return [
            OutcomeSet(
                run_id=r["run_id"],
                task=r["task"],
                metric=r["metric"],
                filter=r["filter"],
                doc_ids=np.asarray(r["ids"], dtype=np.int64),
                doc_hashes=unpack_digests(r["hashes"]),
                values=np.asarray(r["vals"], dtype=np.float64),
            )
            for r in self.run(work)
        ]

    def higher_is_better(self, run_ids: Sequence[UUID]) -> dict[tuple[str, str, str], bool]:
        """Per (task, metric, filter) of these runs' scores: is higher better (unknown: yes)."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                "SELECT task, metric, filter, bool_and(higher_is_better) AS hib FROM scores "
                "WHERE run_id = ANY($1::uuid[]) GROUP BY task, metric, filter",
                list(run_ids),
            )

        return {
            (r["task"], r["metric"], r["filter"]): r["hib"] is not False for r in self.run(work)
        }

    def scores_of(self, run_ids: Sequence[UUID]) -> list[ScoreValue]:
        """These runs' aggregate scores, ordered by task, metric and filter."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                "SELECT run_id, task, metric, filter, value, stderr, n, higher_is_better "
                "FROM scores WHERE run_id = ANY($1::uuid[]) ORDER BY task, metric, filter",
                list(run_ids),
            )

        return [ScoreValue(*r.values()) for r in self.run(work)]

    def run_provenance(self, run_id: UUID) -> dict[str, object]:
        """The run's :data:`PROVENANCE_FIELDS` (jsonb columns decoded), by column name.

        Raises:
            LookupError: no run has this id.
        """
        cols = ", ".join(PROVENANCE_FIELDS)

        async def work(conn: asyncpg.Connection) -> asyncpg.Record | None:
            return await conn.fetchrow(f"SELECT {cols} FROM runs WHERE run_id = $1", run_id)

        row = self.run(work)
        if row is None:
            raise LookupError(f"no run {run_id}")
        return {name: _decoded(name, row[name]) for name in PROVENANCE_FIELDS}
