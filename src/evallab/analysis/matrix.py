"""The campaign matrix: model x quant x runtime columns against every benchmark's metrics.

Each cell is the score of one run (the latest succeeded one of its column and benchmark), with
its paired delta against a reference column over the same documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any
from uuid import UUID

from evallab.analysis.outcomes import OutcomeKey, Outcomes, load_outcomes, mismatch
from evallab.analysis.selectors import ID_PREFIX, ensure_not_empty
from evallab.analysis.stats import paired_compare
from evallab.errors import ComparisonError
from evallab.store import Store
from evallab.store.analysis import RunRef, ScoreValue

__all__ = ["CampaignMatrix", "MatrixCell", "MatrixColumn", "MatrixRow", "campaign_matrix"]


@dataclass(frozen=True)
class MatrixColumn:
    """A (model, quant, runtime) combination."""

    model: str
    quant: str
    runtime_label: str

    @property
    def label(self) -> str:
        """``model[@quant] / runtime``."""
        quant = f"@{self.quant}" if self.quant and self.quant != "none" else ""
        return f"{self.model}{quant} / {self.runtime_label}"


@dataclass(frozen=True)
class MatrixCell:
    """One run's score in the matrix, and its paired delta against the reference column."""

    run_id: UUID
    status: str
    value: float
    stderr: float | None
    n: int
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None
    p_value: float | None = None
    note: str = ""
    samples_per_min: float | None = None
    """The run's evaluation throughput: what the score cost in time on this runtime."""

    @property
    def ci_half(self) -> float | None:
        """Half-width of the 95 % CI of the score (1.96 standard errors)."""
        return None if self.stderr is None else 1.96 * self.stderr

    @property
    def significant(self) -> bool:
        """Whether the delta against the reference is significant (p < 0.05)."""
        return self.p_value is not None and self.p_value < 0.05


@dataclass(frozen=True)
class MatrixRow:
    """One (benchmark, task, metric, filter) across the columns."""

    benchmark: str
    task: str
    metric: str
    filter: str
    higher_is_better: bool
    cells: dict[str, MatrixCell | None]


