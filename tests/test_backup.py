"""Backups: a real database with runs dumped, restored into a separately started server and
compared table by table; tampering, non-empty targets, failures midway, rotation."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from evallab.analysis.repro import find_repro_violations
from evallab.backup import create_backup, restore_backup, rotate_backups
from evallab.backup.manifest import ArchiveInfo, BackupManifest, read_manifest
from evallab.backup.restore import _restore_tool
from evallab.backup.tools import PgTool, find_pg_tool, libpq_target
from evallab.errors import BackupError
from evallab.harnesses.base import SampleOutcome, ScoreRow
from evallab.runtimes.process import free_port
from evallab.store import Store
from evallab.store.embedded import EmbeddedPostgres
from evallab.store.ingest import ingest_run
from evallab.store.watch import CanaryRow
from tests.checks.checks_seed import T0, add_run, new_campaign
from tests.helpers import REPO, evallab, fetch, run_record


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _seed_runs(dsn: str) -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    try:
        cid = await new_campaign(conn)
        telemetry = [
            (T0 + timedelta(seconds=2 * i), 0, 70.0 + i, 300.5, 1980.0, 2619.0, 1e3, 90.0, [], 0)
            for i in range(40)
        ]
        await add_run(conn, cid, started_at=T0, run_key="r", telemetry=telemetry)
        await add_run(
            conn,
            cid,
            started_at=T0 + timedelta(days=1),
            run_key="r",
            scores=[("demo_mc", "acc", 0.61)],
        )
        rec = run_record(cid, started_at=T0 + timedelta(days=2), model_name="tiny-b")
        outcomes = [
            SampleOutcome("t", i, _sha(f"d{i}"), "acc", "none", float("nan") if i == 3 else i / 7)
            for i in range(50)
        ]
        await ingest_run(conn, rec, [ScoreRow("t", "acc", "none", 0.5, 0.1, 50, True)], outcomes)
    finally:
        await conn.close()
    return cid


def _seed(dsn: str) -> None:
    """Runs with scores, outcomes (a NaN among them), telemetry, a canary and a repro violation."""
    cid = asyncio.run(_seed_runs(dsn))
    with Store(dsn) as store:
        later = [r for r in store.runs_for_retention() if r.started_at == T0 + timedelta(days=1)]
        assert len(find_repro_violations(store, later[0].run_id, 0.005)) == 1
        store.add_canary_rows(
            [
                CanaryRow(
                    cid,
                    "combo",
                    "v1",
                    f"p{i}",
                    "o" * 64,
                    "l" * 64,
                    True,
                    None,
                    "tiny-a",
                    "rev",
                    "none",
                    "transformers",
                    "5.24.0",
                    "GPU",
                    3,
                    16,
                )
                for i in range(3)
            ]
        )


def _tables(dsn: str) -> dict[str, list[str]]:
    """Every table's rows as text, sorted: what a restore must reproduce exactly."""
    names = [
        r["t"]
        for r in fetch(
            dsn,
            "SELECT schemaname || '.' || tablename AS t FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )
    ]
    return {
        n: [r["row"] for r in fetch(dsn, f"SELECT x::text AS row FROM {n} x ORDER BY 1")]
        for n in names
    }


@pytest.fixture
def second_server(pg_home: Path) -> Iterator[EmbeddedPostgres]:
    """A separately initialised cluster (its own initdb, unprivileged owner, own port)."""
    server = EmbeddedPostgres(pg_home, port=free_port())
    server.start()
    yield server
    server.stop()


def _new_db(server: EmbeddedPostgres, name: str) -> str:
    """A new, empty database on ``server`` with the lab's (empty) schema, as the lab's role."""
    return server.ensure_database(name)


def test_backup_restores_into_a_fresh_server_identically(
    migrated_dsn: str, second_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    _seed(migrated_dsn)
    with Store(migrated_dsn) as store:
        result = create_backup(store, tmp_path)
    m = result.manifest
    assert result.archive.name.endswith(".dump") and result.archive.stat().st_size > 0
    assert m.archive.sha256 == hashlib.sha256(result.archive.read_bytes()).hexdigest()
    assert m.server_major == m.pg_dump_major == int(m.server_version.split(".")[0])
    assert m.tables["evallab.runs"].rows == 3
    assert m.tables["evallab.telemetry"].rows == 40
    assert m.tables["evallab.sample_outcome_sets"].rows == 1
    assert m.tables["evallab.canaries"].rows == 3
    assert m.tables["evallab.repro_violations"].rows == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files
    [row] = fetch(migrated_dsn, "SELECT path, sha256, size_bytes, total_rows FROM backups")
    assert (row["path"], row["sha256"]) == (str(result.archive), m.archive.sha256)
    assert row["size_bytes"] == result.archive.stat().st_size and row["total_rows"] == m.total_rows
    [age] = fetch(migrated_dsn, "SELECT hours_since_good_backup AS h FROM v_backup_age")
    assert 0 <= age["h"] < 0.1

    target = second_server.dsn  # the fresh cluster's own, empty lab database
    restored = restore_backup(result.archive, target)
    assert restored.rows == m.total_rows and restored.tables == len(m.tables)
    source, copy = _tables(migrated_dsn), _tables(target)
    # The source's backups row was written after the snapshot: the archive predates it.
    assert source.pop("evallab.backups") != copy.pop("evallab.backups") == []
    assert copy == source
    assert fetch(target, "SELECT count(*) AS n FROM sample_outcomes")[0]["n"] == 50

    # Restoring again into the now non-empty database is refused, naming what it holds.
    with pytest.raises(BackupError, match=r"not empty: it holds \d+ object\(s\) \(evallab\."):
        restore_backup(result.archive, target)
    cli = evallab(["restore", str(result.archive), "--dsn", target])
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert "target database is not empty" in cli.stderr and "Fix: create an empty" in cli.stderr

    # A manifest whose numbers don't match the archive fails verification, naming the table.
    manifest = json.loads(result.manifest_file.read_text())
    manifest["tables"]["evallab.scores"]["rows"] += 1
    result.manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match=r"evallab\.scores: \d+ rows, the manifest says"):
        restore_backup(result.archive, _new_db(second_server, "tampered"))
    # A modified archive is refused before anything is restored.
    with result.archive.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BackupError, match="sha256"):
        read_manifest(result.archive)


