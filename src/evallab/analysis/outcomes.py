"""Per-document outcomes of runs, aligned by document, and the raw texts behind them.

Outcomes come from the store (:meth:`evallab.store.Store.outcomes_for`), sorted by ``doc_id``
so two runs' outcomes on one (task, metric, filter) can be paired element-wise; a pair whose
documents differ (other ids, or another ``doc_hash``: the dataset or prompt changed) says why.
The prompts, targets and responses of flipped documents are read from the runs' raw Parquet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from evallab.store import Store

__all__ = [
    "OutcomeKey",
    "Outcomes",
    "Pair",
    "RawText",
    "key_str",
    "load_outcomes",
    "load_pair",
    "mismatch",
    "read_raw",
]

#: (task, metric, filter)
OutcomeKey = tuple[str, str, str]


@dataclass
class Outcomes:
    """One run's outcomes on one (task, metric, filter), sorted by document id."""

    doc_ids: npt.NDArray[np.int64]
    doc_hashes: npt.NDArray[np.void]
    values: npt.NDArray[np.float64]


def key_str(k: OutcomeKey) -> str:
    """``task/metric[filter]`` (the filter only when there is one)."""
    return f"{k[0]}/{k[1]}" + (f"[{k[2]}]" if k[2] and k[2] != "none" else "")


def load_outcomes(store: Store, run_ids: Sequence[UUID]) -> dict[UUID, dict[OutcomeKey, Outcomes]]:
    """Per run and (task, metric, filter): outcomes sorted by doc_id (every run has an entry)."""
    out: dict[UUID, dict[OutcomeKey, Outcomes]] = {rid: {} for rid in run_ids}
    for s in store.outcomes_for(run_ids):
        order = np.argsort(s.doc_ids, kind="stable")
        out[s.run_id][(s.task, s.metric, s.filter)] = Outcomes(
            s.doc_ids[order], s.doc_hashes[order], s.values[order]
        )
    return out


def mismatch(a: Outcomes, b: Outcomes) -> str | None:
    """Why two outcome sets aren't the same documents, or None if they are."""
    if a.doc_ids.size != b.doc_ids.size or not np.array_equal(a.doc_ids, b.doc_ids):
        only_a = np.setdiff1d(a.doc_ids, b.doc_ids).size
        only_b = np.setdiff1d(b.doc_ids, a.doc_ids).size
        return (
            f"different documents: {a.doc_ids.size} vs {b.doc_ids.size} scored, "
            f"{only_a} only in A, {only_b} only in B"
        )
    bad = np.flatnonzero(a.doc_hashes != b.doc_hashes)
    if bad.size:
        first = ", ".join(str(int(a.doc_ids[i])) for i in bad[:5])
        return (
            f"doc_hash differs on {bad.size} of {a.doc_ids.size} documents (doc_id {first}"
            f"{', ...' if bad.size > 5 else ''}): the dataset or prompt changed between the runs"
        )
    return None


@dataclass
class Pair:
    """Two runs' outcomes on one (task, metric, filter), aligned by document."""

    doc_ids: npt.NDArray[np.int64]
    values_a: npt.NDArray[np.float64]
    values_b: npt.NDArray[np.float64]
    mismatch: str | None


def load_pair(
    store: Store, run_a: UUID, run_b: UUID
) -> tuple[dict[OutcomeKey, Pair], list[OutcomeKey], list[OutcomeKey]]:
    """Align two runs' outcomes by document and say why a shared key isn't comparable.

    Returns:
        (aligned pairs of the shared keys, keys only in A, keys only in B).
    """
    outcomes = load_outcomes(store, [run_a, run_b])
    oa, ob = outcomes[run_a], outcomes[run_b]
    pairs = {
        k: Pair(oa[k].doc_ids, oa[k].values, ob[k].values, mismatch(oa[k], ob[k]))
        for k in sorted(set(oa) & set(ob))
    }
    return pairs, sorted(set(oa) - set(ob)), sorted(set(ob) - set(oa))


# ------------------------------------------------------------------------------- raw outputs

_PROMPT_COLS = ("prompt", "input", "question")
_TARGET_COLS = ("target", "reference", "answer")
_RESPONSE_COLS = ("response", "completion", "output", "generation")


@dataclass(frozen=True)
class RawText:
    """The texts of one document in a run's raw outputs (None where the file has none)."""

    prompt: str | None
    target: str | None
    response: str | None


def _pick(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in names), None)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def read_raw(
    raw_path: str, task: str, filt: str, doc_ids: Sequence[int]
) -> tuple[dict[int, RawText], str]:
    """The raw row of each wanted document, and a note saying why texts are unavailable.

    Rows of filter ``filt`` are preferred (lm-eval writes one row per document and filter).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not doc_ids:
        return {}, ""
    path = Path(raw_path) if raw_path else None
    if path is None or not path.exists():
        return {}, f"raw outputs not found ({raw_path or 'no raw_path recorded'})"
    try:
        if path.is_dir():
            files = sorted(path.rglob("*.parquet"))
            if not files:
                return {}, f"no Parquet files under {path}"
            names = pq.read_schema(files[0]).names
        else:
            files = [path]
            names = pq.read_schema(path).names
        if "doc_id" not in names:
            return {}, f"raw outputs at {path} have no doc_id column"
        prompt_c = _pick(names, _PROMPT_COLS)
        target_c = _pick(names, _TARGET_COLS)
        resp_c = _pick(names, _RESPONSE_COLS)
        cols = [
            c for c in ("task", "doc_id", "filter", prompt_c, target_c, resp_c) if c and c in names
        ]
        wanted: dict[int, RawText] = {}
        exact: set[int] = set()
        for f in files:
            table = pq.read_table(f, columns=cols)
            mask = pc.is_in(table["doc_id"].cast("int64"), value_set=_pa_ints(doc_ids))
            if "task" in table.column_names:
                mask = pc.and_(mask, pc.equal(table["task"], task))
            for row in table.filter(mask).to_pylist():
                doc = int(row["doc_id"])
                # Rows are per (document, filter) in lm-eval output; any row carries the prompt,
                # but the response should be the one the compared metric was scored on.
                same_filter = row.get("filter", filt) == filt
                if doc not in exact and (doc not in wanted or same_filter):
                    if same_filter:
                        exact.add(doc)
                    wanted[doc] = RawText(
                        _text(row.get(prompt_c)) if prompt_c else None,
                        _text(row.get(target_c)) if target_c else None,
                        _text(row.get(resp_c)) if resp_c else None,
                    )
    except OSError as exc:  # unreadable Parquet: keep the statistics, say why texts are missing
        return {}, f"raw outputs at {path} can't be read: {exc}"
    return wanted, ""


def _pa_ints(values: Sequence[int]) -> Any:
    import pyarrow as pa

    return pa.array([int(v) for v in values], type=pa.int64())
