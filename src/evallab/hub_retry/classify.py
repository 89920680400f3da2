"""Which hub failures heal by waiting, and what each one was."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

__all__ = ["Failure", "HubAnswerError", "Kind", "classify", "is_transient", "retry_after_seconds"]


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
class Failure:
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


def cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if isinstance(exc, HubAnswerError):
        return text[0]  # already says "HTTP 404 RepoNotFound: ..."
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


def _status_failure(
    status: int, cause: str, code: str, message: str, retry_after: float | None
) -> Failure:
    # 408/429/5xx are the hub saying "not now"; every other status is its final answer.
    transient = status in (408, 429) or status >= 500
    return Failure("status", transient, cause, status, code, message, retry_after)


def classify(exc: BaseException) -> Failure | None:
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
            return Failure("answer", False, cause(exc), status=exc.status)
        return _status_failure(exc.status, cause(exc), exc.code, exc.detail, exc.retry_after)
    if isinstance(exc, OfflineModeIsEnabled):
        return Failure("offline", False, cause(exc))
    if isinstance(exc, HfHubHTTPError):
        response = exc.response
        if response is None:
            return Failure("status", False, cause(exc))
        headers = response.headers
        return _status_failure(
            response.status_code,
            cause(exc),
            headers.get("x-error-code", ""),
            headers.get("x-error-message", ""),
            retry_after_seconds(headers),
        )
    if name in ("UnsupportedProtocol", "InvalidURL"):
        return Failure("endpoint", False, cause(exc))
    if isinstance(exc, transport):
        return Failure("network", True, cause(exc))
    if isinstance(exc, request):
        # Too many redirects, an undecodable body: the server answers, but not as a hub.
        return Failure("answer", False, cause(exc))
    if isinstance(exc, LocalEntryNotFoundError):
        # snapshot_download turns "the hub didn't answer" into "not in the cache"; the chained
        # error says which it was.
        inner = exc.__cause__
        found = classify(inner) if inner is not None else None
        return found or Failure("offline", False, cause(exc))
    if isinstance(exc, HFValidationError):
        return Failure("request", False, cause(exc))
    return None


def is_transient(exc: BaseException) -> bool:
    failure = classify(exc)
    return failure is not None and failure.transient
