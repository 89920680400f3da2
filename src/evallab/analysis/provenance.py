"""What differs in two runs' provenance: model, quant, runtime, harness, data, config, host.

JSON provenance (dataset revisions, task hashes, generation config) is compared key by key, so
a changed temperature shows as ``generation_config.temperature`` rather than the whole object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

from evallab.analysis.selectors import Selector, resolve_run
from evallab.store import Store
from evallab.store.analysis import PROVENANCE_FIELDS, RunRef

__all__ = ["FieldDiff", "ProvenanceDiff", "diff_runs"]

_JSON_FIELDS = {"dataset_revisions", "task_hashes", "generation_config"}


@dataclass(frozen=True)
class FieldDiff:
    """One provenance field that differs between two runs (``a`` and ``b`` as display text)."""

    field: str
    a: str
    b: str


def _norm(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _show(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "(empty)"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else "{}"
    text = str(value)
    return text if text else "(empty)"


def _field_diffs(name: str, va: object, vb: object) -> list[FieldDiff]:
    if name in _JSON_FIELDS:
        va, vb = _norm(va), _norm(vb)
        if isinstance(va, dict) and isinstance(vb, dict):
            return [
                FieldDiff(f"{name}.{k}", _show(va.get(k)), _show(vb.get(k)))
                for k in sorted(set(va) | set(vb))
                if va.get(k) != vb.get(k)
            ]
    if va != vb:
        return [FieldDiff(name, _show(va), _show(vb))]
    return []


class ProvenanceDiff(NamedTuple):
    """What differs in two runs' provenance (unpacks as ``a, b, diffs, same``)."""

    a: RunRef
    b: RunRef
    diffs: list[FieldDiff]
    """The differing fields, JSON fields broken down by key."""
    same: int
    """How many provenance fields are identical."""


def diff_runs(
    store: Store, selector_a: str | Selector, selector_b: str | Selector
) -> ProvenanceDiff:
    """What differs in two runs' provenance.

    Returns:
        Run A, run B, the differing fields (JSON fields broken down by key) and the number of
        provenance fields that are identical.

    Raises:
        ComparisonError: a selector is unknown or ambiguous.
    """
    a = resolve_run(store, selector_a)
    b = resolve_run(store, selector_b)
    ra = store.run_provenance(a.run_id)
    rb = store.run_provenance(b.run_id)
    diffs: list[FieldDiff] = []
    same = 0
    for name in PROVENANCE_FIELDS:
        d = _field_diffs(name, ra[name], rb[name])
        diffs.extend(d)
        same += not d
    return ProvenanceDiff(a, b, diffs, same)
