"""Ingest throughput: the lab's ingest of per-document outcomes vs a naive executemany INSERT.

Starts a real (embedded) PostgreSQL in a temp folder and ingests 200,000 synthetic per-sample
rows (30 tasks, interleaved as a harness emits them, with real sha256 document hashes) both ways
in the same run: a warm-up, then five interleaved repeats each, medians compared. Prints rows/s of
each and the ratio.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg
from benchlib import bench_campaign, bench_run, doc_sha256, scratch_postgres

from evallab.harnesses.base import SampleOutcome, ScoreRow
from evallab.store.ingest import ingest_run, insert_campaign, outcomes_table
from evallab.store.migrate import migrate

N_ROWS = 200_000
N_TASKS = 30
REPEATS = 5

# Baseline: the obvious design — one table row per document, filled by executemany INSERT of the
# same rows inside one transaction (asyncpg pipelines it: no round trip per row).
NAIVE_TABLE = """
CREATE TABLE naive_sample_outcomes (
    run_id uuid NOT NULL, task text NOT NULL, doc_id integer NOT NULL, doc_hash text NOT NULL,
    metric text NOT NULL, filter text NOT NULL, value double precision NOT NULL,
    PRIMARY KEY (run_id, task, metric, filter, doc_id))
"""
NAIVE_INSERT = (
    "INSERT INTO naive_sample_outcomes (run_id, task, doc_id, doc_hash, metric, filter, value) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


def outcomes(n: int) -> list[SampleOutcome]:
    return [
        SampleOutcome(f"task{i % N_TASKS}", i, doc_sha256(i), "acc", "none", float(i % 2))
        for i in range(n)
    ]


async def check_stored(conn: asyncpg.Connection, run_id: object, rows: list[SampleOutcome]) -> None:
    """Fail loudly unless every row landed and a document reads back with its own hash."""
    stored = await conn.fetchval("SELECT count(*) FROM sample_outcomes WHERE run_id = $1", run_id)
    if stored != len(rows):
        raise SystemExit(f"expected {len(rows)} rows, found {stored}")
    probe = rows[len(rows) // 3]
    got = await conn.fetchval(
        "SELECT doc_hash FROM sample_outcomes WHERE run_id = $1 AND doc_id = $2",
        run_id,
        probe.doc_id,
    )
    if got != probe.doc_hash:
        raise SystemExit(f"doc {probe.doc_id}: stored hash {got} != {probe.doc_hash}")


async def measure(dsn: str) -> tuple[list[float], list[float]]:
    """Seconds per timed repeat of the naive path and of the lab's path."""
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    await conn.execute(NAIVE_TABLE)
    campaign = bench_campaign()
    await insert_campaign(conn, campaign)
    rows = outcomes(N_ROWS)
    table = outcomes_table(rows)  # the runner already holds this table (it writes it to Parquet)
    per_task = N_ROWS // N_TASKS
    scores = [ScoreRow(f"task{i}", "acc", "none", 0.5, 0.01, per_task) for i in range(N_TASKS)]

    # Each path runs once untimed (statement preparation, type introspection, the allocator and
    # the server's buffers growing to this size), then REPEATS timed times, interleaved, each
    # after a CHECKPOINT so neither pays for the other's dirty buffers.
    naive_times: list[float] = []
    lab_times: list[float] = []
    for repeat in range(REPEATS + 1):
        naive = bench_run(campaign.campaign_id)
        await ingest_run(conn, naive)
        records = [
            (naive.run_id, o.task, o.doc_id, o.doc_hash, o.metric, o.filter, o.value) for o in rows
        ]
        await conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        async with conn.transaction():
            await conn.executemany(NAIVE_INSERT, records)
        naive_s = time.perf_counter() - t0

        lab = bench_run(campaign.campaign_id)
        await conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        await ingest_run(conn, lab, scores, table)
        lab_s = time.perf_counter() - t0

        await check_stored(conn, lab.run_id, rows)
        if repeat:  # repeat 0 is the warm-up
            naive_times.append(naive_s)
            lab_times.append(lab_s)
    await conn.close()
    return naive_times, lab_times


def main() -> None:
    with scratch_postgres() as (dsn, _):
        naive_times, lab_times = asyncio.run(measure(dsn))
    # Medians: this machine is shared and noisy.
    naive_s, lab_s = statistics.median(naive_times), statistics.median(lab_times)
    lab_rate, naive_rate = N_ROWS / lab_s, N_ROWS / naive_s
    print(f"rows: {N_ROWS:,} in {N_TASKS} tasks; {REPEATS} timed repeats each, medians")
    print(
        f"naive executemany INSERT, row per document:  {naive_s:.3f} s  ({naive_rate:,.0f} rows/s)"
    )
    print(f"lab ingest, binary COPY of array sets:       {lab_s:.3f} s  ({lab_rate:,.0f} rows/s)")
    print(f"  repeats (s): naive {[round(x, 3) for x in naive_times]}")
    print(f"               lab   {[round(x, 3) for x in lab_times]}")
    print(f"RESULT ingest_rows_per_s {lab_rate:.0f} rows/s goal >= 100000")
    print(f"RESULT ingest_ratio {lab_rate / naive_rate:.1f} x goal >= 10")


if __name__ == "__main__":
    main()
