"""Paired comparisons of runs, provenance diffs and campaign matrices, read from the store.

A run is named by a *selector*: a run-id prefix (``3f2a9c``) or ``key=value`` pairs
(``model=tiny-ft,benchmark=demo,campaign=demo,runtime=transformers,quant=none``) that resolve
to the latest succeeded run of exactly one (campaign, model, quant, runtime, benchmark).
Anything ambiguous, unknown or not comparable raises :class:`~evallab.errors.ComparisonError`
with the candidates listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import asyncpg
import numpy as np
import numpy.typing as npt

from evallab.errors import ComparisonError
from evallab.stats import PairedResult, is_binary, paired_compare
from evallab.store.outcome_sets import unpack_digests

__all__ = [
    "CampaignMatrix",
    "Comparison",
    "FieldDiff",
    "FlippedDoc",
    "MatrixCell",
    "MatrixColumn",
    "MatrixRow",
    "MetricComparison",
    "Refusal",
    "RunRef",
    "Selector",
    "campaign_matrix",
    "compare_runs",
    "diff_runs",
    "parse_selector",
    "resolve_run",
]

SELECTOR_KEYS = ("model", "benchmark", "campaign", "runtime", "quant")
_ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{1,36}$")

#: Provenance columns ``diff`` compares, in display order.
PROVENANCE_FIELDS = (
    "benchmark",
    "model_name",
    "model_source",
    "model_id",
    "model_revision",
    "model_sha256",
    "pinned",
    "quant",
    "weights_sha256",
    "runtime",
    "runtime_label",
    "runtime_version",
    "runtime_commit",
    "runtime_command",
    "harness",
    "harness_version",
    "harness_commit",
    "tasks",
    "tasks_commit",
    "tasks_sha256",
    "dataset_revisions",
    "task_hashes",
    "seed",
    "num_fewshot",
    "sample_limit",
    "generation_config",
    "lab_version",
    "lab_commit",
    "env_fingerprint",
    "python_version",
    "torch_version",
    "hostname",
    "gpu_name",
    "gpu_driver",
    "cuda_version",
    "status",
    "status_reason",
    "tags",
    "run_key",
    "raw_sha256",
)
_JSON_FIELDS = {"dataset_revisions", "task_hashes", "generation_config"}

_RUN_COLUMNS = """
    r.run_id, r.campaign_id, c.name AS campaign, r.benchmark, r.model_name, r.quant, r.runtime,
    r.runtime_label, r.status, r.status_reason, r.started_at, r.raw_path
