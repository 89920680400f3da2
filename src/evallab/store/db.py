"""Where the results database is, and how to connect to it.

Resolution order: ``EVALLAB_DATABASE_URL``; a ``[database] url`` in the config file
(``$EVALLAB_CONFIG``, else ``./evallab.toml``, else ``<lab home>/config.toml``); otherwise the
embedded server under the lab home (port ``EVALLAB_PG_PORT``, default 54329), shared by the
lab's processes (see :mod:`evallab.store.embedded`).

Everything the lab creates lives in one schema, ``evallab`` unless ``EVALLAB_DB_SCHEMA`` or
``[database] schema`` says otherwise; every connection the lab opens has it as its only
``search_path``, so the SQL files name no schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tomllib
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed

from evallab.errors import ConfigError, DatabaseError
from evallab.paths import lab_home
from evallab.store.embedded import DEFAULT_PORT, EmbeddedPostgres
from evallab.store.role_sql import check_identifier

__all__ = [
    "DEFAULT_SCHEMA",
    "configured_dsn",
    "configured_schema",
    "connect",
    "database",
    "embedded_server",
    "redact",
    "run_sync",
]

#: The schema holding everything the lab creates, unless configured otherwise.
DEFAULT_SCHEMA = "evallab"

T = TypeVar("T")


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (safe to print)."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


def _config_file() -> Path | None:
    env = os.environ.get("EVALLAB_CONFIG")
    if env:
        return Path(env)
    for candidate in (Path.cwd() / "evallab.toml", lab_home() / "config.toml"):
        if candidate.exists():
            return candidate
    return None


def _database_config() -> dict[str, object]:
    path = _config_file()
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"config file can't be read: {exc}",
            value=path,
            fix='write it as TOML with a [database] table holding url = "postgresql://..."',
        ) from exc
    section = data.get("database", {})
    return section if isinstance(section, dict) else {}


def configured_dsn() -> str | None:
    """The external database DSN from the environment or config file, or None (embedded)."""
    env = os.environ.get("EVALLAB_DATABASE_URL")
    if env:
        return env
    url = _database_config().get("url")
    return str(url) if url else None


def configured_schema() -> str:
    """The lab's schema: ``EVALLAB_DB_SCHEMA``, else ``[database] schema``, else ``evallab``.

    Raises:
        ConfigError: the name is not a plain lower-case SQL name.
    """
    name = os.environ.get("EVALLAB_DB_SCHEMA") or _database_config().get("schema")
    return check_identifier(str(name or DEFAULT_SCHEMA), "the lab's database schema")


def _embedded_port() -> int:
    raw = os.environ.get("EVALLAB_PG_PORT", str(DEFAULT_PORT))
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(
            "EVALLAB_PG_PORT is not a port number", value=raw, fix="set it to e.g. 54329"
        ) from exc


def embedded_server() -> EmbeddedPostgres:
    """The lab's embedded server (under the lab home, on ``EVALLAB_PG_PORT``)."""
    return EmbeddedPostgres(lab_home(), port=_embedded_port(), schema=configured_schema())


@contextlib.contextmanager
def database() -> Iterator[str]:
    """Yield the DSN of the results database, starting the embedded server if needed.

    With the embedded server, this process holds a lease on it for the block: the server keeps
    running while any lab process holds one (or ``evallab db start`` was run), and the last
    one to leave stops it, whichever process started it.
    """
    dsn = configured_dsn()
    if dsn:
        yield dsn
        return
    lease = embedded_server().acquire()
    try:
        yield lease.dsn
    finally:
        lease.release()


@retry(
    retry=retry_if_exception_type((OSError, asyncpg.CannotConnectNowError)),
    stop=stop_after_attempt(3),
    wait=wait_fixed(0.5),
    reraise=True,
)
async def _connect_once(dsn: str, timeout: float, schema: str | None) -> asyncpg.Connection:
    settings = {"search_path": schema} if schema else None
    return await asyncpg.connect(dsn, timeout=timeout, server_settings=settings)


async def connect(
    dsn: str, *, timeout: float = 10.0, schema: str | None = None, lab_schema: bool = True
) -> asyncpg.Connection:
    """Open a connection, turning every failure into a DatabaseError that names the DSN.

    Args:
        dsn: The database.
        timeout: Seconds to wait.
        schema: The schema to work in (the connection's only ``search_path``); default: the
            configured one (:func:`configured_schema`).
        lab_schema: False to keep the role's own ``search_path`` (setting up roles as admin).

    Raises:
        DatabaseError: the server can't be reached or refused the login.
        ConfigError: the configured schema name is invalid.
    """
    if lab_schema and schema is None:
        schema = configured_schema()
    try:
        conn: asyncpg.Connection = await _connect_once(dsn, timeout, schema if lab_schema else None)
    except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
        raise DatabaseError(
            f"cannot connect to the results database: {type(exc).__name__}: {exc}",
            value=redact(dsn),
            fix="check that the server is running and the DSN (EVALLAB_DATABASE_URL or "
            "[database] url in evallab.toml) names the right host, port, user and database; "
            "unset it to use the embedded server",
        ) from exc
    return conn


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine from synchronous code (the CLI and the runner are synchronous)."""

    async def _wrap() -> T:
        return await coro

    return asyncio.run(_wrap())
