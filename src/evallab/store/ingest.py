"""Write a finished run into PostgreSQL: one transaction, COPY for the bulk rows, idempotent.

Re-ingesting the same ``run_id`` replaces its rows instead of duplicating them, so a retry after a
lost connection is always safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import pyarrow as pa

from evallab.errors import DatabaseError
from evallab.harnesses.base import SampleOutcome, ScoreRow
from evallab.store.outcome_sets import SET_COLUMNS, copy_stream, outcome_sets
from evallab.store.records import CampaignRecord, RunRecord
from evallab.telemetry.sampler import TELEMETRY_COLUMNS

__all__ = [
    "finish_campaign",
    "ingest_run",
    "insert_campaign",
    "outcomes_table",
    "register_codecs",
]

_JSONB_COLUMNS = {
    "generation_config",
    "dataset_revisions",
    "task_hashes",
    "model_provenance",
    "runtime_extra",
    "spec",
}


async def register_codecs(conn: asyncpg.Connection) -> None:
    """Let asyncpg encode/decode jsonb as Python objects."""
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _upsert_sql(table: str, columns: Sequence[str], key: str) -> str:
    cols = ", ".join(columns)
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
    return (
        f"INSERT INTO {table} ({cols}) VALUES ({params}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


async def insert_campaign(conn: asyncpg.Connection, rec: CampaignRecord) -> None:
    """Insert (or update) a campaign row."""
    await register_codecs(conn)
    cols = list(rec.__dataclass_fields__)
    await conn.execute(
        _upsert_sql("campaigns", cols, "campaign_id"), *[getattr(rec, c) for c in cols]
    )


async def finish_campaign(conn: asyncpg.Connection, rec: CampaignRecord) -> None:
    """Record a campaign's end status, reason and time."""
    await conn.execute(
        "UPDATE campaigns SET status = $2, finished_at = $3, status_reason = $4 "
        "WHERE campaign_id = $1",
        rec.campaign_id,
        rec.status,
        rec.finished_at,
        rec.status_reason,
    )


def _score_records(run: RunRecord, scores: Iterable[ScoreRow]) -> list[tuple[Any, ...]]:
    return [
        (
            run.run_id,
            s.task,
            s.metric,
            s.filter,
            float(s.value),
            s.stderr,
            int(s.n),
            s.higher_is_better,
        )
        for s in scores
    ]


OUTCOME_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("doc_id", pa.int64()),
        ("doc_hash", pa.string()),
        ("metric", pa.string()),
        ("filter", pa.string()),
        ("value", pa.float64()),
    ]
)


def outcomes_table(outcomes: Sequence[SampleOutcome] | pa.Table) -> pa.Table:
    """Per-document outcomes as a columnar table (what is written to ``outcomes.parquet``)."""
    if isinstance(outcomes, pa.Table):
        return outcomes.select(OUTCOME_SCHEMA.names).cast(OUTCOME_SCHEMA)
    return pa.table(
        {
            "task": [o.task for o in outcomes],
            "doc_id": [int(o.doc_id) for o in outcomes],
            "doc_hash": [o.doc_hash for o in outcomes],
            "metric": [o.metric for o in outcomes],
            "filter": [o.filter for o in outcomes],
            "value": [float(o.value) for o in outcomes],
        },
        schema=OUTCOME_SCHEMA,
    )


async def ingest_run(
    conn: asyncpg.Connection,
    run: RunRecord,
    scores: Sequence[ScoreRow] = (),
    outcomes: Sequence[SampleOutcome] | pa.Table = (),
    telemetry: Sequence[tuple[Any, ...]] = (),
) -> None:
    """Write a run row and its scores, outcomes and telemetry in one transaction.

    Args:
        conn: An open connection.
        run: The run row (inserted or replaced).
        scores: Aggregate scores (replaced).
        outcomes: Per-sample outcomes (replaced).
        telemetry: Rows for ``telemetry`` in its column order after ``run_id`` (replaced).

    Raises:
        DatabaseError: the database refused the rows or went away; nothing was written.
        StorageError: an outcome can't be stored as given; nothing was written.
    """
    columns = RunRecord.columns()
    rows = outcomes_table(outcomes)
    # Built (and validated) before anything is written.
    sets = outcome_sets(run.run_id, rows) if rows.num_rows else None
    try:
        await register_codecs(conn)
        async with conn.transaction():
            await conn.execute(_upsert_sql("runs", columns, "run_id"), *run.values())
            # Replace, don't append: re-ingesting a run must never duplicate its rows.
            for table in ("scores", "sample_outcome_sets", "telemetry"):
                await conn.execute(f"DELETE FROM {table} WHERE run_id = $1", run.run_id)
            if scores:
                await conn.copy_records_to_table(
                    "scores",
                    records=_score_records(run, scores),
                    columns=[
                        "run_id",
                        "task",
                        "metric",
                        "filter",
                        "value",
                        "stderr",
                        "n",
                        "higher_is_better",
                    ],
                )
            if sets is not None:
                await conn.copy_to_table(
                    "sample_outcome_sets",
                    source=copy_stream(sets),
                    format="binary",
                    columns=list(SET_COLUMNS),
                )
            if telemetry:
                await conn.copy_records_to_table(
                    "telemetry",
                    records=[(run.run_id, *row) for row in telemetry],
                    columns=list(TELEMETRY_COLUMNS),
                )
    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
        raise DatabaseError(
            f"ingest of run {run.run_id} failed and was rolled back: {type(exc).__name__}: {exc}",
            value=run.run_id,
            fix="the raw outputs are kept on disk; fix the database and re-run the campaign "
            "(finished runs are skipped) or `evallab ingest` the run folder",
        ) from exc
