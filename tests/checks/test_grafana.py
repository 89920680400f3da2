"""Every Grafana panel, variable and alert query, run against the real schema with seeded data.

Grafana's server isn't available here: the queries are taken from the generated files, their
macros and template variables expanded as Grafana would, and run on PostgreSQL.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from checks_seed import T0, add_run, new_campaign, off_loop, run

from evallab.analysis.regressions import find_regressions
from evallab.analysis.repro import find_repro_violations
from evallab.grafana_queries import GrafanaQuery, expand_macros, load_queries
from evallab.spec import ChecksSpec
from evallab.store import Store
from evallab.store.embedded import READER_ROLE, SECRETS_SECTION, EmbeddedPostgres
from evallab.store.roles import setup_roles
from evallab.telemetry.nvml import FakeNVML, GpuReading
from evallab.telemetry.rules import judge_run_validity
from evallab.telemetry.sampler import TelemetrySampler

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
VARIABLES = {"model": ["tiny-a", "tiny-b"], "task": ["demo_mc", "demo_gen"], "metric": "acc"}
HISTORY = [0.50, 0.51, 0.49, 0.505, 0.495, 0.50, 0.51, 0.49]


class Clock:
    def __init__(self, start: Any) -> None:
        self.now = start

    def __call__(self) -> Any:
        value = self.now
        self.now += timedelta(seconds=10)
        return value


async def seed(conn: asyncpg.Connection, store: Store) -> dict[str, Any]:
    cid = await new_campaign(conn)
    checks = ChecksSpec()
    for day, value in enumerate(HISTORY):
        rid = await add_run(
            conn,
            cid,
            started_at=T0 + timedelta(days=day),
            run_key=f"a{day}",
            scores=[("demo_mc", "acc", value), ("demo_gen", "exact_match", 0.2)],
        )
        await off_loop(find_regressions, store, rid, checks)
    # A hot run: telemetry from the scripted NVML, judged invalid by the real rule.
    sampler = TelemetrySampler(
        FakeNVML(readings=[GpuReading(temperature_c=88.0)]),
        clock=Clock(T0 + timedelta(days=8, hours=1)),
        allowed_pids=lambda: set(),
    )
    for _ in range(10):
        sampler.sample()
    reason = judge_run_validity(sampler.rows, checks)
    assert reason is not None
    hot = await add_run(
        conn,
        cid,
        started_at=T0 + timedelta(days=8, hours=1),
        status="invalid",
        status_reason=reason,
        scores=[("demo_mc", "acc", 0.05)],
        run_key="hot",
        telemetry=[
            (
                r.ts,
                r.gpu_index,
                r.temperature_c,
                r.power_w,
                r.sm_clock_mhz,
                r.mem_clock_mhz,
                r.memory_used_mb,
                r.utilization_pct,
                list(r.throttle_reasons),
                r.other_processes,
            )
            for r in sampler.rows
        ],
    )
    regressed = await add_run(
        conn,
        cid,
        started_at=T0 + timedelta(days=9),
        run_key="a9",
        scores=[("demo_mc", "acc", 0.46), ("demo_gen", "exact_match", 0.2)],
    )
    assert len(await off_loop(find_regressions, store, regressed, checks)) == 1
    # tiny-b: a rerun with identical pins that doesn't reproduce.
    b1 = await add_run(
        conn,
        cid,
        started_at=T0 + timedelta(days=2),
        model="tiny-b",
        run_key="b",
        scores=[("demo_mc", "acc", 0.30)],
    )
    b2 = await add_run(
        conn,
        cid,
        started_at=T0 + timedelta(days=3),
        model="tiny-b",
        run_key="b",
        scores=[("demo_mc", "acc", 0.33)],
    )
    assert len(await off_loop(find_repro_violations, store, b2, checks.repro_tolerance)) == 1
    return {"hot": hot, "regressed": regressed, "b1": b1, "b2": b2}


@pytest.fixture
def reader_dsn(pg_server: EmbeddedPostgres, migrated_dsn: str) -> str:
    """DSN of the migrated database as Grafana's read-only role (set up by `db roles`)."""
    database = migrated_dsn.rsplit("/", 1)[1]
    outcome = setup_roles(
        pg_server.dsn_for(database, pg_server.admin_credential()),
        home=pg_server.home,
        schema="evallab",
        writer=pg_server.writer_credential().user,
        reader=READER_ROLE,
        section=SECRETS_SECTION,
    )
    return outcome.reader_dsn


