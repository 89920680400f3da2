"""One connection to the results database, held for a whole command or flow run.

:class:`StoreConnection` is the base of :class:`evallab.store.Store`: it owns an event loop and
one asyncpg connection, opened on first use and reopened after the server went away. The query
mixins (one module per area: campaigns, analysis, checks, reports, watch) build their methods
on :meth:`StoreConnection.run`, so no module outside ``store/`` sees asyncpg.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar

import asyncpg

from evallab.errors import DatabaseError
from evallab.store.db import configured_schema, connect, redact

__all__ = ["StoreConnection"]

T = TypeVar("T")

# What a connection that died under us raises: the server stopped, restarted or the socket broke.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    OSError,  # a broken socket (ConnectionError and friends)
)
_CLOSE_ERRORS: tuple[type[BaseException], ...] = (*_CONNECTION_LOST, TimeoutError)


class StoreConnection:
    """A context-managed connection to the results database, usable from synchronous code.

    Calls are serialised (a lock), so one store may be shared by the steps of a flow run that
    Prefect executes on worker threads. A call whose connection was lost raises
    :class:`DatabaseError` (transient: the campaign's failure policy retries it) and the next
    call opens a fresh connection.

    Args:
        dsn: The results database's DSN (see :func:`evallab.store.db.database`).
        timeout: Seconds to wait for a connection.
        schema: The schema holding the lab's tables and views; default: the configured one.
    """

    def __init__(self, dsn: str, *, timeout: float = 10.0, schema: str | None = None) -> None:
        self.dsn = dsn
        self.schema = schema or configured_schema()
        self._timeout = timeout
        self._runner: asyncio.Runner | None = None
        self._conn: asyncpg.Connection | None = None
        self._lock = threading.RLock()
        self.connections_opened = 0
        """How many connections this store opened (1 unless the server went away)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and the event loop (safe to call twice)."""
        with self._lock:
            if self._runner is None:
                return
            if self._conn is not None and not self._conn.is_closed():
                try:
                    self._runner.run(self._conn.close(timeout=5))
                except _CLOSE_ERRORS:
                    self._conn.terminate()
            self._conn = None
            self._runner.close()
            self._runner = None

    def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on this store's connection and return its result.

        Raises:
            DatabaseError: the database can't be reached, or the connection was lost mid-call.
        """
        with self._lock:
            if self._runner is None:
                self._runner = asyncio.Runner()
            return self._runner.run(self._call(work))

    async def _call(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self.dsn, timeout=self._timeout, schema=self.schema)
            self.connections_opened += 1
        try:
            return await work(self._conn)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError) as exc:
            # A database the lab never migrated (a fresh EVALLAB_DATABASE_URL).
            raise DatabaseError(
                f"the results database has no lab schema yet ({exc})",
                value=redact(self.dsn),
                fix="create it with `evallab db migrate` (or point EVALLAB_DATABASE_URL at the "
                "lab's database)",
            ) from exc
        except _CONNECTION_LOST as exc:
            self._conn.terminate()
            self._conn = None
            raise DatabaseError(
                f"lost the connection to the results database: {type(exc).__name__}: {exc}",
                value=redact(self.dsn),
                fix="check that the server is still running; the step is retried and nothing "
                "half-written was kept (each write is one transaction)",
            ) from exc
