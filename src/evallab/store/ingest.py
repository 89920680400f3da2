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
import pyarrow.compute as pc

from evallab.errors import DatabaseError, StorageError
from evallab.harnesses.base import SampleOutcome, ScoreRow
from evallab.store.records import CampaignRecord, RunRecord
from evallab.telemetry import TELEMETRY_COLUMNS

__all__ = [
    "finish_campaign",
    "ingest_run",
    "insert_campaign",
    "outcomes_table",
    "register_codecs",
]

_JSONB_COLUMNS = {"generation_config", "dataset_revisions", "task_hashes", "spec"}


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
    """Record a campaign's end status and time."""
    await conn.execute(
        "UPDATE campaigns SET status = $2, finished_at = $3 WHERE campaign_id = $1",
        rec.campaign_id,
        rec.status,
        rec.finished_at,
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


def _braced(joined: pa.Array) -> list[str]:
    return ["{" + text + "}" for text in joined.to_pylist()]


def _outcome_sets(table: pa.Table) -> list[list[str]]:
    """Group outcomes by (task, metric, filter) into columns of array literals.

    Built with vectorised Arrow kernels and parsed by PostgreSQL in one statement: several times
    faster than encoding hundreds of thousands of Python objects one by one.

    Returns:
        Six parallel columns: task, metric, filter, ids literal, joined hashes, values literal.

    Raises:
        StorageError: a document hash is empty or holds a comma (they are stored joined by commas).
    """
    if table.num_rows == 0:
        return [[] for _ in range(6)]
    hashes = table.column("doc_hash")
    if (
        pc.any(pc.match_substring(hashes, ",")).as_py()
        or pc.any(pc.equal(pc.utf8_length(hashes), 0)).as_py()
    ):
        bad = (
            table.filter(
                pc.or_(pc.match_substring(hashes, ","), pc.equal(pc.utf8_length(hashes), 0))
            )
            .slice(0, 1)
            .to_pylist()[0]
        )
        raise StorageError(
            "a document hash is empty or holds a comma, which the outcome store can't keep",
            value=f"{bad['task']}/{bad['metric']} doc {bad['doc_id']}: {bad['doc_hash']!r}",
            fix="use hex digests for doc_hash (the harnesses' sha256 hex does)",
        )
    # Sort by (task, metric, filter), then cut the columns at the key changes: cheaper than a
    # hash group-by that materialises list columns of strings.
    keys = pc.binary_join_element_wise(
        table.column("task"), table.column("metric"), table.column("filter"), "\x1f"
    ).combine_chunks()
    order = pc.sort_indices(keys)
    ends = pc.run_end_encode(keys.take(order), run_end_type=pa.int32()).run_ends
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), ends])
    firsts = pc.take(order, offsets[:-1])
    head = table.take(firsts)

    def joined(column: pa.ChunkedArray, as_text: bool = False) -> pa.Array:
        values = column.combine_chunks().take(order)
        if as_text:
            values = pc.cast(values, pa.string())
        return pc.binary_join(pa.ListArray.from_arrays(offsets, values), ",")

    return [
        head.column("task").to_pylist(),
        head.column("metric").to_pylist(),
        head.column("filter").to_pylist(),
        _braced(joined(table.column("doc_id"), as_text=True)),
        joined(table.column("doc_hash")).to_pylist(),
        _braced(joined(table.column("value"), as_text=True)),
    ]


_INSERT_SETS = """
INSERT INTO sample_outcome_sets (run_id, task, metric, filter, doc_ids, doc_hashes, "values")
SELECT $1, t.task, t.metric, t.filter, t.ids::integer[], t.hashes, t.vals::float8[]
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
     AS t (task, metric, filter, ids, hashes, vals)
"""


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
    sets = _outcome_sets(outcomes_table(outcomes))  # validated before anything is written
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
            if sets[0]:
                await conn.execute(_INSERT_SETS, run.run_id, *sets)
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
