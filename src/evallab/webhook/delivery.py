"""What a webhook delivery means: the receiver's settings, payload validation, the reply."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from evallab.errors import ConfigError, LabError
from evallab.watch import ModelRelease, Watchlist

__all__ = [
    "DEFAULT_PATH",
    "MAX_BODY_BYTES",
    "SECRET_HEADER",
    "AnnounceError",
    "Emitter",
    "ReceiverLimits",
    "WebhookPayload",
    "WebhookReply",
    "WebhookSetupError",
    "examine_delivery",
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
