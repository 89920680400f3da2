"""Forward-only, checksummed schema migrations plus re-created views, all in the lab's schema.

``sql/migrations/NNNN_name.sql`` files are applied in order and recorded with their sha256 in
``schema_migrations``; editing an applied file is refused. The views in ``sql/views/*.sql``
(Grafana's contract) are re-created after every migrate. Both folders ship inside the package
(``evallab/store/sql/``), so a wheel install migrates without a source checkout.

Everything happens in the lab's schema (:func:`evallab.store.db.configured_schema`), set as the
transaction's only ``search_path`` so the SQL files name no schema, and in ONE transaction:
pending migrations and views land together or not at all. Before touching anything, a schema
holding objects the lab did not create is refused (:mod:`evallab.store.schema_guard`), and the
tables an earlier version kept in ``public`` are moved into the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from evallab.errors import MigrationError
from evallab.store.connection import StoreConnection
from evallab.store.db import configured_schema
from evallab.store.role_sql import quote_ident
from evallab.store.schema_guard import (
    adopt_public,
    bookkeeping_exists,
    refuse_foreign,
    schema_exists,
)
from evallab.store.sql_files import (
    BOOKKEEPING_TABLE,
    SQL_DIR,
    Migration,
    lab_objects,
    load_migrations,
    view_files,
)

__all__ = [
    "SQL_DIR",
    "MigrateOutcome",
    "Migration",
    "MigrationStatus",
    "SchemaQueries",
    "apply_views",
    "load_migrations",
    "migrate",
    "migrate_schema",
    "migration_status",
]

_LOCK_ID = 712_004_113  # advisory lock: two labs migrating the same database take turns


@dataclass(frozen=True)
class MigrationStatus:
    """A migration and whether (and when) the database applied it."""

    version: int
    name: str
    applied: bool
    applied_at: str | None
    checksum_ok: bool


@dataclass(frozen=True)
class MigrateOutcome:
    """What one migrate did.

    Attributes:
        schema: The schema migrated.
        applied: The migrations applied now.
        moved: Objects of an earlier version moved from ``public`` into the schema.
        views: How many view files ran.
    """

    schema: str
    applied: list[Migration] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    views: int = 0


def _table(schema: str) -> str:
    return f"{quote_ident(schema)}.{BOOKKEEPING_TABLE}"


async def _ensure_table(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {_table(schema)} (
            version integer PRIMARY KEY,
            name text NOT NULL,
            sha256 text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


async def migration_status(
    conn: asyncpg.Connection, folder: Path | None = None, *, schema: str | None = None
) -> list[MigrationStatus]:
    """Every known migration with its applied state and checksum check (changes nothing)."""
    schema = schema or configured_schema()
    applied: dict[int, asyncpg.Record] = {}
    if await bookkeeping_exists(conn, schema):
        applied = {
            r["version"]: r
            for r in await conn.fetch(
                f"SELECT version, name, sha256, applied_at FROM {_table(schema)}"
            )
        }
    out = []
    for m in load_migrations(folder):
        row = applied.get(m.version)
        out.append(
            MigrationStatus(
                m.version,
                m.name,
                row is not None,
                row["applied_at"].isoformat() if row else None,
                row is None or row["sha256"] == m.sha256,
            )
        )
    return out


async def migrate(
    conn: asyncpg.Connection,
    folder: Path | None = None,
    views_folder: Path | None = None,
    *,
    schema: str | None = None,
) -> list[Migration]:
    """Apply pending migrations, then re-create the views. Returns the migrations applied.

    See :func:`migrate_schema`.
    """
    outcome = await migrate_schema(conn, folder, views_folder, schema=schema)
    return outcome.applied


async def migrate_schema(
    conn: asyncpg.Connection,
    folder: Path | None = None,
    views_folder: Path | None = None,
    *,
    schema: str | None = None,
) -> MigrateOutcome:
    """Migrate the lab's schema in one transaction: adopt, apply pending migrations, views.

    Afterwards the connection's ``search_path`` is the schema.

    Args:
        conn: The connection (any role that owns the schema, or may create it).
        folder: The migration files (default: the package's).
        views_folder: The view files (default: the package's).
        schema: The lab's schema (default: the configured one).

    Raises:
        MigrationError: the schema holds objects the lab did not create; an applied migration's
            file changed or is missing; this role may not create the schema; SQL failed.
            Nothing was changed then.
    """
    schema = schema or configured_schema()
    migrations = load_migrations(folder)
    objects = lab_objects(folder, views_folder)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        # Unqualified names in the SQL files resolve to (and are created in) the schema only.
        await conn.execute("SELECT set_config('search_path', $1, false)", quote_ident(schema))
        if await schema_exists(conn, schema):
            await refuse_foreign(conn, schema, objects)
            await _check_may_create(conn, schema)
        else:
            await _create_schema(conn, schema)
        moved = await adopt_public(conn, schema, migrations, objects)
        await _ensure_table(conn, schema)
        applied = await _apply_pending(conn, schema, migrations)
        views = await apply_views(conn, views_folder)
        await _pin_functions(conn, schema, objects.functions)
    return MigrateOutcome(schema, applied, moved, views)


async def _check_may_create(conn: asyncpg.Connection, schema: str) -> None:
    if await conn.fetchval("SELECT has_schema_privilege($1, 'CREATE')", schema):
        return
    user = await conn.fetchval("SELECT current_user")
    raise MigrationError(
        f"role {user} may not create tables in schema {schema}",
        value=schema,
        fix=f"have an admin make it the owner: ALTER SCHEMA {quote_ident(schema)} OWNER TO "
        f"{quote_ident(user)}; (or run `evallab db roles --admin-dsn ...`)",
    )


async def _create_schema(conn: asyncpg.Connection, schema: str) -> None:
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    except asyncpg.InsufficientPrivilegeError as exc:
        user = await conn.fetchval("SELECT current_user")
        raise MigrationError(
            f"schema {schema} does not exist and role {user} may not create it",
            value=schema,
            fix=f"have an admin create it: CREATE SCHEMA {quote_ident(schema)} AUTHORIZATION "
            f"{quote_ident(user)}; (or run `evallab db roles --admin-dsn ...`)",
        ) from exc


async def _apply_pending(
    conn: asyncpg.Connection, schema: str, migrations: list[Migration]
) -> list[Migration]:
    applied = {
        r["version"]: r
        for r in await conn.fetch(f"SELECT version, name, sha256 FROM {_table(schema)}")
    }
    known = {m.version for m in migrations}
    missing = sorted(set(applied) - known)
    if missing:
        raise MigrationError(
            "the database has applied migrations this checkout doesn't have",
            value=[f"{v:04d}_{applied[v]['name']}" for v in missing],
            fix="update the lab to a version that includes them (migrations are forward-only)",
        )
    done: list[Migration] = []
    for m in migrations:
        row = applied.get(m.version)
        if row is not None:
            if row["sha256"] != m.sha256:
                raise MigrationError(
                    f"migration {m.path.name} was edited after it was applied "
                    f"(recorded sha256 {row['sha256'][:12]}, file now {m.sha256[:12]})",
                    value=m.path,
                    fix="restore the file as it was applied (git checkout it) and put the "
                    "change in a new migration file",
                )
            continue
        try:
            await conn.execute(m.sql)
            await conn.execute(
                f"INSERT INTO {_table(schema)} (version, name, sha256) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                m.sha256,
            )
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {m.path.name} failed (nothing was applied): {exc}",
                value=m.path,
                fix="fix the SQL in that (not yet applied) file",
            ) from exc
        done.append(m)
    return done


async def apply_views(conn: asyncpg.Connection, folder: Path | None = None) -> int:
    """Re-create every view in ``sql/views`` (sorted by file name); returns how many files ran."""
    files = view_files(folder)
    for path in files:
        try:
            async with conn.transaction():
                await conn.execute(path.read_text())
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"view file {path.name} failed (nothing was applied): {exc}",
                value=path,
                fix="fix the view's SQL",
            ) from exc
    return len(files)


async def _pin_functions(conn: asyncpg.Connection, schema: str, names: frozenset[str]) -> None:
    """Give the lab's functions the schema as their own ``search_path``.

    A trigger function resolves the tables it names by the search_path of whoever fires it; a
    session working with another search_path (an admin in psql) would miss them.
    """
    rows = await conn.fetch(
        """
        SELECT p.oid::regprocedure::text AS signature FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 AND p.proname = ANY($2::text[])
          AND pg_get_userbyid(p.proowner) = current_user
        """,
        schema,
        sorted(names),
    )
    for r in rows:
        await conn.execute(
            f"ALTER FUNCTION {r['signature']} SET search_path = {quote_ident(schema)}"
        )


class SchemaQueries(StoreConnection):
    """The store's schema operations (``evallab db migrate`` / ``db status``)."""

    def migrate(self) -> list[Migration]:
        """Apply pending migrations and re-create the views; the migrations applied now."""
        return self.migrate_schema().applied

    def migrate_schema(self) -> MigrateOutcome:
        """Migrate the lab's schema (see :func:`migrate_schema`)."""
        return self.run(lambda conn: migrate_schema(conn, schema=self.schema))

    def migration_status(self) -> list[MigrationStatus]:
        """Every known migration with its applied state and checksum check."""
        return self.run(lambda conn: migration_status(conn, schema=self.schema))
