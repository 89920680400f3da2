"""Run selectors: name one run by an id prefix or by ``key=value`` filters.

A run is named by a *selector*: a run-id prefix (``3f2a9c``) or ``key=value`` pairs
(``model=tiny-ft,benchmark=demo,campaign=demo,runtime=transformers,quant=none``) that resolve
to the latest succeeded run of exactly one (campaign, model, quant, runtime, benchmark).
Anything ambiguous or unknown raises :class:`~evallab.errors.ComparisonError` with the
candidates listed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from evallab.errors import ComparisonError
from evallab.store import Store
from evallab.store.analysis import RunRef

__all__ = [
    "ID_PREFIX",
    "SELECTOR_KEYS",
    "Selector",
    "describe_runs",
    "ensure_not_empty",
    "parse_selector",
    "resolve_run",
]

SELECTOR_KEYS = ("model", "benchmark", "campaign", "runtime", "quant")
#: What a run or campaign id prefix looks like: hex digits and dashes.
ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{1,36}$")


@dataclass(frozen=True)
class Selector:
    """A parsed run selector: an id prefix, or field filters."""

    text: str
    id_prefix: str | None = None
    filters: tuple[tuple[str, str], ...] = ()


def parse_selector(text: str) -> Selector:
    """Parse a run selector.

    Args:
        text: A run-id prefix (hex digits and dashes) or comma-separated ``key=value`` pairs
            with keys ``model``, ``benchmark``, ``campaign``, ``runtime``, ``quant``.

    Raises:
        ComparisonError: the text is empty, uses an unknown key, or is neither form.
    """
    s = text.strip()
    if not s:
        raise ComparisonError(
            "empty run selector",
            fix="pass a run id (or a prefix of one) or e.g. model=NAME,benchmark=NAME",
        )
    if "=" not in s:
        if not ID_PREFIX.match(s):
            raise ComparisonError(
                "run selector is neither a run id prefix nor key=value pairs",
                value=text,
                fix="pass a run id prefix such as 3f2a9c1e, or "
                f"key=value pairs with keys {', '.join(SELECTOR_KEYS)}",
            )
        return Selector(text=s, id_prefix=s.lower())
    filters: list[tuple[str, str]] = []
    for part in s.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ComparisonError(
                f"selector part {part!r} is not key=value",
                value=text,
                fix="write it like model=NAME,benchmark=NAME",
            )
        if key not in SELECTOR_KEYS:
            raise ComparisonError(
                f"unknown selector key {key!r}",
                value=text,
                fix=f"use only {', '.join(SELECTOR_KEYS)}",
            )
        filters.append((key, value))
    return Selector(text=s, filters=tuple(filters))


def ensure_not_empty(store: Store) -> None:
    """Refuse to analyse an empty database, with the fix.

    Raises:
        ComparisonError: the database holds no runs yet.
    """
    if not store.has_runs():
        raise ComparisonError(
            "the results database holds no runs yet",
            fix="run a campaign first: evallab run CAMPAIGN.yaml",
        )


def describe_runs(refs: Sequence[RunRef], limit: int = 12) -> str:
    """One line listing candidate runs (id, campaign, column, benchmark, status, start)."""
    lines = [
        f"{r.short_id} {r.campaign} {r.combo} {r.benchmark} [{r.status}] "
        f"{r.started_at:%Y-%m-%d %H:%M}"
        for r in refs[:limit]
    ]
    if len(refs) > limit:
        lines.append(f"... and {len(refs) - limit} more")
    return "; ".join(lines)


def resolve_run(store: Store, selector: str | Selector) -> RunRef:
    """Resolve a selector to exactly one run.

    An id prefix must match one run (of any status). Field filters pick the latest succeeded
    run, and must not span several (campaign, model, quant, runtime, benchmark) combinations.

    Raises:
        ComparisonError: no run matches, several do, or the database is empty.
    """
    sel = parse_selector(selector) if isinstance(selector, str) else selector
    ensure_not_empty(store)
    if sel.id_prefix is not None:
        refs = store.runs_with_id_prefix(sel.id_prefix)
        if not refs:
            raise ComparisonError(
                "no run has an id starting with this prefix",
                value=sel.text,
                fix="list runs with `evallab results` and copy an id, or use "
                "model=...,benchmark=...",
            )
        if len(refs) > 1:
            raise ComparisonError(
                f"run id prefix matches {len(refs)} runs: {describe_runs(refs)}",
                value=sel.text,
                fix="use a longer prefix",
            )
        return refs[0]
    refs = store.runs_matching(sel.filters)
    if not refs:
        raise ComparisonError(
            "no run matches the selector",
            value=sel.text,
            fix="check the names (model, benchmark, campaign, runtime, quant) with "
            "`evallab results`",
        )
    ok = [r for r in refs if r.status == "succeeded"]
    if not ok:
        raise ComparisonError(
            f"no succeeded run matches the selector; found: {describe_runs(refs)}",
            value=sel.text,
            fix="pass the run id explicitly to compare a failed or invalid run",
        )
    groups: dict[tuple[str, str, str, str, str], RunRef] = {}
    for r in ok:  # newest first, so the first of each group is its latest
        groups.setdefault((r.campaign, r.model, r.quant, r.runtime_label, r.benchmark), r)
    if len(groups) > 1:
        raise ComparisonError(
            f"selector matches runs of {len(groups)} different configurations: "
            f"{describe_runs(list(groups.values()))}",
            value=sel.text,
            fix="narrow it with more keys (model, benchmark, campaign, runtime, quant) "
            "or pass a run id",
        )
    return ok[0]
