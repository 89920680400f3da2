"""The paired comparison of two runs: is B better than A, by how much, and on which documents.

Both runs must have scored the same documents (checked by id and ``doc_hash``); each shared
(task, metric, filter) gets a paired test (:func:`evallab.analysis.stats.paired_compare`) and,
for binary metrics, the documents that flipped, with their prompts and both outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from evallab.analysis.outcomes import RawText, key_str, load_pair, read_raw
from evallab.analysis.selectors import Selector, resolve_run
from evallab.analysis.stats import PairedResult, is_binary, paired_compare
from evallab.errors import ComparisonError
from evallab.store import Store
from evallab.store.analysis import RunRef

__all__ = ["Comparison", "FlippedDoc", "MetricComparison", "Refusal", "compare_runs"]


@dataclass(frozen=True)
class FlippedDoc:
    """A document scored correct in one run and wrong in the other."""

    task: str
    doc_id: int
    direction: Literal["gained", "lost"]
    value_a: float
    value_b: float
    prompt: str | None = None
    target: str | None = None
    output_a: str | None = None
    output_b: str | None = None


@dataclass(frozen=True)
class MetricComparison:
    """A paired comparison of one (task, metric, filter)."""

    task: str
    metric: str
    filter: str
    higher_is_better: bool
    result: PairedResult
    n_flipped: int
    flips: tuple[FlippedDoc, ...] = ()

    @property
    def verdict(self) -> Literal["B better", "A better", "no significant difference"]:
        """Which run is significantly better at alpha = 1 - confidence."""
        if not self.result.significant(1.0 - self.result.confidence) or self.result.diff == 0:
            return "no significant difference"
        b_up = self.result.diff > 0
        return "B better" if b_up == self.higher_is_better else "A better"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: the test's result, its verdict and the flipped documents."""
        d = {
            "task": self.task,
            "metric": self.metric,
            "filter": self.filter,
            "higher_is_better": self.higher_is_better,
            **asdict(self.result),
            "significant": self.result.significant(1.0 - self.result.confidence),
            "verdict": self.verdict,
            "n_flipped": self.n_flipped,
            "flips": [asdict(f) for f in self.flips],
        }
        return d


@dataclass(frozen=True)
class Refusal:
    """A shared (task, metric, filter) that can't be compared, and why."""

    task: str
    metric: str
    filter: str
    reason: str


