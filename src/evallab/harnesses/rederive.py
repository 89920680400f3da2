"""Scores re-derived from a run's data files, the way each harness computes them.

Ingest never takes a run's scores on trust from ``run.json``: it recomputes them here from
``results.json``, ``samples.parquet`` and ``outcomes.parquet``, checks those files agree with
each other, and refuses a run whose recorded scores differ from the derived ones.

* ``lm_eval``: scores are lm-eval's own aggregates in ``results.json``; the per-sample outcomes
  must equal the metric values of each sample in ``samples.parquet``, and for a metric the task
  aggregates by ``mean`` the score must be the mean of its outcomes.
* ``code``: per-problem pass@k is recomputed from each sample's ``passed`` in
  ``samples.parquet`` (the unbiased estimator); it must equal ``outcomes.parquet``, and the
  scores are its mean and standard error, as :func:`evallab.harnesses.code.scoring.score_task`
  computes them (and as ``results.json`` records them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from evallab.errors import StorageError
from evallab.harnesses.base import ScoreRow

__all__ = ["check_recorded_scores", "rederive_scores"]

_FIX = (
    "nothing was stored; the files of this run folder were edited or damaged: restore it from a "
    "backup, or re-run its campaign with --resume to evaluate the run again"
)
OutcomeKey = tuple[str, int, str, str]  # task, doc_id, metric, filter


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _outcomes(table: pa.Table) -> dict[OutcomeKey, float]:
    cols = [table[c].to_pylist() for c in ("task", "doc_id", "metric", "filter", "value")]
    return {(t, int(d), m, f): float(v) for t, d, m, f, v in zip(*cols, strict=True)}


def _same_outcomes(stored: dict[OutcomeKey, float], derived: dict[OutcomeKey, float]) -> None:
    """outcomes.parquet must hold exactly the per-sample values derived from samples.parquet."""
    problems = []
    for key in [*stored, *(k for k in derived if k not in stored)]:
        have, want = stored.get(key), derived.get(key)
        if have is None or want is None or not _close(have, want):
            task, doc, metric, filt = key
            problems.append(
                f"{task}/{metric}/{filt} doc {doc}: outcomes.parquet has "
                f"{'nothing' if have is None else have}, samples.parquet gives "
                f"{'nothing' if want is None else want}"
            )
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise StorageError(
            "outcomes.parquet disagrees with the per-sample results in samples.parquet: "
            + "; ".join(problems[:5])
            + more,
            value="outcomes.parquet",
            fix=_FIX,
        )


def _aggregation(results: dict[str, Any], task: str, metric: str) -> str | None:
    config = (results.get("configs") or {}).get(task) or {}
    for entry in config.get("metric_list") or []:
        if isinstance(entry, dict) and entry.get("metric") == metric:
            agg = entry.get("aggregation")
            return agg if isinstance(agg, str) else None
    return None


def _lm_eval(results: dict[str, Any], samples: pa.Table, outcomes: pa.Table) -> list[ScoreRow]:
    from evallab.harnesses.lm_eval.results import parse_results

    scores = parse_results(results)
    derived: dict[OutcomeKey, float] = {}
    names = ("task", "doc_id", "filter", "metrics_json")
    if samples.num_rows and all(n in samples.column_names for n in names):
        cols = [samples[c].to_pylist() for c in names]
        for task, doc, filt, metrics in zip(*cols, strict=True):
            for metric, value in json.loads(metrics).items():
                derived[(task, int(doc), metric, filt)] = float(value)
    stored = _outcomes(outcomes)
    _same_outcomes(stored, derived)
    for s in scores:
        if _aggregation(results, s.task, s.metric) != "mean":
            continue  # corpus-level aggregates (bleu, perplexity...) aren't a mean of samples
        values = [
            v for (t, _, m, f), v in stored.items() if (t, m, f) == (s.task, s.metric, s.filter)
        ]
        if values and not _close(math.fsum(values) / len(values), s.value):
            raise StorageError(
                f"results.json gives {s.task}/{s.metric}/{s.filter} = {s.value}, but the mean of "
                f"its {len(values)} per-sample outcomes in outcomes.parquet is "
                f"{math.fsum(values) / len(values)}",
                value="results.json",
                fix=_FIX,
            )
    return scores


def _code(results: dict[str, Any], samples: pa.Table, outcomes: pa.Table) -> list[ScoreRow]:
    from evallab.harnesses.code.passk import pass_at_k, pass_at_k_mean

    counts: dict[str, dict[int, list[int]]] = {}
    if samples.num_rows:
        cols = [samples[c].to_pylist() for c in ("task", "doc_id", "passed")]
        for task, doc, passed in zip(*cols, strict=True):
            nc = counts.setdefault(task, {}).setdefault(int(doc), [0, 0])
            nc[0] += 1
            nc[1] += int(bool(passed))
    ks = [int(k) for k in results.get("pass_k") or []]
    recorded = results.get("tasks") or {}
    scores: list[ScoreRow] = []
    derived: dict[OutcomeKey, float] = {}
    for task, problems in counts.items():
        pairs = [(n, c) for n, c in problems.values()]
        n_min = min(n for n, _ in pairs)
        for k in ks:
            if k > n_min:
                continue  # as score_task: pass@k is undefined with fewer than k samples
            metric = f"pass@{k}"
            for doc, (n, c) in problems.items():
                derived[(task, doc, metric, "none")] = pass_at_k(n, c, k)
            mean, stderr = pass_at_k_mean(pairs, k)
            scores.append(ScoreRow(task, metric, "none", mean, stderr, len(pairs), True))
            written = ((recorded.get(task) or {}).get("scores") or {}).get(metric)
            if not isinstance(written, int | float) or not _close(float(written), mean):
                raise StorageError(
                    f"results.json gives {task}/{metric} = {written}, but the samples in "
                    f"samples.parquet give {mean}",
                    value="results.json",
                    fix=_FIX,
                )
    _same_outcomes(_outcomes(outcomes), derived)
    return scores


def rederive_scores(
    harness: str, results: dict[str, Any], samples: pa.Table, outcomes: pa.Table
) -> list[ScoreRow]:
    """A run's scores recomputed from its data files, as ``harness`` computes them.

    Args:
        harness: The run's harness (``lm_eval`` or ``code``).
        results: ``results.json``.
        samples: ``samples.parquet``.
        outcomes: ``outcomes.parquet``.

    Raises:
        StorageError: the files disagree with each other, or the harness is unknown.
    """
    if harness == "lm_eval":
        return _lm_eval(results, samples, outcomes)
    if harness == "code":
        return _code(results, samples, outcomes)
    raise StorageError(
        f"scores of harness {harness!r} can't be re-derived from a run folder",
        value=harness,
        fix="ingest runs of a known harness (lm_eval, code)",
    )


def check_recorded_scores(recorded: Iterable[ScoreRow], derived: Iterable[ScoreRow]) -> None:
    """Refuse scores recorded in run.json that differ from those derived from the data files.

    Raises:
        StorageError: a score differs, is missing or is extra; each is named with both values.
    """
    want = {(s.task, s.metric, s.filter): s for s in derived}
    have = {(s.task, s.metric, s.filter): s for s in recorded}
    problems = []
    for key in [*have, *(k for k in want if k not in have)]:
        name = "/".join(key)
        h, w = have.get(key), want.get(key)
        if h is None or w is None:
            said = f"says {h.value}" if h is not None else "has no score"
            gives = f"give {w.value}" if w is not None else "give no such score"
            problems.append(f"{name}: run.json {said}, the data files {gives}")
        elif not _close(h.value, w.value):
            problems.append(f"{name}: run.json says {h.value}, the data files give {w.value}")
        elif not _close(h.stderr, w.stderr) or h.n != w.n:
            problems.append(
                f"{name}: run.json says stderr {h.stderr} over n={h.n}, the data files give "
                f"stderr {w.stderr} over n={w.n}"
            )
    if problems:
        raise StorageError(
            "the scores recorded in run.json differ from the scores re-derived from the run's "
            "data files (results.json, samples.parquet, outcomes.parquet): " + "; ".join(problems),
            value="run.json",
            fix=_FIX,
        )