def _failing_pg_dump(folder: Path) -> PgTool:
    script = folder / "pg_dump"
    script.write_text(
        "#!/bin/sh\nfor a; do case $a in --file=*) printf 'PGDMP partial' > \"${a#--file=}\";; "
        "esac; done\necho 'pg_dump: error: connection lost' >&2\nexit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return PgTool(script, 18, "18.4")


def test_a_backup_failing_midway_leaves_no_file(
    migrated_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "backups"
    with Store(migrated_dsn) as store:
        with pytest.raises(BackupError, match=r"pg_dump of the results database failed.*lost"):
            create_backup(store, out, tool=_failing_pg_dump(tmp_path))
        assert list(out.iterdir()) == []
        # The dump succeeds but the manifest can't be published: the archive goes too.
        import evallab.backup.create as create

        real = create._publish

        def publish(tmp: Path, final: Path) -> None:
            if final.name.endswith(".manifest.json"):
                raise OSError(28, "No space left on device")
            real(tmp, final)

        monkeypatch.setattr(create, "_publish", publish)
        with pytest.raises(BackupError, match="No space left"):
            create_backup(store, out)
        assert list(out.iterdir()) == []
    assert fetch(migrated_dsn, "SELECT count(*) AS n FROM backups")[0]["n"] == 0


def test_rotation_keeps_seven_daily_and_four_weekly(tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)  # a Thursday
    stamps = [start + timedelta(days=d) for d in range(60)]
    stamps.append(start + timedelta(days=59, hours=12))  # two on the last day
    for when in stamps:
        stem = "evallab-" + when.strftime("%Y%m%dT%H%M%SZ")
        (tmp_path / f"{stem}.dump").write_bytes(b"x")
        (tmp_path / f"{stem}.manifest.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a backup")
    rotation = rotate_backups(tmp_path, daily=7, weekly=4)
    kept = sorted(b.taken_at for b in rotation.keep)
    last = start + timedelta(days=59, hours=12)  # 2026-03-01 15:00, a Sunday
    daily = [last, *(start + timedelta(days=d) for d in range(53, 59))]
    # The newest of each of the last 4 ISO weeks: 03-01 (Sun) and the Sundays before.
    weekly = [start + timedelta(days=d) for d in (38, 45, 52)]
    assert kept == sorted({*daily, *weekly})
    assert len(list(tmp_path.glob("*.dump"))) == len(kept) == 10
    assert len(list(tmp_path.glob("*.manifest.json"))) == 10
    assert (tmp_path / "notes.txt").exists()
    assert rotate_backups(tmp_path, daily=7, weekly=4).delete == []


def test_client_tools_match_the_server_major_version() -> None:
    assert find_pg_tool("pg_dump", 18).version.startswith("18.")
    assert find_pg_tool("pg_restore", 16).major == 16
    with pytest.raises(BackupError, match="no pg_dump of PostgreSQL 9") as err:
        find_pg_tool("pg_dump", 9)
    assert "postgresql-client-9" in err.value.message
    manifest = BackupManifest(
        created_at=T0,
        database="d",
        server_version="18.4",
        server_major=18,
        pg_dump_version="18.4",
        pg_dump_major=18,
        archive=ArchiveInfo(file="a.dump", sha256="0" * 64, size_bytes=1),
        tables={},
    )
    with pytest.raises(BackupError, match="PostgreSQL 18 and the target server runs PostgreSQL 16"):
        _restore_tool(manifest, 16)


def test_passwords_stay_off_the_command_line() -> None:
    target, env = libpq_target("postgresql://lab:s%40cret@db.example:5433/evallab?sslmode=require")
    assert target == "postgresql://lab@db.example:5433/evallab?sslmode=require"
    assert env["PGPASSWORD"] == "s@cret" and os.environ.get("PGPASSWORD") != "s@cret"
    assert libpq_target("postgresql://lab@h/db")[0] == "postgresql://lab@h/db"


def test_nightly_deployments_call_the_maintenance_flows() -> None:
    import inspect

    import yaml

    from flows import maintenance

    deployments = {
        d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    }
    for name, fn in (("backup", "backup_database"), ("gc", "gc_raw_outputs")):
        dep = deployments[name]
        assert dep["entrypoint"] == f"flows/maintenance.py:{fn}"
        assert dep["work_pool"]["name"] == "lab" and dep["schedules"][0]["active"]
        accepted = inspect.signature(getattr(maintenance, fn).fn).parameters
        assert set(dep["parameters"]) <= set(accepted), (name, dep["parameters"])
    # The backup runs before gc, so a night's pruned runs are in a backup taken before them.
    assert deployments["backup"]["schedules"][0]["cron"] == "30 0 * * *"
    assert deployments["gc"]["schedules"][0]["cron"] == "45 0 * * *"
