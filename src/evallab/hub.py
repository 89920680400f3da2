"""The lab's client of the Hugging Face hub: short timeouts, bounded retries, clear errors.

Every request the lab makes to the hub (revision look-ups in :mod:`evallab.pins`, head polling
in :mod:`evallab.watch`, model downloads in :mod:`evallab.models`) bounds each connection attempt
(:data:`CONNECT_TIMEOUT_S`) and each wait for an answer, and runs through
:func:`~evallab.hub_retry.call_hub`: a few seconds of retries for transient failures, then a
LabError that names the URL, the repository, the cause and the fix.

Metadata calls use :class:`HubClient`, plain ``httpx`` against the hub's REST API: the
``huggingface_hub`` helpers retry some requests five times on their own, which would multiply
the lab's bound. Downloads still use ``huggingface_hub``; :func:`bound_hub_library_timeouts`
gives its shared HTTP client the same connect bound.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from evallab.errors import LabError, ModelError
from evallab.hub_retry import (
    DEFAULT_RETRY,
    HubAnswerError,
    HubRetry,
    RepoType,
    call_hub,
    retry_after_seconds,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "HubClient",
    "HubRepo",
    "HubRetry",
    "RepoType",
    "bound_hub_library_timeouts",
    "cached_ref",
    "call_hub",
    "hub_endpoint",
    "hub_offline",
]

log = logging.getLogger(__name__)

#: Seconds to wait for a connection: a reachable hub connects in well under a second, and a
#: host that drops packets would otherwise hold each attempt for the OS's ~2 minutes.
CONNECT_TIMEOUT_S = 3.0
#: Seconds to wait for the next bytes of a metadata answer.
READ_TIMEOUT_S = 10.0
#: Seconds of silence tolerated on requests ``huggingface_hub`` sends without any timeout.
LIBRARY_READ_TIMEOUT_S = 30.0

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_TRUE = frozenset({"1", "ON", "YES", "TRUE"})


def hub_endpoint(endpoint: str | None = None) -> str:
    """The hub URL in use: ``endpoint``, else ``$HF_ENDPOINT``, else huggingface_hub's default."""
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return str(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks the lab not to touch the network.

    Read at call time: ``huggingface_hub`` reads it once, at import.
    """
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE or constants.is_offline_mode()


def cached_ref(repo_type: RepoType, repo: str, revision: str) -> str | None:
    """The commit a branch/tag pointed at when the local Hugging Face cache last saw it."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo.replace('/', '--')}" / "refs"
    ref = folder / revision
    if ref.is_file():
        sha = ref.read_text().strip()
        return sha if _FULL_SHA.match(sha) else None
    return None


# ------------------------------------------------------------------------------ the client


@dataclass(frozen=True)
class HubRepo:
    """A repository at one commit, as the hub's API reports it."""

    repo_id: str
    sha: str
    last_modified: datetime | None = None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class HubClient:
    """The hub's metadata API with short timeouts and bounded retries.

    Args:
        endpoint: Hub URL (default ``$HF_ENDPOINT``, else huggingface.co).
        token: Hub token (default ``$HF_TOKEN``, else the one ``hf auth login`` saved).
        retry: Retry policy for transient failures.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        retry: HubRetry = DEFAULT_RETRY,
    ) -> None:
        from huggingface_hub import get_token

        self.endpoint = hub_endpoint(endpoint)
        self.token = token or get_token() or None
        self.retry = retry

    def _client(self) -> httpx.Client:
        from evallab import __version__

        headers = {"user-agent": f"evallab/{__version__}"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        # Renamed repositories answer with a redirect to their new name.
        return httpx.Client(headers=headers, timeout=timeout, follow_redirects=True)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            detail = response.headers.get("x-error-message", "")
            if not detail:
                try:
                    body = response.json()
                    detail = str(body.get("error", "")) if isinstance(body, dict) else ""
                except ValueError:
                    detail = ""
            raise HubAnswerError(
                str(response.url),
                response.status_code,
                code=response.headers.get("x-error-code", ""),
                detail=detail[:200],
                retry_after=retry_after_seconds(response.headers),
            )
        try:
            return response.json()
        except ValueError as exc:
            raise HubAnswerError(
                str(response.url), response.status_code, detail="the body is not JSON"
            ) from exc

    @staticmethod
    def _repo(data: Any, url: str) -> HubRepo:
        if not isinstance(data, dict) or not isinstance(data.get("sha"), str):
            raise HubAnswerError(url, 200, detail="no commit sha in the answer")
        repo_id = str(data.get("id") or data.get("modelId") or "")
        sha = str(data["sha"])
        if not _FULL_SHA.match(sha):
            raise HubAnswerError(url, 200, detail=f"{sha!r} is not a commit sha")
        return HubRepo(repo_id, sha, _parse_time(data.get("lastModified")))

    def repo_info(
        self,
        repo_type: RepoType,
        repo: str,
        revision: str | None = None,
        *,
        error: type[LabError] = ModelError,
        doing: str = "look up the commit of",
    ) -> HubRepo:
        """A repository's commit at ``revision`` (default: its default branch).

        Args:
            repo_type: "model" or "dataset".
            repo: Repository id ``org/name``.
            revision: Branch, tag or commit sha (None: the default branch).
            error: LabError subclass raised for a permanent refusal.
            doing: What the caller is doing, for the error message ("download").

        Raises:
            HubUnreachableError: the hub can't be reached or stays busy (transient).
            LabError: ``error`` when the hub refuses (unknown repo/revision, gated, bad token).
        """
        url = f"{self.endpoint}/api/{repo_type}s/{repo}"
        if revision:
            url += f"/revision/{quote(revision, safe='')}"

        def get() -> HubRepo:
            with self._client() as client:
                found = self._repo(self._json(client.get(url)), url)
            return found if found.repo_id else HubRepo(repo, found.sha, found.last_modified)

        return call_hub(
            get,
            endpoint=self.endpoint,
            doing=doing,
            repo=repo,
            revision=revision or "",
            repo_type=repo_type,
            error=error,
            retry=self.retry,
        )

    def list_models(self, author: str) -> list[HubRepo]:
        """Every model repository of ``author`` with its head commit.

        Raises:
            HubUnreachableError: the hub can't be reached or stays busy (transient).
            ModelError: the hub refused the request.
        """
        url = f"{self.endpoint}/api/models"
        params = {"author": author, "expand": ["sha", "lastModified"]}

        def get() -> list[HubRepo]:
            found: list[HubRepo] = []
            with self._client() as client:
                response = client.get(url, params=params)
                while True:
                    page = self._json(response)
                    if not isinstance(page, list):
                        raise HubAnswerError(str(response.url), 200, detail="not a list of models")
                    found.extend(
                        self._repo(item, str(response.url))
                        for item in page
                        if isinstance(item, dict) and item.get("sha")
                    )
                    # The hub pages long listings with a Link header (as GitHub does).
                    next_url = response.links.get("next", {}).get("url")
                    if not next_url:
                        return found
                    response = client.get(next_url)

        return call_hub(
            get,
            endpoint=self.endpoint,
            doing="list the models of",
            repo=author,
            retry=self.retry,
        )


# --------------------------------------------------------------- huggingface_hub's client


def _bound_request_timeouts(request: Any) -> None:
    """Event hook: cap the connect timeout and bound reads huggingface_hub leaves unbounded.

    Many ``huggingface_hub`` requests pass ``timeout=None``, which overrides any client default;
    the transport reads the timeouts from the request itself, so they are bounded here.
    """
    timeouts = dict(request.extensions.get("timeout") or {})
    connect = timeouts.get("connect")
    timeouts["connect"] = CONNECT_TIMEOUT_S if connect is None else min(connect, CONNECT_TIMEOUT_S)
    for phase in ("read", "write"):
        if timeouts.get(phase) is None:
            timeouts[phase] = LIBRARY_READ_TIMEOUT_S
    request.extensions = {**request.extensions, "timeout": timeouts}


@functools.cache
def bound_hub_library_timeouts() -> None:
    """Make ``huggingface_hub``'s shared HTTP client connect within :data:`CONNECT_TIMEOUT_S`.

    Applies to the whole process (downloads by ``transformers`` and ``datasets`` too): a hub
    that is down then fails their requests in seconds instead of hanging them. Idempotent.
    """
    from huggingface_hub import set_client_factory

    try:
        # huggingface_hub's own factory sets up offline mode, request ids and redirects; the
        # bound is added to its hooks rather than rebuilding the client.
        from huggingface_hub.utils._http import default_client_factory
    except ImportError:
        # Downloads without the bound are slower to fail, but still work.
        log.warning("huggingface_hub moved its client factory: hub downloads keep its timeouts")
        return

    def bounded_client() -> Any:
        client = default_client_factory()
        hooks = client.event_hooks
        client.event_hooks = {
            **hooks,
            "request": [*hooks.get("request", []), _bound_request_timeouts],
        }
        return client

    set_client_factory(bounded_client)
