"""Bounded retries of hub requests, and the LabError that explains their failure.

:func:`call_hub` runs one request to the Hugging Face hub. It retries only what can heal by
waiting (connection errors, timeouts, HTTP 408/429/5xx, honouring ``Retry-After`` up to a cap),
a few times within a few seconds (:class:`HubRetry`), then raises a
:class:`~evallab.errors.LabError` naming the hub URL (``HF_ENDPOINT``), the repository, the
underlying error and the fix. A hub that stays unreachable or busy raises
:class:`~evallab.errors.HubUnreachableError` (``transient``), which the campaign's failure policy
retries later; permanent answers (401/403 gated or private, 404 unknown repository or revision,
offline cache miss) fail at once, without retry, each with its own fix.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from evallab.errors import HubUnreachableError, LabError, ModelError

__all__ = [
    "DEFAULT_RETRY",
    "HubAnswerError",
    "HubRetry",
    "RepoType",
    "call_hub",
    "retry_after_seconds",
]

log = logging.getLogger("evallab.hub")

T = TypeVar("T")
RepoType = Literal["model", "dataset"]


@dataclass(frozen=True)
class HubRetry:
    """How a hub call is retried on a transient failure.

    With the defaults, one call against a hub that is down fails within about 11 s: at most 3
    attempts of at most :data:`evallab.hub.CONNECT_TIMEOUT_S` (3 s) each, 0.5 s then 1 s apart
    (a refused connection: about 2 s in all); a server that accepts but stays silent is tried
    once, for :data:`evallab.hub.READ_TIMEOUT_S` (10 s).

    Attributes:
        attempts: Attempts in all (1: no retry).
        budget_s: No new attempt starts once it would begin this many seconds after the first.
        first_wait_s: Pause before the first retry; it doubles for each next one.
        max_wait_s: Longest pause between attempts.
        retry_after_cap_s: Longest ``Retry-After`` honoured (a longer one is cut to this).
    """

    attempts: int = 3
    budget_s: float = 8.0
    first_wait_s: float = 0.5
    max_wait_s: float = 2.0
    retry_after_cap_s: float = 5.0


DEFAULT_RETRY = HubRetry()


class HubAnswerError(Exception):
    """The hub API answered with an error status or with something that isn't its JSON.

    Raised inside one attempt of :class:`HubClient`; :func:`call_hub` turns it into a LabError.
    """

    def __init__(
        self,
        url: str,
        status: int,
        *,
        code: str = "",
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.url = url
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(
            f"HTTP {status}" + (f" {code}" if code else "") + (f": {detail}" if detail else "")
        )


Kind = Literal["network", "status", "offline", "endpoint", "answer", "request"]


@dataclass(frozen=True)
class _Failure:
    kind: Kind
    transient: bool
    cause: str
    status: int | None = None
    code: str = ""
    auth_message: str = ""
    retry_after: float | None = None


@functools.cache
def _http_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(transport errors, every request error) of the HTTP libraries hub calls go through."""
    transport: list[type[BaseException]] = [httpx.TransportError]
    request: list[type[BaseException]] = [httpx.RequestError]
    try:
        # huggingface_hub >= 2 sends its requests through this fork of httpx.
        import httpx2
    except ImportError:
        pass
    else:
        transport.append(httpx2.TransportError)
        request.append(httpx2.RequestError)
    return tuple(transport), tuple(request)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number or an HTTP date), None if absent."""
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if isinstance(exc, HubAnswerError):
        return text[0]  # already says "HTTP 404 RepoNotFound: ..."
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


def _status_failure(
    status: int, cause: str, code: str, message: str, retry_after: float | None
) -> _Failure:
    # 408/429/5xx are the hub saying "not now"; every other status is its final answer.
    transient = status in (408, 429) or status >= 500
    return _Failure("status", transient, cause, status, code, message, retry_after)


def _classify(exc: BaseException) -> _Failure | None:
    """What an exception of a hub call means; None for errors that aren't about the hub."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    name = type(exc).__name__
    transport, request = _http_errors()
    if isinstance(exc, HubAnswerError):
        if exc.status < 400:
            return _Failure("answer", False, _cause(exc), status=exc.status)
        return _status_failure(exc.status, _cause(exc), exc.code, exc.detail, exc.retry_after)
    if isinstance(exc, OfflineModeIsEnabled):
        return _Failure("offline", False, _cause(exc))
    if isinstance(exc, HfHubHTTPError):
        response = exc.response
        if response is None:
            return _Failure("status", False, _cause(exc))
        headers = response.headers
        return _status_failure(
            response.status_code,
            _cause(exc),
            headers.get("x-error-code", ""),
            headers.get("x-error-message", ""),
            retry_after_seconds(headers),
        )
    if name in ("UnsupportedProtocol", "InvalidURL"):
        return _Failure("endpoint", False, _cause(exc))
    if isinstance(exc, transport):
        return _Failure("network", True, _cause(exc))
    if isinstance(exc, request):
        # Too many redirects, an undecodable body: the server answers, but not as a hub.
        return _Failure("answer", False, _cause(exc))
    if isinstance(exc, LocalEntryNotFoundError):
        # snapshot_download turns "the hub didn't answer" into "not in the cache"; the chained
        # error says which it was.
        inner = exc.__cause__
        found = _classify(inner) if inner is not None else None
        return found or _Failure("offline", False, _cause(exc))
    if isinstance(exc, HFValidationError):
        return _Failure("request", False, _cause(exc))
    return None


def _is_transient(exc: BaseException) -> bool:
    failure = _classify(exc)
    return failure is not None and failure.transient


