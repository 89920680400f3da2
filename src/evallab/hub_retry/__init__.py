"""Bounded retries of hub requests, and the LabError that explains their failure.

:func:`call_hub` runs one request to the Hugging Face hub. It retries only what can heal by
waiting (connection errors, timeouts, HTTP 408/429/5xx, honouring ``Retry-After`` up to a cap),
a few times within a few seconds (:class:`HubRetry`), then raises a
:class:`~evallab.errors.LabError` naming the hub URL (``HF_ENDPOINT``), the repository, the
underlying error and the fix. A hub that stays unreachable or busy raises
:class:`~evallab.errors.HubUnreachableError` (``transient``), which the campaign's failure policy
retries later; permanent answers (401/403 gated or private, 404 unknown repository or revision,
offline cache miss) fail at once, without retry, each with its own fix.

The package: :mod:`~evallab.hub_retry.policy` (how often, how long),
:mod:`~evallab.hub_retry.classify` (which failures heal by waiting),
:mod:`~evallab.hub_retry.explain` (the LabError a failure becomes) and
:mod:`~evallab.hub_retry.retrier` (:func:`call_hub`).
"""

from evallab.hub_retry.classify import HubAnswerError, retry_after_seconds
from evallab.hub_retry.policy import DEFAULT_RETRY, HubRetry, RepoType
from evallab.hub_retry.retrier import call_hub

__all__ = [
    "DEFAULT_RETRY",
    "HubAnswerError",
    "HubRetry",
    "RepoType",
    "call_hub",
    "retry_after_seconds",
]