@dataclass(frozen=True)
class CampaignMatrix:
    """Model x quant x runtime against benchmarks for one campaign name."""

    campaign: str
    campaign_ids: tuple[UUID, ...]
    columns: tuple[MatrixColumn, ...]
    reference: MatrixColumn
    rows: tuple[MatrixRow, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (what ``evallab matrix --json`` prints)."""

        def cell(c: MatrixCell | None) -> dict[str, Any] | None:
            if c is None:
                return None
            d = asdict(c)
            d["run_id"] = str(c.run_id)
            d["ci_half"] = c.ci_half
            d["significant"] = c.significant
            return d

        return {
            "campaign": self.campaign,
            "campaign_ids": [str(c) for c in self.campaign_ids],
            "columns": [c.label for c in self.columns],
            "reference": self.reference.label,
            "rows": [
                {
                    "benchmark": r.benchmark,
                    "task": r.task,
                    "metric": r.metric,
                    "filter": r.filter,
                    "higher_is_better": r.higher_is_better,
                    "cells": {k: cell(v) for k, v in r.cells.items()},
                }
                for r in self.rows
            ],
        }


def _pick_reference(columns: Sequence[MatrixColumn], reference: str | None) -> MatrixColumn:
    if reference is None:
        return columns[0]
    exact = [c for c in columns if reference in (c.label, c.model)]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [c for c in columns if reference.lower() in c.label.lower()]
    if len(partial) == 1:
        return partial[0]
    labels = ", ".join(repr(c.label) for c in (partial or columns))
    raise ComparisonError(
        f"reference column {'is ambiguous' if partial else 'matches no column'}",
        value=reference,
        fix=f"pass one of: {labels}",
    )


def campaign_matrix(
    store: Store,
    campaign: str,
    *,
    reference: str | None = None,
    resamples: int = 2_000,
    seed: int = 0,
) -> CampaignMatrix:
    """The campaign matrix: every (model, quant, runtime) column against every task/metric.

    ``campaign`` is a campaign name (all its executions: each cell shows the latest succeeded
    run, or the latest run when none succeeded) or a campaign-id prefix (that execution only).
    Deltas against the reference column are paired over the same documents.

    Raises:
        ComparisonError: unknown campaign, no runs, or a reference that matches no column.
    """
    ensure_not_empty(store)
    camps = store.campaigns_named(campaign)
    if not camps and ID_PREFIX.match(campaign):
        camps = store.campaigns_with_id_prefix(campaign.lower())
        if len(camps) > 1:
            raise ComparisonError(
                f"campaign id prefix matches {len(camps)} campaigns",
                value=campaign,
                fix="use a longer prefix or the campaign name",
            )
    if not camps:
        names = store.campaign_names()
        raise ComparisonError(
            "no campaign has this name or id",
            value=campaign,
            fix=f"use one of: {', '.join(sorted(names)) or '(none recorded yet)'}",
        )
    ids = [c.campaign_id for c in camps]
    runs = store.runs_of_campaigns(ids)
    if not runs:
        raise ComparisonError(
            "the campaign has no runs", value=campaign, fix="run it: evallab run CAMPAIGN.yaml"
        )
    # Latest succeeded run per (column, benchmark); otherwise the latest run of any status.
    chosen: dict[tuple[MatrixColumn, str], RunRef] = {}
    for r in runs:
        key = (MatrixColumn(r.model, r.quant, r.runtime_label), r.benchmark)
        prev = chosen.get(key)
        if prev is None or (prev.status != "succeeded" and r.status == "succeeded"):
            chosen[key] = r
    columns: list[MatrixColumn] = []
    for r in reversed(runs):  # campaign order: first started first
        col = MatrixColumn(r.model, r.quant, r.runtime_label)
        if col not in columns:
            columns.append(col)
    ref = _pick_reference(columns, reference)
    run_ids = [r.run_id for r in chosen.values()]
    scores = store.scores_of(run_ids)
    outcomes = load_outcomes(store, run_ids)
    by_run = {r.run_id: r for r in chosen.values()}
    table: dict[tuple[str, str, str, str], dict[str, tuple[RunRef, ScoreValue]]] = {}
    hib: dict[tuple[str, str, str, str], bool] = {}
    for s in scores:
        run = by_run[s.run_id]
        rkey = (run.benchmark, s.task, s.metric, s.filter)
        col = MatrixColumn(run.model, run.quant, run.runtime_label)
        table.setdefault(rkey, {})[col.label] = (run, s)
        hib[rkey] = s.higher_is_better is not False
    rows: list[MatrixRow] = []
    for rkey in sorted(table):
        entries = table[rkey]
        ref_entry = entries.get(ref.label)
        cells: dict[str, MatrixCell | None] = {}
        for col in columns:
            entry = entries.get(col.label)
            if entry is None:
                cells[col.label] = None
                continue
            run, s = entry
            cell = MatrixCell(
                run.run_id, run.status, s.value, s.stderr, s.n, samples_per_min=run.samples_per_min
            )
            if ref_entry is not None and col != ref and run.status == "succeeded":
                cell = _with_delta(cell, ref_entry, outcomes, rkey[1:], resamples, seed)
            cells[col.label] = cell
        rows.append(MatrixRow(*rkey, higher_is_better=hib[rkey], cells=cells))
    return CampaignMatrix(camps[-1].name, tuple(ids), tuple(columns), ref, tuple(rows))


def _with_delta(
    cell: MatrixCell,
    ref_entry: tuple[RunRef, ScoreValue],
    outcomes: dict[UUID, dict[OutcomeKey, Outcomes]],
    key: tuple[str, ...],
    resamples: int,
    seed: int,
) -> MatrixCell:
    ref_run, ref_score = ref_entry
    k: OutcomeKey = (key[0], key[1], key[2])
    delta = cell.value - float(ref_score.value)
    mine = outcomes.get(cell.run_id, {}).get(k)
    theirs = outcomes.get(ref_run.run_id, {}).get(k)
    if ref_run.status != "succeeded":
        return replace(cell, delta=delta, note=f"reference run is {ref_run.status}")
    if mine is None or theirs is None:
        return replace(cell, delta=delta, note="no per-document outcomes: not tested")
    why = mismatch(theirs, mine)
    if why:
        return replace(cell, delta=delta, note=f"not comparable: {why}")
    res = paired_compare(theirs.values, mine.values, resamples=resamples, seed=seed)
    return replace(
        cell, delta=res.diff, delta_low=res.ci_low, delta_high=res.ci_high, p_value=res.p_value
    )
