"""The store against a real PostgreSQL: embedded server, migrations, idempotent COPY ingest."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from evallab.errors import DatabaseError, MigrationError, PortInUseError, StorageError
from evallab.harnesses.base import SampleOutcome, ScoreRow
from evallab.runtimes.process import free_port
from evallab.store.db import connect, redact
from evallab.store.embedded import EmbeddedPostgres
from evallab.store.ingest import ingest_run, insert_campaign
from evallab.store.migrate import SQL_DIR, migrate, migration_status
from evallab.store.records import CampaignRecord
from tests.helpers import run_record


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def seed_campaign(conn: asyncpg.Connection) -> uuid.UUID:
    cid = uuid.uuid4()
    await insert_campaign(
        conn, CampaignRecord(cid, "c", {"a": 1}, "x", "p", "0.1", "c", datetime.now(UTC))
    )
    return cid


def test_embedded_server_runs_unprivileged_and_refuses_taken_port(pg_home: Path) -> None:
    tmp_path = pg_home
    port = free_port()
    server = EmbeddedPostgres(tmp_path / "home", port=port)
    dsn = server.start()
    try:
        assert dsn.endswith(f":{port}/evallab")
        pid = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
        uid = os.stat(f"/proc/{pid}").st_uid
        assert uid != 0, "PostgreSQL must not run as root"

        async def version() -> str:
            conn = await connect(dsn)
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        assert run(version()).split(".")[0] in {"16", "18"}
        # Starting again reuses the running server.
        assert EmbeddedPostgres(tmp_path / "home", port=port).start() == dsn
    finally:
        server.stop()
    assert not server.is_running()
    # Another process on the port: a clear error naming the port and the fix.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with pytest.raises(PortInUseError) as exc:
            EmbeddedPostgres(tmp_path / "home2", port=taken).start()
        assert str(taken) in exc.value.message
        assert "EVALLAB_PG_PORT" in exc.value.message


def test_unreachable_dsn_is_a_clear_error() -> None:
    dsn = f"postgresql://u:secret@127.0.0.1:{free_port()}/db"
    with pytest.raises(DatabaseError) as exc:
        run(connect(dsn, timeout=2))
    assert "secret" not in exc.value.message
    assert redact(dsn) in exc.value.message
    assert "EVALLAB_DATABASE_URL" in exc.value.message


def test_migrations_from_empty_and_edited_migration_refused(fresh_dsn: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(SQL_DIR / "migrations", folder)

    async def go() -> None:
        conn = await connect(fresh_dsn)
        try:
            applied = await migrate(conn, folder)
            assert [m.version for m in applied] == sorted(m.version for m in applied)
            assert applied[0].version == 1
            status = await migration_status(conn, folder)
            assert all(s.applied and s.checksum_ok for s in status)
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='evallab'"
                )
            }
            assert {
                "campaigns",
                "runs",
                "scores",
                "sample_outcome_sets",
                "canaries",
                "telemetry",
            } <= tables
            assert await migrate(conn, folder) == []  # idempotent
            first = sorted(folder.glob("0001_*.sql"))[0]
            first.write_text(first.read_text() + "\n-- edited\n")
            with pytest.raises(MigrationError) as exc:
                await migrate(conn, folder)
            assert (
                first.name in exc.value.message
                and "edited after it was applied" in exc.value.message
            )
            assert next(s.checksum_ok for s in await migration_status(conn, folder)) is False
        finally:
            await conn.close()

    run(go())


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_ingest_twice_creates_no_duplicates(migrated_dsn: str) -> None:
    async def go() -> None:
        conn = await connect(migrated_dsn)
        try:
            cid = await seed_campaign(conn)
            rec = run_record(cid)
            scores = [ScoreRow("t", "acc", "none", 0.5, 0.1, 4, True)]
            outcomes = [
                SampleOutcome("t", i, sha(f"doc{i}"), "acc", "none", float(i % 2)) for i in range(4)
            ]
            await ingest_run(conn, rec, scores, outcomes)
            await ingest_run(conn, rec, scores, outcomes)
            assert await conn.fetchval("SELECT count(*) FROM runs") == 1
            assert await conn.fetchval("SELECT count(*) FROM scores") == 1
            assert await conn.fetchval("SELECT count(*) FROM sample_outcomes") == 4
            assert await conn.fetchval("SELECT sum(value) FROM sample_outcomes") == 2.0
            assert await conn.fetchval("SELECT count(*) FROM sample_outcome_sets") == 1
            nan = [SampleOutcome("t", 9, sha("doc9"), "acc", "none", float("nan"))]
            await ingest_run(conn, rec, scores, nan)
            [row] = await conn.fetch("SELECT doc_id, doc_hash, value FROM sample_outcomes")
            assert row["doc_id"] == 9 and row["doc_hash"] == sha("doc9")
            assert row["value"] != row["value"]  # NaN survives the round trip
        finally:
            await conn.close()

    run(go())


def test_model_provenance_is_stored_with_the_run(migrated_dsn: str) -> None:
    prov = {"gguf_sha256": "g" * 64, "gguf_quant": "q4_k_m", "gguf_quantizer": "lcp==0.3.36"}

    async def go() -> None:
        conn = await connect(migrated_dsn)
        try:
            cid = await seed_campaign(conn)
            made, plain = run_record(cid, model_provenance=prov), run_record(cid)
            await ingest_run(conn, made, [], [])
            await ingest_run(conn, plain, [], [])
            rows = await conn.fetch("SELECT run_id, model_provenance FROM runs")
            got = {r["run_id"]: r["model_provenance"] for r in rows}
            assert got[made.run_id] == prov
            assert got[plain.run_id] == {}
        finally:
            await conn.close()

    run(go())


def test_outcome_sets_round_trip_interleaved_rows(migrated_dsn: str) -> None:
    """Rows as a harness emits them (metrics and tasks interleaved per document) come back intact.

    The sets group by (task, metric, filter), keep each document's hash, id and value together,
    and keep the harness's document order within a set.
    """
    tasks, metrics = ("arc", "gsm"), (("acc", "none"), ("acc_norm", "none"), ("em", "strict"))
    outcomes = [
        SampleOutcome(task, doc, sha(f"{task}/{doc}"), metric, filt, doc * 0.5 + len(metric))
        for doc in (7, 3, 11, 0, 5)
        for task in tasks
        for metric, filt in metrics
    ]

    async def go() -> None:
        conn = await connect(migrated_dsn)
        try:
            rec = run_record(await seed_campaign(conn))
            await ingest_run(conn, rec, outcomes=outcomes)
            assert await conn.fetchval(
                "SELECT count(*) FROM sample_outcome_sets WHERE run_id = $1", rec.run_id
            ) == len(tasks) * len(metrics)
            stored = await conn.fetch(
                "SELECT task, doc_id, doc_hash, metric, filter, value FROM sample_outcomes "
                "WHERE run_id = $1",
                rec.run_id,
            )
            assert sorted(tuple(r) for r in stored) == sorted(
                (o.task, o.doc_id, o.doc_hash, o.metric, o.filter, o.value) for o in outcomes
            )
            order = await conn.fetchval(
                "SELECT doc_ids FROM sample_outcome_sets "
                "WHERE run_id = $1 AND task = 'gsm' AND metric = 'em'",
                rec.run_id,
            )
            assert order == [7, 3, 11, 0, 5]
            packed = await conn.fetchval(
                "SELECT doc_hashes FROM sample_outcome_sets "
                "WHERE run_id = $1 AND task = 'arc' AND metric = 'acc'",
                rec.run_id,
            )
            assert packed == b"".join(bytes.fromhex(sha(f"arc/{d}")) for d in (7, 3, 11, 0, 5))
        finally:
            await conn.close()

    run(go())


@pytest.mark.parametrize(
    ("doc_id", "doc_hash", "expected"),
    [
        (4, "a,b", "not a sha256 hex digest"),
        (5, "", "not a sha256 hex digest"),
        (6, "z" * 64, "not a sha256 hex digest"),
        (7, "ab" * 33, "not a sha256 hex digest"),
        (2**31, "ab" * 32, "32-bit integer doc_id"),
    ],
)
def test_unstorable_outcome_is_refused_before_writing(
    migrated_dsn: str, doc_id: int, doc_hash: str, expected: str
) -> None:
    async def go() -> None:
        conn = await connect(migrated_dsn)
        try:
            rec = run_record(await seed_campaign(conn))
            good = [SampleOutcome("t", i, sha(str(i)), "acc", "none", 1.0) for i in range(3)]
            await ingest_run(conn, rec, outcomes=good)
            bad = [*good, SampleOutcome("t", doc_id, doc_hash, "acc", "none", 1.0)]
            with pytest.raises(StorageError, match=expected) as exc:
                await ingest_run(conn, rec, outcomes=bad)
            assert str(doc_id) in str(exc.value.value or "")
            # The earlier ingest of this run is untouched.
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM sample_outcomes WHERE run_id = $1", rec.run_id
                )
                == 3
            )
        finally:
            await conn.close()

    run(go())


def test_packed_hash_migration_keeps_stored_outcomes(fresh_dsn: str, tmp_path: Path) -> None:
    """Outcomes written under the comma-joined text layout read back the same after migrating."""
    older = tmp_path / "older"
    older.mkdir()
    for f in sorted((SQL_DIR / "migrations").glob("*.sql")):
        if f.name < "0005":
            shutil.copy(f, older / f.name)
    later = sorted(
        int(f.name[:4]) for f in (SQL_DIR / "migrations").glob("*.sql") if f.name >= "0005"
    )
    hashes = [sha(f"d{i}") for i in range(3)]
    campaign_id, run_id = uuid.uuid4(), uuid.uuid4()

    async def go() -> None:
        conn = await connect(fresh_dsn)
        try:
            # Today's views read tables of later migrations: a version-4 database has none.
            await migrate(conn, older, views_folder=tmp_path / "no-views")
            # Rows as a pre-0005 lab wrote them: SQL of that schema, not today's records (later
            # migrations add columns that a database at version 4 doesn't have).
            await conn.execute(
                "INSERT INTO campaigns (campaign_id, name, spec, spec_sha256, spec_path, "
                "lab_version, lab_commit, started_at, status) "
                "VALUES ($1, 'c', '{\"a\": 1}'::jsonb, 'x', 'p', '0.1', 'c', now(), 'running')",
                campaign_id,
            )
            await conn.execute(
                "INSERT INTO runs (run_id, campaign_id, run_key, benchmark, model_name, "
                "model_source, model_id, model_revision, model_sha256, quant, runtime, "
                "runtime_label, runtime_version, harness, harness_version, tasks, seed, "
                "generation_config, lab_version, lab_commit, env_fingerprint, python_version, "
                "hostname, status, started_at) "
                "VALUES ($1, $2, $3, 'b', 'm', 'tiny', 'evallab/tiny', 'local:abc', $4, 'none', "
                "'transformers', 'transformers', '5', 'lm_eval', '0.4.13', '{t}', 1, "
                "'{\"max_gen_toks\": 8}'::jsonb, '0.1.0', 'c', 'f', '3.11', 'h', 'succeeded', "
                "now())",
                run_id,
                campaign_id,
                "k" * 64,
                "s" * 64,
            )
            await conn.execute(
                "INSERT INTO sample_outcome_sets VALUES ($1, 't', 'acc', 'none', $2, $3, $4)",
                run_id,
                [2, 0, 1],
                ",".join(hashes),
                [1.0, 0.0, 0.5],
            )
            applied = await migrate(conn)
            assert [m.version for m in applied] == later
            assert later[0] == 5
            old_row = await conn.fetchrow(
                "SELECT status, driver, status_reason FROM campaigns WHERE campaign_id = $1",
                campaign_id,
            )
            assert old_row is not None
            assert tuple(old_row) == ("running", "", "")  # 0006's columns default for old rows
            rows = await conn.fetch(
                "SELECT doc_id, doc_hash, value FROM sample_outcomes WHERE run_id = $1",
                run_id,
            )
            assert [tuple(r) for r in rows] == [
                (2, hashes[0], 1.0),
                (0, hashes[1], 0.0),
                (1, hashes[2], 0.5),
            ]
        finally:
            await conn.close()

    run(go())


def test_failed_ingest_leaves_no_partial_rows(migrated_dsn: str) -> None:
    """A database that goes away mid-ingest: the transaction rolls back, nothing half-written."""

    async def go() -> None:
        conn = await connect(migrated_dsn)
        admin = await connect(migrated_dsn)
        try:
            cid = await seed_campaign(conn)
            rec = run_record(cid)
            pid = conn.get_server_pid()
            # The run row goes in first, then a duplicate score key makes COPY fail.
            dup = [
                ScoreRow("t", "acc", "none", 1.0, 0.0, 1),
                ScoreRow("t", "acc", "none", 0.0, 0.0, 1),
            ]
            outcomes = [SampleOutcome("t", 1, sha("h"), "acc", "none", 1.0)]
            with pytest.raises(DatabaseError) as exc:
                await ingest_run(conn, rec, dup, outcomes)
            assert str(rec.run_id) in exc.value.message
            assert (
                await admin.fetchval("SELECT count(*) FROM runs WHERE run_id=$1", rec.run_id) == 0
            )
            assert (
                await admin.fetchval("SELECT count(*) FROM scores WHERE run_id=$1", rec.run_id) == 0
            )
            # Now the server kills the connection before the ingest: DatabaseError, no rows.
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            await asyncio.sleep(0.2)
            with pytest.raises(DatabaseError):
                await ingest_run(conn, rec, [ScoreRow("t", "acc", "none", 1.0, 0.0, 1)], [])
            assert (
                await admin.fetchval("SELECT count(*) FROM runs WHERE run_id=$1", rec.run_id) == 0
            )
        finally:
            await admin.close()
            if not conn.is_closed():
                await conn.close()

    run(go())
