"""``evallab db roles``: the lab's writer role and Grafana's read-only role on a server.

With an admin DSN (the embedded server's superuser by default, or ``--admin-dsn`` for a shared
server) the lab creates or updates both roles (:func:`evallab.store.role_sql.role_statements`),
with passwords it generates and keeps in ``<lab home>/secrets.json`` (mode 0600), and returns
their DSNs for the caller to print redacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from evallab.errors import ConfigError, DatabaseError
from evallab.store.db import connect, redact, run_sync
from evallab.store.role_sql import RoleSpec, check_identifier, role_statements
from evallab.store.secrets import Credential, credential, secrets_path

__all__ = ["RolesOutcome", "dsn_as", "server_section", "setup_roles"]


@dataclass(frozen=True)
class RolesOutcome:
    """The roles set up, and where their passwords are.

    Attributes:
        database: The lab's database.
        schema: The lab's schema.
        writer: The lab's role.
        reader: Grafana's read-only role.
        writer_dsn: DSN of the lab's database as the writer (holds the password).
        reader_dsn: DSN of the lab's database as the reader (holds the password).
        secrets_file: The file holding the passwords (mode 0600).
    """

    database: str
    schema: str
    writer: Credential
    reader: Credential
    writer_dsn: str
    reader_dsn: str
    secrets_file: Path


def _parts(dsn: str) -> tuple[str, int, str]:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(
            "the admin DSN must be a postgresql:// URL naming a host",
            value=redact(dsn),
            fix="write it as postgresql://admin:password@host:5432/database",
        )
    database = unquote(parts.path.lstrip("/")) or unquote(parts.username or "")
    if not database:
        raise ConfigError(
            "the admin DSN names no database",
            value=redact(dsn),
            fix="end it with /<the lab's database>",
        )
    return parts.hostname, parts.port or 5432, database


def server_section(dsn: str) -> str:
    """The secrets file section of the server and database of ``dsn`` (``host:port/db``)."""
    host, port, database = _parts(dsn)
    return f"{host}:{port}/{database}"


def dsn_as(dsn: str, cred: Credential) -> str:
    """``dsn`` with its user and password replaced by ``cred``'s."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{cred.user}:{cred.password}@{host}"))


async def _apply(admin_dsn: str, statements: list[str]) -> None:
    conn = await connect(admin_dsn, lab_schema=False)
    try:
        async with conn.transaction():
            for sql in statements:
                await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        raise DatabaseError(
            f"setting up the lab's roles failed: {type(exc).__name__}: {exc}",
            value=redact(admin_dsn),
            fix="use an admin role that may create roles and grant on the database (a superuser, "
            "or one with CREATEROLE that owns the database and the lab's schema)",
        ) from exc
    finally:
        await conn.close()


def setup_roles(
    admin_dsn: str,
    *,
    home: Path,
    schema: str,
    writer: str,
    reader: str,
    section: str | None = None,
) -> RolesOutcome:
    """Create or update the writer and reader roles on the database of ``admin_dsn``.

    Args:
        admin_dsn: DSN of the lab's database as a role that may create roles and grant.
        home: The lab home (the passwords go to its secrets file).
        schema: The lab's schema (created owned by the writer if missing).
        writer: The writer role's name.
        reader: The reader role's name.
        section: The secrets file section (default: the server's ``host:port/database``).

    Raises:
        ConfigError: a name or the DSN is invalid.
        DatabaseError: the server refused.
    """
    check_identifier(writer, "the writer role's name")
    check_identifier(reader, "the reader role's name")
    check_identifier(schema, "the lab's database schema")
    _, _, database = _parts(admin_dsn)
    section = section or server_section(admin_dsn)
    w = credential(home, section, "writer", writer)
    r = credential(home, section, "reader", reader)
    statements = role_statements(
        database=database,
        schema=schema,
        writer=RoleSpec(w.user, w.password),
        reader=RoleSpec(r.user, r.password),
    )
    run_sync(_apply(admin_dsn, statements))
    return RolesOutcome(
        database,
        schema,
        w,
        r,
        dsn_as(admin_dsn, w),
        dsn_as(admin_dsn, r),
        secrets_path(home),
    )
