"""The pins table (one row per pinned thing) and resolving hub branches/tags to commits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from evallab.environment import EnvironmentInfo
from evallab.errors import HubUnreachableError, PinError
from evallab.hub import HubClient, RepoType, cached_ref, hub_offline

__all__ = ["PinReport", "PinRow", "PinStatus", "Resolver", "hub_resolver", "resolve_ref"]

PinStatus = Literal["ok", "unpinned", "refused", "mismatch", "info"]
#: (repo_type "model"|"dataset", repo id, revision) -> full commit sha
Resolver = Callable[[str, str, str], str]


@dataclass(frozen=True)
class PinRow:
    """One line of the pins table."""

    kind: str
    name: str
    requested: str
    resolved: str
    status: PinStatus
    detail: str = ""

    @property
    def refused(self) -> bool:
        """Whether this row stops the campaign."""
        return self.status in ("refused", "mismatch")


@dataclass(frozen=True)
class PinReport:
    """The resolved pins of a campaign."""

    rows: tuple[PinRow, ...]
    environment: EnvironmentInfo
    allow_unpinned: bool

    @property
    def refused(self) -> list[PinRow]:
        """Rows that stop the campaign."""
        return [r for r in self.rows if r.refused]

    @property
    def unpinned(self) -> list[PinRow]:
        """Rows accepted only because the campaign allows unpinned revisions."""
        return [r for r in self.rows if r.status == "unpinned"]

    @property
    def dataset_revisions(self) -> dict[str, str]:
        """Task -> resolved dataset revision (for the ``runs.dataset_revisions`` column)."""
        return {r.name: r.resolved for r in self.rows if r.kind == "dataset"}

    def raise_if_refused(self) -> None:
        """Raise the first refusal as a PinError naming every refused pin.

        Raises:
            PinError: at least one pin is refused or mismatched.
        """
        bad = self.refused
        if not bad:
            return
        listed = "; ".join(
            f"{r.kind} {r.name}: requested {r.requested or '(none)'}, found {r.resolved or '?'}"
            + (f" ({r.detail})" if r.detail else "")
            for r in bad
        )
        unpinned_only = all(r.status == "refused" for r in bad)
        raise PinError(
            f"{len(bad)} pin(s) refused: {listed}",
            value=bad[0].resolved or bad[0].requested,
            fix=(
                "pin each revision to the full commit sha shown, or set allow_unpinned: true "
                "in the campaign (runs are then tagged unpinned)"
                if unpinned_only
                else "install the pinned version (`evallab runtime install KIND==VERSION "
                "--force`) or change the campaign's pin to the installed one"
            ),
        )


def hub_resolver(repo_type: str, repo: str, revision: str) -> str:
    """Resolve a hub branch/tag to its current commit sha.

    Asks the hub (short timeouts, a few seconds of retries: see :mod:`evallab.hub`). Offline
    (``HF_HUB_OFFLINE=1``), or when the hub can't be reached, falls back to the ref recorded in
    the local Hugging Face cache.

    Raises:
        PinError: the hub refused (unknown repository or revision, gated or private without a
            token), or offline and the cache doesn't know the revision.
        HubUnreachableError: the hub can't be reached and the cache doesn't know the revision
            (``transient``: the same campaign can succeed once the hub is back).
    """
    kind: RepoType = "dataset" if repo_type == "dataset" else "model"
    if hub_offline():
        cached = cached_ref(kind, repo, revision)
        if cached:
            return cached
        raise PinError(
            f"{repo_type} revision {revision!r} of {repo} can't be resolved to a commit "
            "(offline, not in the local cache)",
            value=f"{repo}@{revision}",
            fix="pin the full 40-character commit sha in the campaign, or download that revision "
            f"once with network access (`hf download {repo} --revision {revision}`) so the cache "
            "records the ref",
        )
    try:
        return HubClient().repo_info(kind, repo, revision, error=PinError).sha
    except HubUnreachableError:
        # What the cache recorded is the best answer without the hub; runs made with an
        # unpinned revision are tagged as such either way.
        cached = cached_ref(kind, repo, revision)
        if cached:
            return cached
        raise


def resolve_ref(
    resolver: Resolver, repo_type: str, repo: str, revision: str, allow: bool
) -> tuple[str, PinStatus, str]:
    """(sha, status, detail) for a branch/tag: refused unless ``allow`` (then tagged unpinned)."""
    try:
        sha = resolver(repo_type, repo, revision)
    except PinError as exc:
        # The refusal's own fix (a token, a revision that exists) matters more than the
        # table's generic one.
        return "", "refused", f"{exc.what}; fix: {exc.fix}" if exc.fix else exc.what
    if allow:
        return sha, "unpinned", f"{revision!r} is a branch/tag; resolved now, tagged unpinned"
    return sha, "refused", f"{revision!r} is a branch/tag, not a commit sha"