def expand(q: GrafanaQuery) -> str:
    return expand_macros(
        q.sql,
        time_from=T0 - timedelta(days=1),
        time_to=T0 + timedelta(days=30),
        interval="1h",
        variables=VARIABLES,
    )


def by_source(queries: list[GrafanaQuery], needle: str) -> GrafanaQuery:
    found = [q for q in queries if needle in q.source]
    assert len(found) == 1, (needle, [q.source for q in queries])
    return found[0]


def test_every_panel_variable_and_alert_query_returns_the_seeded_facts(
    migrated_dsn: str, reader_dsn: str
) -> None:
    queries = load_queries(GRAFANA)
    assert len(queries) >= 14

    async def go() -> dict[str, list[dict[str, Any]]]:
        conn = await asyncpg.connect(migrated_dsn)
        store = Store(migrated_dsn)
        # Grafana's role, as Grafana connects: no search_path of its own (the role's is used).
        grafana = await asyncpg.connect(reader_dsn)
        try:
            await seed(conn, store)
            return {q.source: [dict(r) for r in await grafana.fetch(expand(q))] for q in queries}
        finally:
            await off_loop(store.close)
            await conn.close()
            await grafana.close()

    rows = run(go())
    get = lambda needle: rows[by_source(queries, needle).source]  # noqa: E731

    assert [r["model_name"] for r in get("variable model")] == ["tiny-a", "tiny-b"]
    assert [r["task"] for r in get("variable task")] == ["demo_gen", "demo_mc"]
    assert [r["metric"] for r in get("variable metric")] == ["acc", "exact_match"]

    history = get("Score history")
    a_points = [r for r in history if r["series"].startswith("tiny-a")]
    assert [r["value"] for r in a_points] == [*HISTORY, 0.46]  # the invalid 0.05 is excluded
    last = a_points[-1]
    assert last["band_low"] < 0.49 < 0.51 < last["band_high"] and last["value"] < last["band_low"]
    assert a_points[0]["band_low"] is None  # no history before the first run

    board = {(r["model_name"], r["task"]): r["value"] for r in get("Latest leaderboard")}
    assert board == {("tiny-a", "demo_mc"): 0.46, ("tiny-b", "demo_mc"): 0.33}

    assert get("Regressions in range")[0]["regressions"] == 1
    assert get("Invalid runs in range")[0]["invalid_runs"] == 1
    reg = get("Regressions (>")
    assert [(r["model_name"], r["task"], r["metric"], r["value"]) for r in reg] == [
        ("tiny-a", "demo_mc", "acc", 0.46)
    ]
    assert reg[0]["history_n"] == 8 and reg[0]["z"] < -2

    throughput = get("Eval throughput")
    assert len(throughput) == 12 and {r["samples_per_min"] for r in throughput} == {120.0}

    temps = get("GPU temperature")
    assert [r["temperature_c"] for r in temps] == [88.0]
    assert temps[0]["series"] == "GPU 0"

    flagged = {(r["flag"], r["model_name"]) for r in get("Invalid, non-reproducible")}
    assert flagged == {("invalid", "tiny-a"), ("non_reproducible", "tiny-b")}
    invalid = next(r for r in get("Invalid, non-reproducible") if r["flag"] == "invalid")
    assert "temperature above 82 °C" in invalid["detail"]

    repro = get("Reproducibility-window")
    assert [(r["model_name"], r["value"], r["reference_value"]) for r in repro] == [
        ("tiny-b", 0.33, 0.30)
    ]

    assert get("alert evallab-regression") == [{"model_name": "tiny-a", "regressions": 1}]
    assert get("alert evallab-invalid-runs") == [{"model_name": "tiny-a", "invalid_runs": 1}]


