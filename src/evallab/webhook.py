"""A small receiver for Hugging Face webhooks that announces new model commits.

Open-source Prefect has no webhook endpoint, so ``evallab webhook serve`` runs this receiver. A
request is accepted only with the right ``X-Webhook-Secret`` header (compared in constant time;
wrong or missing → 401 and nothing is announced). Its JSON payload is validated; a push to a
watched model repository's default branch becomes a :class:`~evallab.watch.ModelRelease` that is
handed to an injected *emitter* (the CLI passes one that emits the Prefect event
``hf.model.released``), so this module does not depend on any orchestrator.

Replies: 202 announced, 200 ignored (not a model push, or a repository nobody watches),
400 not JSON, 401 bad secret, 404 wrong path, 413 body too large, 422 payload invalid,
500 the emitter failed (Hugging Face retries failed deliveries).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from evallab.errors import LabError, SpecError
from evallab.watch import ModelRelease, Watchlist

__all__ = [
    "DEFAULT_PATH",
    "MAX_BODY_BYTES",
    "Emitter",
    "WebhookPayload",
    "WebhookReply",
    "handle_webhook",
    "make_server",
    "release_from_payload",
    "secret_matches",
]

#: Called with each release the receiver accepts.
Emitter = Callable[[ModelRelease], None]

DEFAULT_PATH = "/webhooks/huggingface"
MAX_BODY_BYTES = 1_000_000
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
# A push to any of these refs is a release of the repository's default branch.
_DEFAULT_REFS = frozenset({"refs/heads/main", "refs/heads/master"})
_log = logging.getLogger("evallab.webhook")


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


def secret_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the configured secret with the request's header."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


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


def handle_webhook(
    given_secret: str | None,
    body: bytes,
    *,
    secret: str,
    watchlist: Watchlist,
    emit: Emitter,
) -> WebhookReply:
    """Verify, validate and announce one delivery (transport-independent).

    Args:
        given_secret: The request's ``X-Webhook-Secret`` header (None when absent).
        body: Raw request body.
        secret: The secret configured on the Hugging Face webhook.
        watchlist: Which repositories are watched, and their campaign templates.
        emit: Called with the release when one is accepted.
    """
    if not secret_matches(secret, given_secret):
        return WebhookReply(401, {"error": "missing or wrong X-Webhook-Secret"})
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
    found = release_from_payload(payload, watchlist)
    if isinstance(found, str):
        return WebhookReply(200, {"status": "ignored", "reason": found})
    emit(found)
    return WebhookReply(
        202,
        {"status": "announced", "repo": found.repo_id, "revision": found.revision},
        release=found,
    )


def make_server(
    host: str,
    port: int,
    *,
    secret: str,
    watchlist: Watchlist,
    emit: Emitter,
    path: str = DEFAULT_PATH,
) -> ThreadingHTTPServer:
    """An HTTP server answering webhook deliveries on ``POST path``; call ``serve_forever()``.

    Raises:
        SpecError: no secret is configured (an open receiver would start campaigns for anyone).
    """
    if not secret:
        raise SpecError(
            "the webhook receiver needs a secret",
            value="(empty)",
            fix="set EVALLAB_WEBHOOK_SECRET (or --secret) to the secret configured on the "
            "Hugging Face webhook",
        )

    class Handler(BaseHTTPRequestHandler):
        server_version = "evallab-webhook"

        def _reply(self, reply: WebhookReply) -> None:
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(WebhookReply(200, {"status": "ok"}))
            else:
                self._reply(WebhookReply(404, {"error": "not found"}))

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != path:
                self._reply(WebhookReply(404, {"error": f"POST webhooks to {path}"}))
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                self._reply(
                    WebhookReply(413, {"error": "body missing a valid length or too large"})
                )
                return
            body = self.rfile.read(length)
            try:
                reply = handle_webhook(
                    self.headers.get("X-Webhook-Secret"),
                    body,
                    secret=secret,
                    watchlist=watchlist,
                    emit=emit,
                )
            except (LabError, OSError, RuntimeError, ValueError) as exc:
                # The sender retries failed deliveries; say why it failed, log the traceback.
                _log.exception("announcing a release failed")
                self._reply(WebhookReply(500, {"error": f"could not announce the release: {exc}"}))
                return
            if reply.release is not None:
                _log.info("announced %s@%s", reply.release.repo_id, reply.release.revision)
            self._reply(reply)

        def log_message(self, format: str, *args: Any) -> None:
            _log.info("%s %s", self.address_string(), format % args)

    return ThreadingHTTPServer((host, port), Handler)