"""

# ------------------------------------------------------------------------------- run selection


@dataclass(frozen=True)
class Selector:
    """A parsed run selector: an id prefix, or field filters."""

    text: str
    id_prefix: str | None = None
    filters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RunRef:
    """The identity of one run, enough to label it and find its raw outputs."""

    run_id: UUID
    campaign_id: UUID
    campaign: str
    benchmark: str
    model: str
    quant: str
    runtime: str
    runtime_label: str
    status: str
    status_reason: str
    started_at: datetime
    raw_path: str

    @property
    def short_id(self) -> str:
        """First 8 hex digits of the run id."""
        return str(self.run_id)[:8]

    @property
    def combo(self) -> str:
        """``model[@quant] / runtime``: the column a run belongs to in a matrix."""
        quant = f"@{self.quant}" if self.quant and self.quant != "none" else ""
        return f"{self.model}{quant} / {self.runtime_label}"

    @property
    def label(self) -> str:
        """Human label: ``model[@quant] / runtime / benchmark (short id)``."""
        return f"{self.combo} / {self.benchmark} ({self.short_id})"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["run_id"] = str(self.run_id)
        d["campaign_id"] = str(self.campaign_id)
        d["started_at"] = self.started_at.isoformat()
        d["label"] = self.label
        return d


def _run_ref(row: asyncpg.Record) -> RunRef:
    return RunRef(
        run_id=row["run_id"],
        campaign_id=row["campaign_id"],
        campaign=row["campaign"],
        benchmark=row["benchmark"],
        model=row["model_name"],
        quant=row["quant"],
        runtime=row["runtime"],
        runtime_label=row["runtime_label"],
        status=row["status"],
        status_reason=row["status_reason"],
        started_at=row["started_at"],
        raw_path=row["raw_path"],
    )


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
        if not _ID_PREFIX.match(s):
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


async def _ensure_not_empty(conn: asyncpg.Connection) -> None:
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM runs)"):
        raise ComparisonError(
            "the results database holds no runs yet",
            fix="run a campaign first: evallab run CAMPAIGN.yaml",
        )


def _describe(refs: Sequence[RunRef], limit: int = 12) -> str:
    lines = [
        f"{r.short_id} {r.campaign} {r.combo} {r.benchmark} [{r.status}] "
        f"{r.started_at:%Y-%m-%d %H:%M}"
        for r in refs[:limit]
    ]
    if len(refs) > limit:
        lines.append(f"... and {len(refs) - limit} more")
    return "; ".join(lines)


async def resolve_run(conn: asyncpg.Connection, selector: str | Selector) -> RunRef:
    """Resolve a selector to exactly one run.

    An id prefix must match one run (of any status). Field filters pick the latest succeeded
    run, and must not span several (campaign, model, quant, runtime, benchmark) combinations.

    Raises:
        ComparisonError: no run matches, several do, or the database is empty.
    """
    sel = parse_selector(selector) if isinstance(selector, str) else selector
    await _ensure_not_empty(conn)
    base = f"SELECT {_RUN_COLUMNS} FROM runs r JOIN campaigns c USING (campaign_id)"
    if sel.id_prefix is not None:
        rows = await conn.fetch(
            f"{base} WHERE r.run_id::text LIKE $1 ORDER BY r.started_at DESC",
            sel.id_prefix + "%",
        )
        refs = [_run_ref(r) for r in rows]
        if not refs:
            raise ComparisonError(
                "no run has an id starting with this prefix",
                value=sel.text,
                fix="list runs with 'evallab runs' and copy an id, or use model=...,benchmark=...",
            )
        if len(refs) > 1:
            raise ComparisonError(
                f"run id prefix matches {len(refs)} runs: {_describe(refs)}",
                value=sel.text,
                fix="use a longer prefix",
            )
        return refs[0]
    where, args = [], []
    for key, value in sel.filters:
        args.append(value)
        n = len(args)
        if key == "model":
            where.append(f"r.model_name = ${n}")
        elif key == "benchmark":
            where.append(f"r.benchmark = ${n}")
        elif key == "quant":
            where.append(f"r.quant = ${n}")
        elif key == "runtime":
            where.append(f"(r.runtime = ${n} OR r.runtime_label = ${n})")
        else:
            where.append(f"(c.name = ${n} OR c.campaign_id::text LIKE ${n} || '%')")
    rows = await conn.fetch(f"{base} WHERE {' AND '.join(where)} ORDER BY r.started_at DESC", *args)
    refs = [_run_ref(r) for r in rows]
    if not refs:
        raise ComparisonError(
            "no run matches the selector",
            value=sel.text,
            fix="check the names (model, benchmark, campaign, runtime, quant) with 'evallab runs'",
        )
    ok = [r for r in refs if r.status == "succeeded"]
    if not ok:
        raise ComparisonError(
            f"no succeeded run matches the selector; found: {_describe(refs)}",
            value=sel.text,
            fix="pass the run id explicitly to compare a failed or invalid run",
        )
    groups: dict[tuple[str, str, str, str, str], RunRef] = {}
    for r in ok:  # newest first, so the first of each group is its latest
        groups.setdefault((r.campaign, r.model, r.quant, r.runtime_label, r.benchmark), r)
    if len(groups) > 1:
        raise ComparisonError(
            f"selector matches runs of {len(groups)} different configurations: "
            f"{_describe(list(groups.values()))}",
            value=sel.text,
            fix="narrow it with more keys (model, benchmark, campaign, runtime, quant) "
            "or pass a run id",
        )
    return ok[0]


# ----------------------------------------------------------------------------- outcome loading


@dataclass
class _Outcomes:
    doc_ids: npt.NDArray[np.int64]
    doc_hashes: npt.NDArray[np.void]
    values: npt.NDArray[np.float64]


_Key = tuple[str, str, str]


async def _load_outcomes(
    conn: asyncpg.Connection, run_ids: Sequence[UUID]
) -> dict[UUID, dict[_Key, _Outcomes]]:
    """Per run and (task, metric, filter): outcomes sorted by doc_id.

    Reads the stored array sets directly (one row per task and metric, not one per document).
    """
    rows = await conn.fetch(
        """
        SELECT run_id, task, metric, filter, doc_ids AS ids, doc_hashes AS hashes,
               "values" AS vals
        FROM sample_outcome_sets WHERE run_id = ANY($1::uuid[])
        """,
        list(run_ids),
    )
    out: dict[UUID, dict[_Key, _Outcomes]] = {rid: {} for rid in run_ids}
    for r in rows:
        ids = np.asarray(r["ids"], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        out[r["run_id"]][(r["task"], r["metric"], r["filter"])] = _Outcomes(
            ids[order],
            unpack_digests(r["hashes"])[order],
            np.asarray(r["vals"], dtype=np.float64)[order],
        )
    return out


def _mismatch(a: _Outcomes, b: _Outcomes) -> str | None:
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
class _Pair:
    """Two runs' outcomes on one (task, metric, filter), aligned by document."""

    doc_ids: npt.NDArray[np.int64]
    values_a: npt.NDArray[np.float64]
    values_b: npt.NDArray[np.float64]
    mismatch: str | None