def test_grafanas_role_reads_the_views_and_changes_nothing(reader_dsn: str) -> None:
    views = sorted(
        {v.lower() for q in load_queries(GRAFANA) for v in re.findall(r"\bv_\w+", q.sql)}
    )
    assert "v_latest_scores" in views and len(views) >= 6

    async def go() -> None:
        conn = await asyncpg.connect(reader_dsn)
        try:
            assert await conn.fetchval("SELECT current_schema()") == "evallab"
            for view in views:
                await conn.fetch(f"SELECT * FROM {view} LIMIT 1")
            # Read-only sessions by default; and with read-write asked for, no privilege either.
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await conn.execute("DELETE FROM runs")
            await conn.execute("SET default_transaction_read_only = off")
            attempts = [
                "INSERT INTO schema_migrations VALUES (99, 'x', 'x', now())",
                "UPDATE runs SET status = 'succeeded'",
                "DELETE FROM campaigns",
                "CREATE TABLE evallab.grafana_notes (id int)",
                "CREATE TABLE public.grafana_notes (id int)",
                "CREATE VIEW v_mine AS SELECT 1",
                "DROP VIEW v_latest_scores",
                "COPY (SELECT 1) TO PROGRAM 'id'",
            ]
            for sql in attempts:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
        finally:
            await conn.close()

    run(go())


def test_queries_are_silent_on_an_empty_lab(migrated_dsn: str) -> None:
    async def go() -> dict[str, int]:
        conn = await asyncpg.connect(migrated_dsn)
        try:
            return {q.source: len(await conn.fetch(expand(q))) for q in load_queries(GRAFANA)}
        finally:
            await conn.close()

    counts = run(go())
    # Only the two count(*) stat panels return a row (with 0); alerts stay without data (OK).
    assert {k: v for k, v in counts.items() if v} == {
        by_source(load_queries(GRAFANA), "Regressions in range").source: 1,
        by_source(load_queries(GRAFANA), "Invalid runs in range").source: 1,
    }


def test_panels_only_query_the_views() -> None:
    for q in load_queries(GRAFANA):
        tables = {t.lower() for t in re.findall(r"\bFROM\s+(\w+)", q.sql, flags=re.IGNORECASE)}
        assert tables and all(t.startswith("v_") for t in tables), (q.source, tables)


