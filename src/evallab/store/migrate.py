"""Forward-only, checksummed schema migrations plus re-created views.

``sql/migrations/NNNN_name.sql`` files are applied in order, each in its own transaction, and
recorded with their sha256 in ``schema_migrations``. Editing an applied file is refused. The
views in ``sql/views/*.sql`` (Grafana's contract) are re-created after every migrate. Both
folders ship inside the package (``evallab/store/sql/``), so a wheel install migrates without a
source checkout.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from evallab.errors import MigrationError
from evallab.store.connection import StoreConnection

__all__ = [
    "SQL_DIR",
    "Migration",
    "MigrationStatus",
    "SchemaQueries",
    "load_migrations",
    "migrate",
    "migration_status",
]

#: The package's SQL: ``migrations/`` and ``views/``. Package data next to this module (declared
#: in pyproject.toml), never the checkout, so every install finds the same files.
SQL_DIR = Path(str(resources.files("evallab.store").joinpath("sql")))

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 712_004_113  # advisory lock: two labs migrating the same database take turns


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path
    sha256: str

    @property
    def sql(self) -> str:
        return self.path.read_text()


@dataclass(frozen=True)
class MigrationStatus:
    """A migration and whether (and when) the database applied it."""

    version: int
    name: str
    applied: bool
    applied_at: str | None
    checksum_ok: bool


def load_migrations(folder: Path | None = None) -> list[Migration]:
    """Read and validate the migration files in ``folder`` (default ``sql/migrations``)."""
    folder = folder or SQL_DIR / "migrations"
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(
                "migration file name must look like NNNN_name.sql",
                value=path,
                fix="rename it, e.g. 0003_add_tags.sql",
            )
        found.append(
            Migration(
                int(m.group(1)), m.group(2), path, hashlib.sha256(path.read_bytes()).hexdigest()
            )
        )
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(
            "two migration files share a version number",
            value=sorted(v for v in versions if versions.count(v) > 1),
            fix="renumber the newer one",
        )
    return found


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            sha256 text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


async def migration_status(
    conn: asyncpg.Connection, folder: Path | None = None
) -> list[MigrationStatus]:
    """Every known migration with its applied state and checksum check."""
    await _ensure_table(conn)
    applied = {
        r["version"]: r
        for r in await conn.fetch("SELECT version, name, sha256, applied_at FROM schema_migrations")
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
    conn: asyncpg.Connection, folder: Path | None = None, views_folder: Path | None = None
) -> list[Migration]:
    """Apply pending migrations, then re-create the views. Returns the migrations applied.

    Raises:
        MigrationError: an applied migration's file changed, a file is missing, or SQL failed.
    """
    migrations = load_migrations(folder)
    applied_now: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await _ensure_table(conn)
        applied = {
            r["version"]: r
            for r in await conn.fetch("SELECT version, name, sha256 FROM schema_migrations")
        }
        known = {m.version for m in migrations}
        missing = sorted(set(applied) - known)
        if missing:
            raise MigrationError(
                "the database has applied migrations this checkout doesn't have",
                value=[f"{v:04d}_{applied[v]['name']}" for v in missing],
                fix="update the lab to a version that includes them (migrations are forward-only)",
            )
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
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.sha256,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {m.path.name} failed: {exc}",
                    value=m.path,
                    fix="fix the SQL in that (not yet applied) file",
                ) from exc
            applied_now.append(m)
        await apply_views(conn, views_folder)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now


async def apply_views(conn: asyncpg.Connection, folder: Path | None = None) -> int:
    """Re-create every view in ``sql/views`` (sorted by file name); returns how many files ran."""
    folder = folder or SQL_DIR / "views"
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
    for path in files:
        try:
            async with conn.transaction():
                await conn.execute(path.read_text())
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"view file {path.name} failed: {exc}", value=path, fix="fix the view's SQL"
            ) from exc
    return len(files)


class SchemaQueries(StoreConnection):
    """The store's schema operations (``evallab db migrate`` / ``db status``)."""

    def migrate(self) -> list[Migration]:
        """Apply pending migrations and re-create the views; the migrations applied now."""
        return self.run(lambda conn: migrate(conn))

    def migration_status(self) -> list[MigrationStatus]:
        """Every known migration with its applied state and checksum check."""
        return self.run(lambda conn: migration_status(conn))
