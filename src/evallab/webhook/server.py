"""The receiver's uvicorn server: connections with bounded lives."""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from evallab.watch import Watchlist
from evallab.webhook.app import make_app
from evallab.webhook.delivery import DEFAULT_PATH, Emitter, ReceiverLimits

__all__ = ["make_server"]


def _protocol_with_header_deadline(timeout: float) -> type[H11Protocol]:
    """The h11 protocol of uvicorn, closing connections whose headers don't arrive in time.

    Uvicorn bounds idle keep-alive connections but not a client that connects and then sends
    its request line and headers slowly (or never); such connections would hold a slot of
    ``limit_concurrency`` forever.
    """

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            # IDLE: the request (line + headers) of this cycle has not been received.
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


def make_server(
    host: str,
    port: int,
    *,
    secret: str,
    watchlist: Watchlist,
    emit: Emitter,
    path: str = DEFAULT_PATH,
    limits: ReceiverLimits | None = None,
) -> uvicorn.Server:
    """A uvicorn server for :func:`make_app`; ``run()`` it (SIGINT/SIGTERM stop it gracefully).

    Port 0 picks a free port; once ``server.started``, ``server.servers[0].sockets`` has it.

    Raises:
        WebhookSetupError: no secret is configured.
    """
    lim = limits or ReceiverLimits()
    app = make_app(secret=secret, watchlist=watchlist, emit=emit, path=path, limits=lim)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol_with_header_deadline(lim.header_timeout),
        ws="none",
        lifespan="off",
        access_log=False,  # the app logs one line per request itself
        log_config=None,  # keep the caller's logging configuration
        server_header=False,
        timeout_keep_alive=lim.keep_alive,
        limit_concurrency=lim.max_connections,
        h11_max_incomplete_event_size=lim.max_header_bytes,
        timeout_graceful_shutdown=lim.graceful_shutdown,
    )
    return uvicorn.Server(config)