def test_committed_files_match_the_generator(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboards.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for rel in ("dashboards/evallab-overview.json", "provisioning/alerting/evallab-alerts.yaml"):
        assert (tmp_path / rel).read_text() == (GRAFANA / rel).read_text(), rel
    board = json.loads((GRAFANA / "dashboards/evallab-overview.json").read_text())
    assert board["schemaVersion"] == 41
    targets = [t for p in board["panels"] for t in p["targets"]]
    assert all(
        t["editorMode"] == "code" and t["rawQuery"] and t["datasource"]["uid"] == "evallab-pg"
        for t in targets
    )
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/evallab.yaml").read_text())
    assert ds["datasources"][0]["uid"] == "evallab-pg"
    assert ds["datasources"][0]["url"] == "${EVALLAB_PG_HOST}:${EVALLAB_PG_PORT}"
    # Grafana logs in as the read-only role `evallab db roles` creates.
    assert ds["datasources"][0]["user"] == "${EVALLAB_GRAFANA_DB_USER}"
    assert ds["datasources"][0]["secureJsonData"] == {"password": "${EVALLAB_GRAFANA_DB_PASSWORD}"}


def test_macro_expansion_matches_grafana() -> None:
    sql = (
        "SELECT 1 WHERE $__timeFilter(time) AND a IN ($model) AND b = '$metric' AND "
        "c > $__timeFrom() AND d < $__timeTo() AND e = '$__interval' AND f = $__interval_ms"
    )
    out = expand_macros(
        sql,
        time_from=T0,
        time_to=T0 + timedelta(hours=1),
        interval="5m",
        variables={"model": ["a", "o'b"], "metric": "acc"},
    )
    assert out == (
        "SELECT 1 WHERE time BETWEEN '2026-01-01T02:00:00Z' AND '2026-01-01T03:00:00Z' AND "
        "a IN ('a','o''b') AND b = 'acc' AND c > '2026-01-01T02:00:00Z' AND "
        "d < '2026-01-01T03:00:00Z' AND e = '5m' AND f = 300000"
    )
    with pytest.raises(ValueError, match=r"\$task"):
        expand_macros("SELECT $task", time_from=T0, time_to=T0, variables={})


def test_telemetry_rollups_follow_ingest_and_survive_reingest(migrated_dsn: str) -> None:
    from evallab.store.ingest import ingest_run

    async def go() -> list[Any]:
        conn = await asyncpg.connect(migrated_dsn)
        try:
            cid = await new_campaign(conn)
            samples = [
                (
                    T0 + timedelta(seconds=2 * i),
                    0,
                    70.0 + i,
                    300.0,
                    1980.0,
                    2619.0,
                    1000.0,
                    90.0,
                    [],
                    0,
                )
                for i in range(45)
            ]  # 90 s: two minute buckets
            rid = await add_run(conn, cid, started_at=T0, telemetry=samples)
            rec = await conn.fetchrow("SELECT * FROM runs WHERE run_id = $1", rid)
            assert rec is not None
            # Re-ingest the same run (what `evallab ingest` does after a lost connection).
            from evallab.store.records import RunRecord

            record = RunRecord(**{c: rec[c] for c in RunRecord.columns()})
            await ingest_run(conn, record, [], [], samples)
            return [
                *await conn.fetch("SELECT time, temperature_c FROM v_gpu_telemetry_1m ORDER BY 1"),
                *await conn.fetch("SELECT time, temperature_c FROM v_gpu_telemetry_1h"),
            ]
        finally:
            await conn.close()

    rows = run(go())
    assert [(r["time"], r["temperature_c"]) for r in rows] == [
        (T0, 99.0),
        (T0 + timedelta(minutes=1), 114.0),
        (T0, 114.0),
    ]


def test_backup_panels_and_the_stale_backup_alert(migrated_dsn: str) -> None:
    from evallab.store.backups import BackupRow

    queries = load_queries(GRAFANA)
    alert = by_source(queries, "alert evallab-backup-stale")
    age_panel = by_source(queries, "Hours since the last good backup")
    table_panel = by_source(queries, "panel 'Backups'")
    now = datetime.now(UTC)

    def query(q: GrafanaQuery) -> list[dict[str, Any]]:
        sql = expand_macros(
            q.sql, time_from=now - timedelta(days=7), time_to=now, interval="1h", variables={}
        )

        async def go() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(migrated_dsn)
            try:
                return [dict(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

        return run(go())

    def backup(hours_ago: float) -> None:
        with Store(migrated_dsn) as store:
            store.record_backup(
                BackupRow(
                    now - timedelta(hours=hours_ago),
                    f"/b/{hours_ago}.dump",
                    "a" * 64,
                    1234,
                    {"public.runs": 1},
                    "18.4",
                    "18.4",
                    0.5,
                )
            )

    # A lab without runs has nothing to protect: no row, the alert stays without data (OK).
    assert query(alert) == [] and query(age_panel) == []

    async def seed_run() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        try:
            await add_run(conn, await new_campaign(conn), started_at=now - timedelta(days=3))
        finally:
            await conn.close()

    run(seed_run())
    # Results, never backed up: unprotected since the first run started, 72 h ago -> fires.
    [row] = query(alert)
    assert 71.9 < row["hours_since_good_backup"] < 72.1
    backup(30)
    [row] = query(alert)
    assert 29.9 < row["hours_since_good_backup"] < 30.1  # still above 24: fires
    backup(2)
    [row] = query(age_panel)
    assert 1.9 < row["hours_since_good_backup"] < 2.1  # below 24: quiet
    assert [(r["path"], r["size_bytes"], r["total_rows"]) for r in query(table_panel)] == [
        ("/b/2.dump", 1234, 1),
        ("/b/30.dump", 1234, 1),
    ]
