"""New-model-release detection on the Hugging Face hub, without any orchestrator.

A *watch list* (YAML) names repositories and authors to follow and the campaign to run when one
of them publishes a new commit::

    campaign: deployments/demo.yaml      # template: its benchmarks/runtimes run on each release
    watch:
      - repo: my-org/my-model            # one repository
      - author: my-org                   # every model repository of an author...
        match: "my-org/*-Instruct"       # ...optionally filtered (fnmatch on the repo id)
        chat: true
        campaign: deployments/chat.yaml  # per-entry template

:func:`poll_releases` asks the hub's API (``HF_ENDPOINT`` selects the server; see
:mod:`evallab.hub`) for the current head commit of every watched repository and compares it with
what PostgreSQL has seen (tables from ``store/sql/migrations/0003_model_watch.sql``). The first
poll of an entry records a baseline and reports nothing. :func:`record_releases` marks releases as
seen once they were announced, so a failed announcement is retried on the next poll (at least once,
never lost).

:func:`release_campaign` turns a campaign template plus a release into the campaign to run:
the template's models are replaced by the released repository at its exact commit.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evallab.errors import SpecError
from evallab.hub import HubClient
from evallab.spec import CampaignSpec, HubModelSpec
from evallab.store import Store

__all__ = [
    "RELEASE_EVENT",
    "HubHead",
    "ModelRelease",
    "WatchEntry",
    "Watchlist",
    "detect_releases",
    "hub_heads",
    "load_watchlist",
    "mark_announced",
    "poll_releases",
    "record_releases",
    "release_campaign",
]

#: The Prefect event name both detectors emit (prefect.yaml's trigger listens for it).
RELEASE_EVENT = "hf.model.released"

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_AUTHOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatchEntry(_Strict):
    """One thing to watch: a repository or every model repository of an author."""

    repo: str | None = None
    """Repository id ``org/name``."""
    author: str | None = None
    """A user or organisation; each of its model repositories is watched."""
    match: str | None = None
    """Only repositories whose id matches this fnmatch pattern (author entries)."""
    campaign: str | None = None
    """Campaign template for this entry (default: the watch list's ``campaign``)."""
    chat: bool = False
    """Whether released models are chat/instruct models."""
    quant: str = "none"
    """Quantisation label recorded for released models."""

    @field_validator("repo")
    @classmethod
    def _repo_ok(cls, v: str | None) -> str | None:
        if v is not None and not _REPO.match(v):
            raise ValueError(f"repo {v!r} must look like 'org/name'")
        return v

    @field_validator("author")
    @classmethod
    def _author_ok(cls, v: str | None) -> str | None:
        if v is not None and not _AUTHOR.match(v):
            raise ValueError(f"author {v!r} must be a user or organisation name, without '/'")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> WatchEntry:
        if (self.repo is None) == (self.author is None):
            raise ValueError("each watch entry names exactly one of 'repo' or 'author'")
        if self.match is not None and self.author is None:
            raise ValueError("'match' filters an author's repositories; use it with 'author'")
        return self

    @property
    def key(self) -> str:
        """Stable identity of the entry (``repo:org/name`` or ``author:org``)."""
        return f"repo:{self.repo}" if self.repo else f"author:{self.author}"

    def covers(self, repo_id: str) -> bool:
        """Whether a repository belongs to this entry."""
        if self.repo is not None:
            return repo_id == self.repo
        if repo_id.split("/", 1)[0] != self.author:
            return False
        return self.match is None or fnmatch.fnmatchcase(repo_id, self.match)


class Watchlist(_Strict):
    """The watch list file: what to watch and which campaign a release starts."""

    campaign: str
    """Default campaign template (path relative to the lab's working directory)."""
    watch: tuple[WatchEntry, ...] = Field(min_length=1)
    """Repositories and authors to watch."""

    def entry_for(self, repo_id: str) -> WatchEntry | None:
        """The first entry covering ``repo_id``, or None if it isn't watched."""
        return next((e for e in self.watch if e.covers(repo_id)), None)

    def campaign_for(self, entry: WatchEntry) -> str:
        """The campaign template a release of ``entry`` runs."""
        return entry.campaign or self.campaign


@dataclass(frozen=True)
class HubHead:
    """A repository's current head commit as the hub reports it."""

    repo_id: str
    revision: str
    last_modified: datetime | None = None


@dataclass(frozen=True)
class ModelRelease:
    """A new commit of a watched model: what ``hf.model.released`` carries."""

    repo_id: str
    revision: str
    campaign: str
    source: Literal["poll", "webhook"]
    chat: bool = False
    quant: str = "none"
    last_modified: datetime | None = None

    @property
    def resource(self) -> dict[str, str]:
        """The event's resource (Prefect matches triggers on ``prefect.resource.id``)."""
        return {
            "prefect.resource.id": f"hf.model.{self.repo_id}",
            "prefect.resource.name": self.repo_id,
        }

    @property
    def payload(self) -> dict[str, Any]:
        """The event's payload (the trigger passes these to the campaign deployment)."""
        return {
            "repo": self.repo_id,
            "revision": self.revision,
            "campaign": self.campaign,
            "source": self.source,
            "chat": self.chat,
            "quant": self.quant,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
        }


def load_watchlist(path: str | Path) -> Watchlist:
    """Read and validate a watch list file.

    Raises:
        SpecError: the file is missing, isn't YAML, or doesn't match the schema.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(
            f"watch list can't be read: {exc.strerror or exc}",
            value=path,
            fix="pass the path of a YAML file listing repos/authors to watch",
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(
            f"watch list is not valid YAML: {exc}", value=path, fix="fix the YAML"
        ) from exc
    try:
        return Watchlist.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SpecError(
            f"watch list is invalid: {problems}",
            value=path,
            fix="see docs/orchestration.md for the watch list format",
        ) from exc


# ------------------------------------------------------------------------------------- hub


def hub_heads(
    watchlist: Watchlist, *, endpoint: str | None = None, token: str | None = None
) -> dict[str, list[HubHead]]:
    """Ask the hub for the head commit of every watched repository, per watch entry.

    Each request has short timeouts and a few seconds of retries (:mod:`evallab.hub`), so a
    hub that is down fails a poll within about 15 s; the next scheduled poll tries again.

    Args:
        watchlist: What to watch.
        endpoint: Hub URL (default ``$HF_ENDPOINT``, else huggingface.co).
        token: Hub token for private/gated repos (default ``$HF_TOKEN``).

    Raises:
        HubUnreachableError: the hub can't be reached or stays busy (``transient``).
        ModelError: the hub refused a request (unknown repository, bad token) or answered
            something that isn't the hub API; not retried.
    """
    hub = HubClient(endpoint, token)
    heads: dict[str, list[HubHead]] = {}
    for entry in watchlist.watch:
        if entry.repo is not None:
            found = [hub.repo_info("model", entry.repo)]
        else:
            found = hub.list_models(str(entry.author))
        heads[entry.key] = [
            HubHead(r.repo_id, r.sha, r.last_modified) for r in found if entry.covers(r.repo_id)
        ]
    return heads


# -------------------------------------------------------------------------------- database


def detect_releases(
    store: Store, watchlist: Watchlist, heads: dict[str, list[HubHead]]
) -> list[ModelRelease]:
    """Compare hub heads with what the database has seen; return unannounced releases.

    The first poll of a watch entry stores its heads as a baseline and returns nothing for it.
    Releases are *not* recorded here: call :func:`record_releases` once they were announced.
    """
    unseen = store.unseen_revisions([(e.key, heads.get(e.key, [])) for e in watchlist.watch])
    releases: list[ModelRelease] = []
    for entry, new in zip(watchlist.watch, unseen, strict=True):
        if new is None:
            continue  # baseline: what exists when the watch starts is not a release
        releases.extend(
            ModelRelease(
                h.repo_id,
                h.revision,
                watchlist.campaign_for(entry),
                "poll",
                chat=entry.chat,
                quant=entry.quant,
                last_modified=h.last_modified,
            )
            for h in new
            if all((r.repo_id, r.revision) != (h.repo_id, h.revision) for r in releases)
        )
    return releases


def record_releases(store: Store, releases: Sequence[ModelRelease]) -> None:
    """Mark announced releases as seen, so the next poll doesn't announce them again."""
    store.mark_released(releases)


def poll_releases(
    store: Store, watchlist: Watchlist, *, endpoint: str | None = None, token: str | None = None
) -> list[ModelRelease]:
    """Poll the hub and return the releases not announced yet (see :func:`detect_releases`)."""
    heads = hub_heads(watchlist, endpoint=endpoint, token=token)
    return detect_releases(store, watchlist, heads)


def mark_announced(store: Store, releases: Sequence[ModelRelease]) -> None:
    """Record announced releases (the name the watch flow uses for :func:`record_releases`)."""
    record_releases(store, releases)


# -------------------------------------------------------------------------------- campaign


def _model_name(repo_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", repo_id.split("/", 1)[1])
    return name if name[:1].isalnum() else f"m{name}"


def release_campaign(
    template: CampaignSpec, repo_id: str, revision: str, *, chat: bool = False, quant: str = "none"
) -> CampaignSpec:
    """The campaign a release runs: the template with its models replaced by the release.

    Raises:
        SpecError: the repo id or revision is malformed (a release must name a commit sha).
    """
    if not _FULL_SHA.match(revision):
        raise SpecError(
            "a release must name a full 40-character commit sha",
            value=revision,
            fix="pass the revision from the hf.model.released event's payload",
        )
    try:
        model = HubModelSpec(
            source="hf",
            name=_model_name(repo_id),
            repo=repo_id,
            revision=revision,
            chat=chat,
            quant=quant,
        )
    except ValidationError as exc:
        raise SpecError(
            f"released repository id is invalid: {exc.errors()[0]['msg']}",
            value=repo_id,
            fix="events must name a model repository as 'org/name'",
        ) from exc
    return template.model_copy(update={"models": (model,)})
