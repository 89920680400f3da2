"""What the report site shows, read from the store: runs, campaign matrices, comparisons."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from evallab.analysis.matrix import CampaignMatrix, campaign_matrix
from evallab.analysis.paired import Comparison, compare_runs
from evallab.analysis.selectors import ensure_not_empty
from evallab.errors import ComparisonError
from evallab.store import Store
from evallab.store.analysis import RunRef, ScoreValue, run_ref

__all__ = [
    "ComparisonPage",
    "RunView",
    "comparison_pages",
    "ensure_runs",
    "load_matrices",
    "load_runs",
    "slug",
]


def slug(text: str) -> str:
    """``text`` as a file name (runs of other characters become ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


@dataclass
class RunView:
    """A run on the site: its identity, every stored column, and its scores."""

    ref: RunRef
    row: dict[str, Any]
    scores: list[ScoreValue] = field(default_factory=list)

    @property
    def href(self) -> str:
        return f"runs/{self.ref.run_id}.html"


@dataclass(frozen=True)
class ComparisonPage:
    """One comparison page: a column vs its campaign's reference column on one benchmark."""

    href: str
    title: str
    campaign: str
    benchmark: str
    comparison: Comparison | None
    refusal: str = ""


def load_runs(store: Store) -> list[RunView]:
    """Every run with its scores, oldest first."""
    return [RunView(run_ref(r.columns), r.columns, r.scores) for r in store.site_runs()]


def ensure_runs(store: Store) -> None:
    """Raise :class:`ComparisonError` when the database holds no runs yet."""
    ensure_not_empty(store)


def _matrix(store: Store, campaign: str) -> CampaignMatrix:
    return campaign_matrix(store, campaign)


def load_matrices(store: Store, campaigns: list[str]) -> list[CampaignMatrix]:
    """The matrix of each campaign that has runs."""
    matrices: list[CampaignMatrix] = []
    for name in campaigns:
        try:
            matrices.append(_matrix(store, name))
        except ComparisonError:
            continue  # a campaign without runs has no matrix; it is still listed on the index
    return matrices


def _compare(store: Store, ref_id: UUID, run_id: UUID, resamples: int) -> Comparison:
    return compare_runs(store, str(ref_id), str(run_id), resamples=resamples, allow_partial=True)


def comparison_pages(
    store: Store, matrices: list[CampaignMatrix], resamples: int
) -> list[ComparisonPage]:
    """Each campaign's columns vs its reference column, per benchmark."""
    pages: list[ComparisonPage] = []
    seen: set[tuple[UUID, UUID]] = set()
    for m in matrices:
        pairs: dict[str, dict[str, UUID]] = defaultdict(dict)  # benchmark -> column -> run
        for row in m.rows:
            for label, cell in row.cells.items():
                if cell is not None and cell.status == "succeeded":
                    pairs[row.benchmark][label] = cell.run_id
        for bench, cols in sorted(pairs.items()):
            ref_id = cols.get(m.reference.label)
            if ref_id is None:
                continue
            for label, run_id in sorted(cols.items()):
                if run_id == ref_id or (ref_id, run_id) in seen:
                    continue
                seen.add((ref_id, run_id))
                href = f"compare/{ref_id}_{run_id}.html"
                title = f"{label} vs {m.reference.label} · {bench}"
                try:
                    cmp = _compare(store, ref_id, run_id, resamples)
                except ComparisonError as exc:
                    pages.append(ComparisonPage(href, title, m.campaign, bench, None, exc.message))
                    continue
                pages.append(ComparisonPage(href, title, m.campaign, bench, cmp))
    return pages
