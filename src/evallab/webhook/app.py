"""The receiver's Starlette app: secret first, bounded body, one log line per request."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evallab.errors import LabError
from evallab.watch import ModelRelease, Watchlist
from evallab.webhook.delivery import (
    DEFAULT_PATH,
    SECRET_HEADER,
    Emitter,
    ReceiverLimits,
    examine_delivery,
    require_secret,
    secret_matches,
)

__all__ = ["make_app"]

_CLOSE = {"Connection": "close"}
# Named after the package: the one logger of the receiver's log lines.
_log = logging.getLogger("evallab.webhook")


def _json(status: int, body: dict[str, Any], *, close: bool = False) -> JSONResponse:
    # A reply sent before the body was read closes the connection: the unread rest of the body
    # must not be parsed as a next request, and the client must not hold the connection.
    return JSONResponse(body, status_code=status, headers=_CLOSE if close else None)


def _note(request: Request, repo: str | None = None, note: str | None = None) -> None:
    """Details for the request's log line."""
    if repo is not None:
        request.state.repo = repo
    if note is not None:
        request.state.note = note


async def _read_body(request: Request, limits: ReceiverLimits) -> bytes | JSONResponse:
    """The request body, or the reply refusing it (too slow, too large, client gone)."""
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(limits.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body:
                    return _json(413, {"error": f"body over {limits.max_body} bytes"}, close=True)
                chunks.append(chunk)
    except TimeoutError:
        _note(request, note=f"body incomplete after {limits.body_timeout:g} s ({size} bytes)")
        return _json(
            408,
            {"error": f"the body did not arrive within {limits.body_timeout:g} s"},
            close=True,
        )
    except ClientDisconnect:
        _note(request, note="client disconnected during the body")
        return _json(400, {"error": "client disconnected"}, close=True)
    return b"".join(chunks)


async def _emit(emit: Emitter, release: ModelRelease, limits: ReceiverLimits) -> str | None:
    """Run the emitter in a worker thread under a deadline; the reason it failed, or None."""
    try:
        with anyio.fail_after(limits.emit_timeout):
            await anyio.to_thread.run_sync(emit, release, abandon_on_cancel=True)
    except TimeoutError:
        return f"the orchestrator did not confirm the event within {limits.emit_timeout:g} s"
    except LabError as exc:
        return exc.message
    except Exception as exc:
        _log.debug("emitter failed", exc_info=True)
        return f"{type(exc).__name__}: {exc}"
    return None


class _RequestLog:
    """ASGI middleware writing one line per request: method, path, status, repo, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception before any reply: Starlette answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            state = scope.get("state") or {}
            note = state.get("note")
            _log.info(
                "%s %s %d repo=%s %.1f ms%s",
                scope["method"],
                scope["path"],
                status,
                state.get("repo") or "-",
                (time.perf_counter() - start) * 1000,
                f" ({note})" if note else "",
            )


def make_app(
    *,
    secret: str,
    watchlist: Watchlist,
    emit: Emitter,
    path: str = DEFAULT_PATH,
    limits: ReceiverLimits | None = None,
) -> Starlette:
    """The ASGI app: ``POST path`` receives deliveries, ``GET /health`` answers 200.

    Raises:
        WebhookSetupError: no secret is configured.
    """
    require_secret(secret)
    lim = limits or ReceiverLimits()

    async def receive_webhook(request: Request) -> Response:
        # 1. The secret, from the headers: nothing of the body is read (nor a 100-continue
        # sent) for a request that is not authentic.
        if not secret_matches(secret, request.headers.get(SECRET_HEADER)):
            return _json(401, {"error": f"missing or wrong {SECRET_HEADER}"}, close=True)
        # 2. A declared length over the limit is refused before reading.
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > lim.max_body:
            return _json(413, {"error": f"body over {lim.max_body} bytes"}, close=True)
        # 3. The body, under a deadline and a size cap.
        body = await _read_body(request, lim)
        if isinstance(body, Response):
            return body
        # 4. What it announces.
        reply = examine_delivery(body, watchlist)
        _note(request, repo=reply.repo, note=reply.body.get("reason"))
        if reply.release is None:
            return _json(reply.status, reply.body)
        # 5. 202 only once the orchestrator has the event.
        failure = await _emit(emit, reply.release, lim)
        if failure is not None:
            _note(request, note=f"not announced: {failure}")
            return _json(503, {"error": f"could not announce the release: {failure}"})
        _note(request, note=f"announced {reply.release.revision}")
        return _json(reply.status, reply.body)

    async def health(request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return _json(404, {"error": f"not found; POST webhooks to {path}"}, close=True)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        allow = (exc.headers or {}).get("Allow", "") if isinstance(exc, HTTPException) else ""
        return JSONResponse(
            {"error": f"{request.method} is not allowed here"},
            status_code=405,
            headers={**_CLOSE, "Allow": allow} if allow else _CLOSE,
        )

    return Starlette(
        routes=[
            Route(path, receive_webhook, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        middleware=[Middleware(_RequestLog)],
        exception_handlers={404: not_found, 405: not_allowed},
    )