async def _load_pair(
    conn: asyncpg.Connection, run_a: UUID, run_b: UUID
) -> tuple[dict[_Key, _Pair], list[_Key], list[_Key]]:
    """Align two runs' outcomes by document and say why a shared key isn't comparable.

    Returns:
        (aligned pairs of the shared keys, keys only in A, keys only in B).
    """
    outcomes = await _load_outcomes(conn, [run_a, run_b])
    oa, ob = outcomes[run_a], outcomes[run_b]
    pairs = {
        k: _Pair(oa[k].doc_ids, oa[k].values, ob[k].values, _mismatch(oa[k], ob[k]))
        for k in sorted(set(oa) & set(ob))
    }
    return pairs, sorted(set(oa) - set(ob)), sorted(set(ob) - set(oa))


async def _higher_is_better(conn: asyncpg.Connection, run_ids: Sequence[UUID]) -> dict[_Key, bool]:
    rows = await conn.fetch(
        "SELECT task, metric, filter, bool_and(higher_is_better) AS hib FROM scores "
        "WHERE run_id = ANY($1::uuid[]) GROUP BY task, metric, filter",
        list(run_ids),
    )
    return {(r["task"], r["metric"], r["filter"]): r["hib"] is not False for r in rows}


# ------------------------------------------------------------------------------- raw outputs

_PROMPT_COLS = ("prompt", "input", "question")
_TARGET_COLS = ("target", "reference", "answer")
_RESPONSE_COLS = ("response", "completion", "output", "generation")


@dataclass(frozen=True)
class _RawText:
    prompt: str | None
    target: str | None
    response: str | None