# ---------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class _Call:
    endpoint: str
    doing: str
    repo_type: RepoType
    repo: str
    revision: str

    @property
    def target(self) -> str:
        kind = "dataset " if self.repo_type == "dataset" else ""
        return f"{kind}{self.repo}" + (f"@{self.revision}" if self.revision else "")

    @property
    def download_hint(self) -> str:
        kind = " --repo-type dataset" if self.repo_type == "dataset" else ""
        rev = f" --revision {self.revision}" if self.revision else ""
        return f"`hf download {self.repo}{kind}{rev}`"


def _offline_fix(call: _Call) -> str:
    return (
        f"or set HF_HUB_OFFLINE=1 and use a snapshot downloaded beforehand ({call.download_hint} "
        "on a machine with network access, same HF_HOME)"
    )


def _hub_error(
    call: _Call, failure: _Failure, attempts: int, seconds: float, error: type[LabError]
) -> LabError:
    where = f"the Hugging Face hub at {call.endpoint}"
    head = f"can't {call.doing} {call.target}"
    tried = f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} in {seconds:.1f} s"
    if failure.kind == "network":
        # A server that accepted the connection but went silent is not "unreachable".
        silent = failure.cause.startswith(("ReadTimeout", "WriteTimeout", "RemoteProtocolError"))
        state = "did not answer in time" if silent else "can't be reached"
        return HubUnreachableError(
            f"{head}: {where} {state} ({failure.cause}; {tried})",
            value=call.endpoint,
            fix=f"check network access to {call.endpoint} and HF_ENDPOINT (unset it to use "
            "https://huggingface.co); gated models also need HF_TOKEN; " + _offline_fix(call),
        )
    if failure.kind == "status" and failure.transient:
        busy = "is rate-limiting the lab" if failure.status == 429 else "is failing or busy"
        return HubUnreachableError(
            f"{head}: {where} {busy} ({failure.cause}; {tried})",
            value=call.endpoint,
            fix="try again later (a campaign retries a transient failure on its own); check the "
            "hub's status page and HF_ENDPOINT; an authenticated HF_TOKEN has higher rate limits; "
            + _offline_fix(call),
        )
    if failure.kind == "offline":
        return error(
            f"{head}: HF_HUB_OFFLINE is set and the local Hugging Face cache doesn't hold it "
            f"({failure.cause})",
            value=call.target,
            fix=f"download it once with network access ({call.download_hint}, same HF_HOME), "
            "or unset HF_HUB_OFFLINE",
        )
    if failure.kind == "endpoint":
        return error(
            f"{head}: the hub URL {call.endpoint} is not a usable http(s) URL ({failure.cause})",
            value=call.endpoint,
            fix="set HF_ENDPOINT to a URL such as https://huggingface.co, or unset it",
        )
    if failure.kind == "answer":
        return error(
            f"{head}: {where} answered something that is not the hub API ({failure.cause})",
            value=call.endpoint,
            fix="check that HF_ENDPOINT points at a Hugging Face hub, not a proxy's error page",
        )
    if failure.kind == "request":
        return error(
            f"{head}: {failure.cause}",
            value=call.target,
            fix="repository ids look like 'org/name'; check the campaign or watch list",
        )
    return _refusal(call, failure, where, head, error)


def _refusal(
    call: _Call, failure: _Failure, where: str, head: str, error: type[LabError]
) -> LabError:
    said = f"{where} answered {failure.cause}"
    page = f"{call.endpoint}/{'datasets/' if call.repo_type == 'dataset' else ''}{call.repo}"
    token_fix = (
        "set HF_TOKEN to a token of an account that may read it (for a gated model, accept "
        f"its terms at {page} first)"
    )
    if failure.status == 401 and "credentials" in failure.auth_message.lower():
        fix = "HF_TOKEN is invalid or expired: create a new read token and export it"
    elif failure.code == "GatedRepo" or failure.status == 403:
        fix = f"{token_fix}, {_offline_fix(call)}"
    elif failure.code == "RevisionNotFound":
        fix = (
            f"check the revision {call.revision!r}: it must be a branch, a tag or a full commit "
            f"sha that exists in {call.repo} (see {page}/commits/main)"
        )
    elif failure.code == "EntryNotFound":
        fix = f"check the file name against the repository's files ({page}/tree/main)"
    elif failure.status in (401, 404):
        fix = (
            f"check the repository id {call.repo!r} (org and name, case included); a private "
            f"or gated repository also answers this way without a token: {token_fix}"
        )
    else:
        fix = "check the repository id and revision, and that HF_ENDPOINT points at a hub"
    return error(f"{head}: {said} (not retried: waiting won't change it)", value=page, fix=fix)


# ----------------------------------------------------------------------------- the retrier


def _wait(retry: HubRetry) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        failure = _classify(exc) if exc is not None else None
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
    call = _Call(endpoint, doing, repo_type, repo, revision)
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
            _cause(exc) if exc is not None else "?",
            state.attempt_number,
            retry.attempts - 1,
            state.upcoming_sleep,
        )

    retrying = Retrying(
        stop=stop_after_attempt(retry.attempts) | stop_before_delay(retry.budget_s),
        wait=_wait(retry),
        retry=retry_if_exception(_is_transient),
        before_sleep=note,
        reraise=True,
    )
    started = time.monotonic()
    try:
        return retrying(attempt)
    except Exception as exc:
        failure = _classify(exc)
        if failure is None:
            raise
        raise _hub_error(call, failure, attempts, time.monotonic() - started, error) from exc
