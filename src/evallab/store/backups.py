"""Queries for backups: the server's version, table digests, a snapshot to dump from, the log.

A backup's manifest holds, per table, its row count and a content digest computed here. The
digest is the md5 of the table's row md5s in sorted order, so it depends only on the rows (not
on their physical order, and tables without a primary key such as ``telemetry`` get one too).
Rows are rendered as text under fixed session settings (UTC, ISO dates, shortest exact floats,
hex bytea), so the same rows give the same digest on any server and in any session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg

from evallab.store.connection import StoreConnection

__all__ = ["BackupQueries", "BackupRow", "ServerVersion", "TableDigest"]

T = TypeVar("T")

# Every schema a user (or the lab) created: not PostgreSQL's own.
_USER_SCHEMAS = """
n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""

_TABLES_SQL = f"""
SELECT n.nspname AS schema, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMAS}
 ORDER BY 1, 2
"""

_OBJECTS_SQL = f"""
SELECT n.nspname || '.' || c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMAS}
UNION ALL
SELECT n.nspname || '.' || p.proname || '()'
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {_USER_SCHEMAS}
 ORDER BY 1
"""

# Text renderings that don't depend on the session: the digest must be the same after a restore.
_FIXED_SETTINGS = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TableDigest:
    """One table's row count and content digest.

    Attributes:
        table: ``schema.table``.
        rows: How many rows it holds.
        md5: md5 over the sorted md5s of its rows' text.
    """

    table: str
    rows: int
    md5: str


@dataclass(frozen=True)
class ServerVersion:
    """The server's version: ``major`` (e.g. 18) and the full text (``18.4``)."""

    major: int
    text: str


@dataclass(frozen=True)
class BackupRow:
    """One good backup, as recorded in ``backups``."""

    created_at: datetime
    path: str
    sha256: str
    size_bytes: int
    table_rows: dict[str, int]
    server_version: str
    pg_dump_version: str
    duration_s: float


async def _digests(conn: asyncpg.Connection) -> list[TableDigest]:
    out = []
    for t in await conn.fetch(_TABLES_SQL):
        qualified = f"{_ident(t['schema'])}.{_ident(t['name'])}"
        row = await conn.fetchrow(
            f"""
            SELECT count(*) AS n,
                   md5(coalesce(string_agg(h, '' ORDER BY h COLLATE "C"), '')) AS digest
              FROM (SELECT md5(t::text) AS h FROM {qualified} t) s
            """
        )
        assert row is not None
        out.append(TableDigest(f"{t['schema']}.{t['name']}", int(row["n"]), str(row["digest"])))
    return out


class BackupQueries(StoreConnection):
    """The store's methods for ``evallab backup`` and ``evallab restore``."""

    def server_version(self) -> ServerVersion:
        """The server's major version and version text."""

        async def work(conn: asyncpg.Connection) -> ServerVersion:
            num = int(await conn.fetchval("SHOW server_version_num"))
            text = str(await conn.fetchval("SHOW server_version")).split()[0]
            return ServerVersion(num // 10000, text)

        return self.run(work)

    def table_digests(self) -> list[TableDigest]:
        """Row count and content digest of every table, in one consistent snapshot."""

        async def work(conn: asyncpg.Connection) -> list[TableDigest]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                for setting in _FIXED_SETTINGS:
                    await conn.execute(setting)
                return await _digests(conn)

        return self.run(work)

    def with_exported_snapshot(self, dump: Callable[[str], T]) -> tuple[list[TableDigest], T]:
        """Digest every table and call ``dump(snapshot_id)`` while the snapshot stays open.

        ``pg_dump --snapshot=ID`` then dumps exactly the rows the digests describe, even while
        a campaign keeps writing.

        Args:
            dump: Runs the dump (in a worker thread) given the exported snapshot's id.

        Returns:
            The digests and what ``dump`` returned.
        """

        async def work(conn: asyncpg.Connection) -> tuple[list[TableDigest], T]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
                for setting in _FIXED_SETTINGS:
                    await conn.execute(setting)
                digests = await _digests(conn)
                result = await asyncio.to_thread(dump, snapshot)
                return digests, result

        return self.run(work)

    def user_objects(self) -> list[str]:
        """Tables, views, sequences and functions in the database's own schemas (empty: none)."""

        async def work(conn: asyncpg.Connection) -> list[str]:
            return [str(r["name"]) for r in await conn.fetch(_OBJECTS_SQL)]

        return self.run(work)

    def ensure_schemas(self, names: list[str]) -> list[str]:
        """Create the schemas in ``names`` that don't exist yet (as the connected role).

        Returns:
            The schemas that could not be created (the role lacks CREATE on the database).
        """

        async def work(conn: asyncpg.Connection) -> list[str]:
            refused = []
            for name in names:
                exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", name)
                if exists:
                    continue
                try:
                    await conn.execute(f"CREATE SCHEMA {_ident(name)}")
                except asyncpg.InsufficientPrivilegeError:
                    refused.append(name)
            return refused

        return self.run(work)

    def record_backup(self, row: BackupRow) -> None:
        """Record a good backup (Grafana's "last good backup" panel and alert read these)."""

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                """
                INSERT INTO backups (created_at, path, sha256, size_bytes, total_rows,
                                     table_rows, server_version, pg_dump_version, duration_s)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)
                """,
                row.created_at,
                row.path,
                row.sha256,
                row.size_bytes,
                sum(row.table_rows.values()),
                json.dumps(row.table_rows, sort_keys=True),
                row.server_version,
                row.pg_dump_version,
                row.duration_s,
            )

        self.run(work)
