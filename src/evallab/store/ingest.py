"""Write a finished run into PostgreSQL: one transaction, COPY for the bulk rows, idempotent.

Re-ingesting the same ``run_id`` replaces its rows instead of duplicating them, so a retry after a
lost connection is always safe.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from evallab.errors import DatabaseError
from evallab.harnesses.base import SampleOutcome, ScoreRow
from evallab.store.records import CampaignRecord, RunRecord

__all__ = [
    "finish_campaign",
    "ingest_run",
    "insert_campaign",
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


_PLAIN = re.compile(r"^[0-9A-Za-z_.:\-]+$")


def _literal(text: str) -> str:
    # Array-literal element: hashes are plain hex; anything else is quoted and escaped.
    if _PLAIN.match(text) and text.upper() != "NULL":
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _outcome_sets(outcomes: Iterable[SampleOutcome]) -> list[tuple[str, str, str, str, str, str]]:
    """Group outcomes by (task, metric, filter) into PostgreSQL array literals.

    Text literals parsed server-side are several times faster than encoding hundreds of
    thousands of Python objects one by one on the client.
    """
    groups: dict[tuple[str, str, str], tuple[list[str], list[str], list[str]]] = defaultdict(
        lambda: ([], [], [])
    )
    for o in outcomes:
        ids, hashes, values = groups[(o.task, o.metric, o.filter)]
        ids.append(str(int(o.doc_id)))
        hashes.append(_literal(o.doc_hash))
        values.append(repr(float(o.value)))
    return [
        (
            task,
            metric,
            filt,
            "{" + ",".join(i) + "}",
            "{" + ",".join(h) + "}",
            "{" + ",".join(v) + "}",
        )
        for (task, metric, filt), (i, h, v) in groups.items()
    ]


_INSERT_SETS = """
INSERT INTO sample_outcome_sets (run_id, task, metric, filter, doc_ids, doc_hashes, "values")
SELECT $1, t.task, t.metric, t.filter, t.ids::integer[], t.hashes::text[], t.vals::float8[]
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
     AS t (task, metric, filter, ids, hashes, vals)
"""


async def ingest_run(
    conn: asyncpg.Connection,
    run: RunRecord,
    scores: Sequence[ScoreRow] = (),
    outcomes: Sequence[SampleOutcome] = (),
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
    """
    columns = RunRecord.columns()
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
            if outcomes:
                sets = _outcome_sets(outcomes)
                await conn.execute(
                    _INSERT_SETS, run.run_id, *(list(col) for col in zip(*sets, strict=True))
                )
            if telemetry:
                await conn.copy_records_to_table(
                    "telemetry",
                    records=[(run.run_id, *row) for row in telemetry],
                    columns=[
                        "run_id",
                        "ts",
                        "gpu_index",
                        "temperature_c",
                        "power_w",
                        "sm_clock_mhz",
                        "mem_clock_mhz",
                        "memory_used_mb",
                        "utilization_pct",
                        "throttle_reasons",
                        "other_processes",
                    ],
                )
    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
        raise DatabaseError(
            f"ingest of run {run.run_id} failed and was rolled back: {type(exc).__name__}: {exc}",
            value=run.run_id,
            fix="the raw outputs are kept on disk; fix the database and re-run the campaign "
            "(finished runs are skipped) or `evallab ingest` the run folder",
        ) from exc
