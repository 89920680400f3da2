"""A small receiver for Hugging Face webhooks that announces new model commits.

Open-source Prefect has no webhook endpoint, so ``evallab webhook serve`` runs this receiver: a
Starlette app on uvicorn (asyncio; no thread per connection). For each ``POST`` to its path it

1. checks the ``X-Webhook-Secret`` header in constant time, before reading any of the body
   (missing or wrong → 401, and the connection is closed);
2. refuses a declared ``Content-Length`` over :data:`MAX_BODY_BYTES` (413) before reading;
3. reads the body under a deadline (a slow upload → 408) and a size cap (413);
4. validates the JSON payload; a push to a watched model repository's default branch becomes a
   :class:`~evallab.watch.ModelRelease`, handed to an injected *emitter*;
5. answers 202 only once the emitter returned, i.e. the orchestrator accepted the event; an
   emitter that raises or does not return within its deadline → 503, so Hugging Face retries.

The emitter is a plain callable that raises on failure (the CLI passes one that posts the Prefect
event ``hf.model.released``), so this module does not depend on any orchestrator.

Every connection has a bounded life: request headers must arrive within
:attr:`ReceiverLimits.header_timeout`, the body within :attr:`ReceiverLimits.body_timeout`, idle
keep-alive connections close after :attr:`ReceiverLimits.keep_alive`, and at
:attr:`ReceiverLimits.max_connections` open connections uvicorn answers 503.

Replies: 202 announced, 200 ignored (not a model push, or a repository nobody watches),
400 not JSON, 401 bad secret, 404 wrong path, 405 wrong method, 408 body too slow,
413 body too large, 422 payload invalid, 503 the event could not be announced.
One log line per request (``evallab.webhook``): method, path, status, repository, duration.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.to_thread
import h11
import uvicorn
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from evallab.errors import ConfigError, LabError
from evallab.watch import ModelRelease, Watchlist

__all__ = [
    "DEFAULT_PATH",
    "MAX_BODY_BYTES",
    "AnnounceError",
    "Emitter",
    "ReceiverLimits",
    "WebhookPayload",
    "WebhookReply",
    "WebhookSetupError",
    "examine_delivery",
    "make_app",
    "make_server",
    "release_from_payload",
    "require_secret",
    "secret_matches",
]

#: Called with each release the receiver accepts; returns once the orchestrator accepted the
#: event, raises otherwise.
Emitter = Callable[[ModelRelease], None]

DEFAULT_PATH = "/webhooks/huggingface"
MAX_BODY_BYTES = 1_000_000
SECRET_HEADER = "X-Webhook-Secret"
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
# A push to any of these refs is a release of the repository's default branch.
_DEFAULT_REFS = frozenset({"refs/heads/main", "refs/heads/master"})
_CLOSE = {"Connection": "close"}
_log = logging.getLogger("evallab.webhook")


class WebhookSetupError(ConfigError):
    """The webhook receiver can't start: a setting it needs is missing."""


class AnnounceError(LabError):
    """A release could not be handed to the orchestrator (its API is down or refused it)."""


@dataclass(frozen=True)
class ReceiverLimits:
    """Sizes and deadlines that keep slow or hostile clients from pinning the receiver.

    Attributes:
        max_body: Largest request body accepted, in bytes (413 above).
        header_timeout: Seconds a connection may take to send its request line and headers
            (closed without a reply after that).
        body_timeout: Seconds a request may take to send its whole body (408 after that).
        emit_timeout: Seconds the emitter may take to confirm the event (503 after that).
        keep_alive: Seconds an idle keep-alive connection stays open.
        max_connections: A request arriving while this many connections are open (its own
            included) is answered 503 by uvicorn, without calling the app.
        max_header_bytes: Most bytes of an unfinished request line + headers h11 buffers
            (400 above).
        graceful_shutdown: Seconds a SIGTERM waits for requests in progress.
    """

    max_body: int = MAX_BODY_BYTES
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    emit_timeout: float = 30.0
    keep_alive: int = 5
    max_connections: int = 100
    max_header_bytes: int = 16 * 1024
    graceful_shutdown: int = 35


# Hugging Face adds fields over time: validate what we use, ignore the rest.
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Event(_Loose):
    action: Literal["create", "delete", "move", "update"]
    scope: str


class _Repo(_Loose):
    type: Literal["model", "dataset", "space"]
    name: str
    headSha: str | None = None


class _Ref(_Loose):
    ref: str
    oldSha: str | None = None
    newSha: str | None = None


class _Webhook(_Loose):
    id: str
    version: Literal[3]


class WebhookPayload(_Loose):
    """The parts of a Hugging Face webhook payload (version 3) the receiver uses."""

    event: _Event
    repo: _Repo
    webhook: _Webhook
    updatedRefs: list[_Ref] | None = None


@dataclass(frozen=True)
class WebhookReply:
    """HTTP status and JSON body to answer a webhook delivery with."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    release: ModelRelease | None = None
    repo: str | None = None


def secret_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the configured secret with the request's header."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def require_secret(secret: str) -> None:
    """Refuse an empty secret: an open receiver would start campaigns for anyone.

    Raises:
        WebhookSetupError: ``secret`` is empty.
    """
    if not secret:
        raise WebhookSetupError(
            "the webhook receiver needs a secret",
            value="(empty)",
            fix="set EVALLAB_WEBHOOK_SECRET to the secret configured on the Hugging Face webhook",
        )


def release_from_payload(payload: WebhookPayload, watchlist: Watchlist) -> ModelRelease | str:
    """The release a payload announces, or the reason it announces none."""
    if payload.repo.type != "model":
        return f"not a model repository ({payload.repo.type})"
    if payload.event.scope not in ("repo", "repo.content") or payload.event.action not in (
        "create",
        "update",
    ):
        return f"not a push ({payload.event.scope} {payload.event.action})"
    entry = watchlist.entry_for(payload.repo.name)
    if entry is None:
        return f"repository {payload.repo.name} is not on the watch list"
    revision: str | None = None
    if payload.updatedRefs is not None:
        pushed = [r for r in payload.updatedRefs if r.ref in _DEFAULT_REFS]
        if not pushed:
            return "no push to the default branch"
        revision = pushed[0].newSha
        if revision is None:
            return "the default branch was deleted"
    else:
        revision = payload.repo.headSha
    if revision is None or not _FULL_SHA.match(revision):
        return f"no commit sha in the payload ({revision!r})"
    return ModelRelease(
        payload.repo.name,
        revision,
        watchlist.campaign_for(entry),
        "webhook",
        chat=entry.chat,
        quant=entry.quant,
    )


def examine_delivery(body: bytes, watchlist: Watchlist) -> WebhookReply:
    """Parse and validate one (authenticated) delivery; say what it announces, if anything.

    Returns a 400, 422 or 200 (ignored) reply, or a 202 reply carrying the release to emit.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return WebhookReply(400, {"error": f"body is not JSON: {exc}"})
    try:
        payload = WebhookPayload.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()
        ]
        return WebhookReply(422, {"error": "invalid webhook payload", "problems": problems})
    repo = payload.repo.name
    found = release_from_payload(payload, watchlist)
    if isinstance(found, str):
        return WebhookReply(200, {"status": "ignored", "reason": found}, repo=repo)
    return WebhookReply(
        202,
        {"status": "announced", "repo": found.repo_id, "revision": found.revision},
        release=found,
        repo=repo,
    )


# ------------------------------------------------------------------------------ the app


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


# --------------------------------------------------------------------------- the server


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
