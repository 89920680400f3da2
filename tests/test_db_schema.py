"""The lab keeps to its own schema, on a shared server it does not own.

A second, separately started PostgreSQL server (``second_pg``) holds an application's own
``public.customers`` and ``public.v_invalid_runs``; the lab works as a plain role that owns only
schema ``evallab`` and may not create anything in ``public``.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from evallab.errors import MigrationError
from evallab.store import Store
from evallab.store.db import connect
from evallab.store.migrate import SQL_DIR, migrate_schema
from tests.helpers import evallab, fetch
from tests.pg_server import PgServer, load_earlier_layout

PUBLIC_RELATIONS = (
    "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
    "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'S', 'i', 'm') "
    "ORDER BY 1"
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def shared_database(
    pg: PgServer, *, schema_owned: bool = True, their_view: bool = True
) -> tuple[str, str]:
    """A database with an application's own objects and a role for the lab; (db, lab DSN)."""
    db = pg.create_database()
    role, password = pg.create_role()
    view = "CREATE VIEW public.v_invalid_runs AS SELECT id AS run_id FROM public.customers"
    pg.sql(
        db,
        "CREATE TABLE public.customers (id int PRIMARY KEY, name text)",
        "INSERT INTO public.customers VALUES (1, 'acme')",
        *([view] if their_view else []),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        *([f'CREATE SCHEMA evallab AUTHORIZATION "{role}"'] if schema_owned else []),
    )
    return db, pg.dsn(db, role, password)


def test_db_migrate_on_a_shared_server_creates_nothing_outside_its_schema(
    second_pg: PgServer,
) -> None:
    db, dsn = shared_database(second_pg)
    admin = second_pg.dsn(db)
    before = [tuple(r) for r in fetch(admin, PUBLIC_RELATIONS, "public")]
    their_view = "SELECT pg_get_viewdef('public.v_invalid_runs'::regclass)"
    view_before = fetch(admin, their_view)[0][0]

    proc = evallab(["db", "migrate"], dsn=dsn)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "applied 0001_init.sql" in proc.stdout

    assert [tuple(r) for r in fetch(admin, PUBLIC_RELATIONS, "public")] == before
    assert fetch(admin, their_view)[0][0] == view_before
    assert fetch(admin, "SELECT name FROM public.customers")[0][0] == "acme"
    lab = {r[0] for r in fetch(admin, PUBLIC_RELATIONS, "evallab")}
    assert {"schema_migrations", "campaigns", "runs", "v_invalid_runs", "v_latest_scores"} <= lab
    # The lab's queries work through its own v_invalid_runs, not the application's.
    with Store(dsn) as store:
        assert all(s.applied for s in store.migration_status())
        assert store.migrate() == []
    assert fetch(dsn, "SELECT count(*) FROM evallab.v_invalid_runs")[0][0] == 0


def test_a_schema_holding_a_foreign_table_is_refused_in_one_paragraph(
    second_pg: PgServer,
) -> None:
    db, dsn = shared_database(second_pg)
    second_pg.sql(db, "CREATE TABLE evallab.invoices (id int)")
    proc = evallab(["db", "migrate"], dsn=dsn)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    assert message.startswith("error: schema evallab holds tables or views the lab did not create")
    assert "invoices (table)" in message and "Fix: give the lab a schema of its own" in message
    assert "EVALLAB_DB_SCHEMA" in message
    # Nothing was created next to it.
    assert [r[0] for r in fetch(second_pg.dsn(db), PUBLIC_RELATIONS, "evallab")] == ["invoices"]


def test_another_tools_schema_migrations_is_refused(second_pg: PgServer) -> None:
    db, dsn = shared_database(second_pg)
    second_pg.sql(
        db,
        "CREATE TABLE evallab.schema_migrations (version varchar PRIMARY KEY)",
        "INSERT INTO evallab.schema_migrations VALUES ('20240101000000')",
    )
    with Store(dsn) as store, pytest.raises(MigrationError) as exc:
        store.migrate()
    assert "holds a schema_migrations table that is not the lab's" in exc.value.message
    assert "version character varying" in exc.value.message
    assert exc.value.value == "evallab.schema_migrations"
    rows = fetch(second_pg.dsn(db), PUBLIC_RELATIONS, "evallab")
    assert [r[0] for r in rows if r[1] == "r"] == ["schema_migrations"]


def test_a_missing_schema_the_role_may_not_create_names_the_sql_to_run(
    second_pg: PgServer,
) -> None:
    _, dsn = shared_database(second_pg, schema_owned=False)
    with Store(dsn) as store, pytest.raises(MigrationError) as exc:
        store.migrate()
    assert "schema evallab does not exist and role" in exc.value.message
    assert 'CREATE SCHEMA "evallab" AUTHORIZATION' in exc.value.fix


def test_a_failing_view_leaves_no_migration_applied(fresh_dsn: str, tmp_path: Path) -> None:
    views = tmp_path / "views"
    shutil.copytree(SQL_DIR / "views", views)
    (views / "99_broken.sql").write_text("CREATE VIEW v_broken AS SELECT no_such_column FROM runs;")

    async def go() -> list[str]:
        conn = await connect(fresh_dsn)
        try:
            with pytest.raises(MigrationError) as exc:
                await migrate_schema(conn, views_folder=views)
            assert "view file 99_broken.sql failed (nothing was applied)" in exc.value.message
            rows = await conn.fetch(PUBLIC_RELATIONS, "evallab")
            return [r[0] for r in rows]
        finally:
            await conn.close()

    assert run(go()) == []


def test_db_migrate_moves_an_earlier_versions_tables_out_of_public(second_pg: PgServer) -> None:
    db, dsn = shared_database(second_pg, their_view=False)
    role = dsn.split("//")[1].split(":")[0]
    # Earlier versions ran as a role that could create in public, and put everything there.
    second_pg.sql(db, f'GRANT CREATE ON SCHEMA public TO "{role}"')

    async def old_lab() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await load_earlier_layout(conn)
            await conn.execute(
                "INSERT INTO campaigns (campaign_id, name, spec, spec_sha256, spec_path, "
                "lab_version, lab_commit, started_at, status) VALUES (gen_random_uuid(), "
                "'before', '{}'::jsonb, 's', 'p', '0.1', 'c', now(), 'succeeded')"
            )
        finally:
            await conn.close()

    run(old_lab())
    proc = evallab(["db", "migrate"], dsn=dsn)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "from schema public into schema evallab" in proc.stdout
    assert "database is up to date" in proc.stdout  # nothing to apply: it was all there

    admin = second_pg.dsn(db)
    public = {r[0] for r in fetch(admin, PUBLIC_RELATIONS, "public") if r[1] in ("r", "v")}
    assert public == {"customers"}  # the application's, untouched
    assert fetch(admin, "SELECT name FROM evallab.campaigns")[0][0] == "before"
    rollup = fetch(
        admin,
        "SELECT n.nspname, p.proconfig FROM pg_proc p JOIN pg_namespace n "
        "ON n.oid = p.pronamespace WHERE p.proname = 'telemetry_rollup'",
    )
    assert [tuple(r) for r in rollup] == [("evallab", ["search_path=evallab"])]
