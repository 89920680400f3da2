"""What the lab checks before it migrates a schema, and how it adopts an earlier layout.

* :func:`refuse_foreign` — the lab's schema must hold only the lab's objects: a table or view
  the lab's SQL files don't create, or a ``schema_migrations`` table of another shape (another
  tool's bookkeeping), is refused with one paragraph naming it.
* :func:`adopt_public` — earlier versions kept the lab's tables in ``public``; when ``public``
  holds the lab's bookkeeping table recording only the lab's migrations, the lab's tables, views
  and functions there are moved into the lab's schema (``ALTER ... SET SCHEMA``), inside the
  migrating transaction.
"""

from __future__ import annotations

import asyncpg

from evallab.errors import MigrationError
from evallab.store.role_sql import quote_ident
from evallab.store.sql_files import BOOKKEEPING_TABLE, LabObjects, Migration

__all__ = ["adopt_public", "bookkeeping_exists", "refuse_foreign", "schema_exists"]

# The lab's bookkeeping table, column by column (see migrate._ensure_table).
_BOOKKEEPING_SHAPE = {
    "version": "integer",
    "name": "text",
    "sha256": "text",
    "applied_at": "timestamp with time zone",
}
_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}
_OWN_SCHEMA_FIX = (
    'give the lab a schema of its own: set EVALLAB_DB_SCHEMA (or schema = "..." in the '
    "[database] table of the config file) to a name no other application uses"
)


async def schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    """Whether ``schema`` exists."""
    found = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    return found is not None


async def _bookkeeping_columns(conn: asyncpg.Connection, schema: str) -> dict[str, str] | None:
    rows = await conn.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = $1 AND c.relname = $2
        """,
        schema,
        BOOKKEEPING_TABLE,
    )
    return {r["attname"]: r["type"] for r in rows} if rows else None


async def bookkeeping_exists(conn: asyncpg.Connection, schema: str) -> bool:
    """Whether ``schema`` holds the lab's bookkeeping table.

    Raises:
        MigrationError: it holds a table of that name with another shape.
    """
    columns = await _bookkeeping_columns(conn, schema)
    if columns is None:
        return False
    if columns != _BOOKKEEPING_SHAPE:
        shape = ", ".join(f"{k} {v}" for k, v in columns.items())
        raise MigrationError(
            f"schema {schema} holds a {BOOKKEEPING_TABLE} table that is not the lab's (columns: "
            f"{shape}; the lab's has version integer, name text, sha256 text, applied_at "
            "timestamptz): another tool keeps its migrations there",
            value=f"{schema}.{BOOKKEEPING_TABLE}",
            fix=_OWN_SCHEMA_FIX,
        )
    return True


async def refuse_foreign(conn: asyncpg.Connection, schema: str, objects: LabObjects) -> None:
    """Refuse a schema that holds tables or views the lab did not create.

    Raises:
        MigrationError: naming what was found, or a foreign bookkeeping table.
    """
    await bookkeeping_exists(conn, schema)
    rows = await conn.fetch(
        """
        SELECT c.relname, c.relkind::text AS kind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND NOT c.relname = ANY($2::text[])
        ORDER BY c.relname
        """,
        schema,
        sorted(objects.relations),
    )
    if rows:
        found = ", ".join(f"{r['relname']} ({_KINDS[r['kind']]})" for r in rows)
        raise MigrationError(
            f"schema {schema} holds tables or views the lab did not create: {found}; the lab "
            "keeps its schema to itself and will not migrate next to them",
            value=schema,
            fix=f"{_OWN_SCHEMA_FIX}, or move those objects out of schema {schema}",
        )


async def _is_lab_bookkeeping(conn: asyncpg.Connection, migrations: list[Migration]) -> bool:
    """Whether ``public`` holds the lab's bookkeeping table, recording only the lab's files."""
    if await _bookkeeping_columns(conn, "public") != _BOOKKEEPING_SHAPE:
        return False
    names = {m.version: m.name for m in migrations}
    rows = await conn.fetch(f"SELECT version, name FROM public.{BOOKKEEPING_TABLE}")
    return bool(rows) and all(names.get(r["version"]) == r["name"] for r in rows)


async def adopt_public(
    conn: asyncpg.Connection, schema: str, migrations: list[Migration], objects: LabObjects
) -> list[str]:
    """Move an earlier version's tables, views and functions from ``public`` into ``schema``.

    Only when ``public`` holds the lab's bookkeeping table with the lab's migration names and
    ``schema`` holds none yet. Run inside the migrating transaction.

    Returns:
        What was moved (``public.name``), empty when there was nothing to adopt.

    Raises:
        MigrationError: the objects exist but this role may not move them.
    """
    if schema == "public" or await bookkeeping_exists(conn, schema):
        return []
    if not await _is_lab_bookkeeping(conn, migrations):
        return []
    relations = await conn.fetch(
        """
        SELECT c.relname, c.relkind::text AS kind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
          AND c.relname = ANY($1::text[])
        ORDER BY c.relname
        """,
        sorted(objects.relations),
    )
    functions = await conn.fetch(
        """
        SELECT p.proname, p.oid::regprocedure::text AS signature FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname = ANY($1::text[])
        ORDER BY p.proname
        """,
        sorted(objects.functions),
    )
    statements: list[tuple[str, str]] = []
    for r in relations:
        kind = {"v": "VIEW", "m": "MATERIALIZED VIEW"}.get(r["kind"], "TABLE")
        target = f"public.{quote_ident(r['relname'])}"
        statements.append((r["relname"], f"ALTER {kind} {target} SET SCHEMA {quote_ident(schema)}"))
    for f in functions:
        # regprocedure text is already qualified when public is off the search_path.
        signature = f["signature"]
        if not signature.startswith("public."):
            signature = f"public.{signature}"
        statements.append(
            (f["proname"], f"ALTER FUNCTION {signature} SET SCHEMA {quote_ident(schema)}")
        )
    for name, sql in statements:
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"the lab's tables from an earlier version are in schema public, and moving "
                f"public.{name} into schema {schema} failed: {exc}",
                value=f"public.{name}",
                fix="run `evallab db migrate` as the role that owns them, or have an admin run "
                "`evallab db roles --admin-dsn ...`, which hands them to the lab's writer role",
            ) from exc
    return [f"public.{name}" for name, _ in statements]
