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

The package: :mod:`~evallab.webhook.delivery` (settings, payload validation, what a delivery
means), :mod:`~evallab.webhook.app` (the Starlette app) and :mod:`~evallab.webhook.server`
(uvicorn with bounded connections).
"""

from evallab.webhook.app import make_app
from evallab.webhook.delivery import (
    DEFAULT_PATH,
    MAX_BODY_BYTES,
    AnnounceError,
    Emitter,
    ReceiverLimits,
    WebhookPayload,
    WebhookReply,
    WebhookSetupError,
    examine_delivery,
    release_from_payload,
    require_secret,
    secret_matches,
)
from evallab.webhook.server import make_server

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