def _pick(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in names), None)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _read_raw(
    raw_path: str, task: str, filt: str, doc_ids: Sequence[int]
) -> tuple[dict[int, _RawText], str]:
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
        wanted: dict[int, _RawText] = {}
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
                    wanted[doc] = _RawText(
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


# ------------------------------------------------------------------------------- comparison


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


def _key_str(k: _Key) -> str:
    return f"{k[0]}/{k[1]}" + (f"[{k[2]}]" if k[2] and k[2] != "none" else "")


async def compare_runs(
    conn: asyncpg.Connection,
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
        conn: Store connection.
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
    a = await resolve_run(conn, selector_a)
    b = await resolve_run(conn, selector_b)
    if a.run_id == b.run_id:
        raise ComparisonError(
            "both selectors name the same run", value=a.label, fix="pick two different runs"
        )
    pairs, keys_a, keys_b = await _load_pair(conn, a.run_id, b.run_id)
    shared = sorted(pairs)
    only_a = tuple(_key_str(k) for k in keys_a)
    only_b = tuple(_key_str(k) for k in keys_b)
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
        detail = "; ".join(f"{_key_str((r.task, r.metric, r.filter))}: {r.reason}" for r in refused)
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
    hib = await _higher_is_better(conn, [a.run_id, b.run_id])
    refused_keys = {(r.task, r.metric, r.filter) for r in refused}
    rows: list[MetricComparison] = []
    notes: list[str] = []
    raw_cache: dict[tuple[str, str, str], dict[int, _RawText]] = {}
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
            texts: dict[str, dict[int, _RawText]] = {}
            for side, ref in (("a", a), ("b", b)):
                cache_key = (ref.raw_path, k[0], k[2])
                missing = [d for d in ids if d not in raw_cache.get(cache_key, {})]
                if missing:
                    got, note = _read_raw(ref.raw_path, k[0], k[2], missing)
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


# ---------------------------------------------------------------------------- provenance diff


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


async def diff_runs(
    conn: asyncpg.Connection, selector_a: str | Selector, selector_b: str | Selector
) -> tuple[RunRef, RunRef, list[FieldDiff], int]:
    """What differs in two runs' provenance.

    Returns:
        (run A, run B, the differing fields — JSON fields broken down by key —, the number of
        provenance fields that are identical).

    Raises:
        ComparisonError: a selector is unknown or ambiguous.
    """
    a = await resolve_run(conn, selector_a)
    b = await resolve_run(conn, selector_b)
    cols = ", ".join(PROVENANCE_FIELDS)
    ra = await conn.fetchrow(f"SELECT {cols} FROM runs WHERE run_id = $1", a.run_id)
    rb = await conn.fetchrow(f"SELECT {cols} FROM runs WHERE run_id = $1", b.run_id)
    diffs: list[FieldDiff] = []
    same = 0
    for name in PROVENANCE_FIELDS:
        d = _field_diffs(name, ra[name], rb[name])  # type: ignore[index]
        diffs.extend(d)
        same += not d
    return a, b, diffs, same


# ------------------------------------------------------------------------------ campaign matrix


@dataclass(frozen=True)
class MatrixColumn:
    """A (model, quant, runtime) combination."""

    model: str
    quant: str
    runtime_label: str

    @property
    def label(self) -> str:
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

    @property
    def ci_half(self) -> float | None:
        """Half-width of the 95 % CI of the score (1.96 standard errors)."""
        return None if self.stderr is None else 1.96 * self.stderr

    @property
    def significant(self) -> bool:
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


async def campaign_matrix(
    conn: asyncpg.Connection,
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
    await _ensure_not_empty(conn)
    camp_rows = await conn.fetch(
        "SELECT campaign_id, name FROM campaigns WHERE name = $1 ORDER BY started_at", campaign
    )
    if not camp_rows and _ID_PREFIX.match(campaign):
        camp_rows = await conn.fetch(
            "SELECT campaign_id, name FROM campaigns WHERE campaign_id::text LIKE $1 || '%'",
            campaign.lower(),
        )
        if len(camp_rows) > 1:
            raise ComparisonError(
                f"campaign id prefix matches {len(camp_rows)} campaigns",
                value=campaign,
                fix="use a longer prefix or the campaign name",
            )
    if not camp_rows:
        names = [r["name"] for r in await conn.fetch("SELECT DISTINCT name FROM campaigns")]
        raise ComparisonError(
            "no campaign has this name or id",
            value=campaign,
            fix=f"use one of: {', '.join(sorted(names)) or '(none recorded yet)'}",
        )
    ids = [r["campaign_id"] for r in camp_rows]
    runs = [
        _run_ref(r)
        for r in await conn.fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs r JOIN campaigns c USING (campaign_id) "
            "WHERE r.campaign_id = ANY($1::uuid[]) ORDER BY r.started_at DESC",
            ids,
        )
    ]
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
    score_rows = await conn.fetch(
        "SELECT run_id, task, metric, filter, value, stderr, n, higher_is_better FROM scores "
        "WHERE run_id = ANY($1::uuid[]) ORDER BY task, metric, filter",
        run_ids,
    )
    outcomes = await _load_outcomes(conn, run_ids)
    by_run = {r.run_id: r for r in chosen.values()}
    table: dict[tuple[str, str, str, str], dict[str, tuple[RunRef, asyncpg.Record]]] = {}
    hib: dict[tuple[str, str, str, str], bool] = {}
    for s in score_rows:
        run = by_run[s["run_id"]]
        rkey = (run.benchmark, s["task"], s["metric"], s["filter"])
        col = MatrixColumn(run.model, run.quant, run.runtime_label)
        table.setdefault(rkey, {})[col.label] = (run, s)
        hib[rkey] = s["higher_is_better"] is not False
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
            cell = MatrixCell(run.run_id, run.status, s["value"], s["stderr"], s["n"])
            if ref_entry is not None and col != ref and run.status == "succeeded":
                cell = _with_delta(cell, ref_entry, outcomes, rkey[1:], resamples, seed)
            cells[col.label] = cell
        rows.append(MatrixRow(*rkey, higher_is_better=hib[rkey], cells=cells))
    return CampaignMatrix(camp_rows[-1]["name"], tuple(ids), tuple(columns), ref, tuple(rows))


def _with_delta(
    cell: MatrixCell,
    ref_entry: tuple[RunRef, asyncpg.Record],
    outcomes: dict[UUID, dict[_Key, _Outcomes]],
    key: tuple[str, ...],
    resamples: int,
    seed: int,
) -> MatrixCell:
    ref_run, ref_score = ref_entry
    k: _Key = (key[0], key[1], key[2])
    delta = cell.value - float(ref_score["value"])
    mine = outcomes.get(cell.run_id, {}).get(k)
    theirs = outcomes.get(ref_run.run_id, {}).get(k)
    if ref_run.status != "succeeded":
        return _replace(cell, delta=delta, note=f"reference run is {ref_run.status}")
    if mine is None or theirs is None:
        return _replace(cell, delta=delta, note="no per-document outcomes: not tested")
    why = _mismatch(theirs, mine)
    if why:
        return _replace(cell, delta=delta, note=f"not comparable: {why}")
    res = paired_compare(theirs.values, mine.values, resamples=resamples, seed=seed)
    return _replace(
        cell, delta=res.diff, delta_low=res.ci_low, delta_high=res.ci_high, p_value=res.p_value
    )


def _replace(cell: MatrixCell, **changes: Any) -> MatrixCell:
    from dataclasses import replace

    return replace(cell, **changes)
