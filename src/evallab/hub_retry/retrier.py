"""Running one hub request with bounded retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from evallab.errors import LabError, ModelError
from evallab.hub_retry.classify import cause, classify, is_transient
from evallab.hub_retry.explain import HubCall, hub_error
from evallab.hub_retry.policy import DEFAULT_RETRY, HubRetry, RepoType

__all__ = ["call_hub"]

log = logging.getLogger("evallab.hub")

T = TypeVar("T")


def _wait(retry: HubRetry) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        failure = classify(exc) if exc is not None else None
        if failure is not None and failure.retry_after is not None:
            return min(failure.retry_after, retry.retry_after_cap_s)
        return float(min(retry.first_wait_s * 2 ** (state.attempt_number - 1), retry.max_wait_s))

    return wait


def call_hub(
    fn: Callable[[], T],
    *,
    endpoint: str,
    doing: str,
    repo: str,
    revision: str = "",
    repo_type: RepoType = "model",
    error: type[LabError] = ModelError,
    retry: HubRetry = DEFAULT_RETRY,
) -> T:
    """Run one hub request with bounded retries; explain its failure as a LabError.

    Args:
        fn: The request (called once per attempt; must be safe to repeat).
        endpoint: Hub URL the request goes to (named in the error).
        doing: What the request does, as a verb phrase ("look up the commit of").
        repo: Repository id the request is about.
        revision: Revision the request is about ("" when none).
        repo_type: "model" or "dataset".
        error: LabError subclass for permanent failures (ModelError, PinError...).
        retry: The retry policy.

    Returns:
        What ``fn`` returned.

    Raises:
        HubUnreachableError: the hub stayed unreachable, rate-limiting or failing (transient).
        LabError: ``error`` for a permanent answer (401/403/404, offline cache miss, bad URL).
    """
    call = HubCall(endpoint, doing, repo_type, repo, revision)
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return fn()

    def note(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "hub call to %s for %s failed (%s); retry %d/%d in %.1f s",
            endpoint,
            call.target,
            cause(exc) if exc is not None else "?",
            state.attempt_number,
            retry.attempts - 1,
            state.upcoming_sleep,
        )

    retrying = Retrying(
        stop=stop_after_attempt(retry.attempts) | stop_before_delay(retry.budget_s),
        wait=_wait(retry),
        retry=retry_if_exception(is_transient),
        before_sleep=note,
        reraise=True,
    )
    started = time.monotonic()
    try:
        return retrying(attempt)
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        raise hub_error(call, failure, attempts, time.monotonic() - started, error) from exc