@dataclass(frozen=True)
class Comparison:
    """The paired comparison of run B against run A."""

    a: RunRef
    b: RunRef
    rows: tuple[MetricComparison, ...]
    refused: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()
    resamples: int = 10_000
    confidence: float = 0.95
    only_a: tuple[str, ...] = field(default=())
    only_b: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (what ``evallab compare --json`` prints)."""
        return {
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "confidence": self.confidence,
            "resamples": self.resamples,
            "comparisons": [r.to_json() for r in self.rows],
            "refused": [asdict(r) for r in self.refused],
            "only_in_a": list(self.only_a),
            "only_in_b": list(self.only_b),
            "notes": list(self.notes),
        }


def compare_runs(
    store: Store,
    selector_a: str | Selector,
    selector_b: str | Selector,
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    max_flips: int = 50,
    allow_partial: bool = False,
) -> Comparison:
    """Compare run B against run A on every shared (task, metric, filter), paired by document.

    Args:
        store: The results store.
        selector_a: The baseline run (id prefix or ``key=value`` selector).
        selector_b: The candidate run.
        resamples: Bootstrap resamples for the confidence interval.
        confidence: Confidence level of the interval; also the significance level used for
            the verdict (alpha = 1 - confidence).
        seed: Bootstrap seed (comparisons are reproducible).
        max_flips: Flipped documents returned with their texts, per metric (all are counted).
        allow_partial: Compare the tasks whose documents match and list the rest as refused,
            instead of refusing the whole comparison.

    Raises:
        ComparisonError: unknown/ambiguous selectors, the same run twice, no shared task, or
            documents that differ between the runs (dataset revision / doc_hash mismatch).
    """
    a = resolve_run(store, selector_a)
    b = resolve_run(store, selector_b)
    if a.run_id == b.run_id:
        raise ComparisonError(
            "both selectors name the same run", value=a.label, fix="pick two different runs"
        )
    pairs, keys_a, keys_b = load_pair(store, a.run_id, b.run_id)
    shared = sorted(pairs)
    only_a = tuple(key_str(k) for k in keys_a)
    only_b = tuple(key_str(k) for k in keys_b)
    if not shared:
        raise ComparisonError(
            "the two runs share no scored task/metric"
            + ("" if keys_a or keys_b else " (neither run has per-document outcomes)"),
            value=f"A {a.label}: {', '.join(only_a) or 'none'}; "
            f"B {b.label}: {', '.join(only_b) or 'none'}",
            fix="compare runs of the same benchmark (e.g. add benchmark=NAME to both selectors)",
        )
    refused = [
        Refusal(k[0], k[1], k[2], why) for k in shared if (why := pairs[k].mismatch) is not None
    ]
    if refused and (not allow_partial or len(refused) == len(shared)):
        detail = "; ".join(f"{key_str((r.task, r.metric, r.filter))}: {r.reason}" for r in refused)
        raise ComparisonError(
            f"the runs did not score the same documents, so a paired comparison is invalid: "
            f"{detail}",
            value=f"A {a.label} vs B {b.label}",
            fix="re-run both on the same dataset revision and task version"
            + (
                ""
                if len(refused) == len(shared)
                else ", or pass --allow-partial to compare only the tasks whose documents match"
            ),
        )
    hib = store.higher_is_better([a.run_id, b.run_id])
    refused_keys = {(r.task, r.metric, r.filter) for r in refused}
    rows: list[MetricComparison] = []
    notes: list[str] = []
    raw_cache: dict[tuple[str, str, str], dict[int, RawText]] = {}
    for k in shared:
        if k in refused_keys:
            continue
        xa, xb = pairs[k].values_a, pairs[k].values_b
        res = paired_compare(xa, xb, resamples=resamples, confidence=confidence, seed=seed)
        flips: list[FlippedDoc] = []
        n_flipped = 0
        if is_binary(xa) and is_binary(xb):
            flipped = np.flatnonzero(xa != xb)
            n_flipped = int(flipped.size)
            chosen = flipped[:max_flips] if max_flips >= 0 else flipped
            ids = [int(pairs[k].doc_ids[i]) for i in chosen]
            texts: dict[str, dict[int, RawText]] = {}
            for side, ref in (("a", a), ("b", b)):
                cache_key = (ref.raw_path, k[0], k[2])
                missing = [d for d in ids if d not in raw_cache.get(cache_key, {})]
                if missing:
                    got, note = read_raw(ref.raw_path, k[0], k[2], missing)
                    raw_cache.setdefault(cache_key, {}).update(got)
                    if note and f"run {side.upper()}: {note}" not in notes:
                        notes.append(f"run {side.upper()}: {note}")
                texts[side] = raw_cache.get(cache_key, {})
            for i, doc in zip(chosen, ids, strict=True):
                ta, tb = texts["a"].get(doc), texts["b"].get(doc)
                either = ta or tb
                flips.append(
                    FlippedDoc(
                        task=k[0],
                        doc_id=doc,
                        direction="gained" if xb[i] > xa[i] else "lost",
                        value_a=float(xa[i]),
                        value_b=float(xb[i]),
                        prompt=either.prompt if either else None,
                        target=either.target if either else None,
                        output_a=ta.response if ta else None,
                        output_b=tb.response if tb else None,
                    )
                )
        rows.append(
            MetricComparison(k[0], k[1], k[2], hib.get(k, True), res, n_flipped, tuple(flips))
        )
    unsucceeded = [f"{s} is {r.status}" for s, r in (("A", a), ("B", b)) if r.status != "succeeded"]
    if unsucceeded:
        notes.append("comparing a run that did not succeed: " + ", ".join(unsucceeded))
    return Comparison(
        a=a,
        b=b,
        rows=tuple(rows),
        refused=tuple(refused),
        notes=tuple(notes),
        resamples=resamples,
        confidence=confidence,
        only_a=only_a,
        only_b=only_b,
    )
