"""lm-eval's outputs parsed once: scores, per-sample outcomes, the raw per-sample table.

``"acc,none"``-style keys become :class:`ScoreRow`, per-sample metric values become
:class:`SampleOutcome`, and the samples become a Parquet-ready table.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from evallab.harnesses import custom_tasks
from evallab.harnesses.base import SampleOutcome, ScoreRow

__all__ = ["dataset_revisions", "parse_metric_key", "parse_results", "samples_table"]


def parse_metric_key(key: str) -> tuple[str, str] | None:
    """Split lm-eval's ``"metric,filter"`` key; None for non-metric keys (``alias``, stderr)."""
    if "," not in key:
        return None
    metric, _, filt = key.partition(",")
    if metric.endswith("_stderr"):
        return None
    return metric, filt


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def parse_results(results: dict[str, Any]) -> list[ScoreRow]:
    """Typed score rows from lm-eval's results dict (tasks only; groups are re-derivable)."""
    rows: list[ScoreRow] = []
    n_samples = results.get("n-samples", {})
    hib = results.get("higher_is_better", {})
    for task, metrics in results.get("results", {}).items():
        n = int(n_samples.get(task, {}).get("effective", 0))
        for key, value in metrics.items():
            parsed = parse_metric_key(key)
            val = _num(value)
            if parsed is None or val is None:
                continue
            metric, filt = parsed
            err = _num(metrics.get(f"{metric}_stderr,{filt}"))
            better = hib.get(task, {}).get(metric)
            rows.append(
                ScoreRow(
                    task, metric, filt, val, err, n, bool(better) if better is not None else None
                )
            )
    return rows


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _prompt_and_response(sample: dict[str, Any]) -> tuple[str, str]:
    args = sample.get("arguments") or []
    filtered = sample.get("filtered_resps") or []
    first = args[0] if args else None
    prompt = _text(first[0] if isinstance(first, list | tuple) and first else first or "")
    if args and isinstance(first, list | tuple) and len(first) > 1 and isinstance(first[1], str):
        # Multiple choice: the response is the choice with the highest loglikelihood.
        lls = [_num(r[0] if isinstance(r, list | tuple) else r) for r in filtered]
        if lls and all(v is not None for v in lls):
            best = max(range(len(lls)), key=lambda i: lls[i])  # type: ignore[arg-type,return-value]
            choice = args[best][1] if best < len(args) else ""
            return prompt, _text(choice).strip()
    if filtered and isinstance(filtered, list):
        return prompt, _text(filtered[0])
    return prompt, _text(filtered)


def _target_text(sample: dict[str, Any]) -> str:
    """The gold answer as text: for multiple choice, the gold choice rather than its index."""
    target = sample.get("target", "")
    args = sample.get("arguments") or []
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(args):
        pair = args[target]
        if isinstance(pair, list | tuple) and len(pair) > 1 and isinstance(pair[1], str):
            return pair[1].strip()
    return _text(target)


def _doc_hash(sample: dict[str, Any]) -> str:
    h = sample.get("doc_hash")
    if isinstance(h, str) and h:
        return h
    return hashlib.sha256(
        json.dumps(sample.get("doc"), sort_keys=True, default=str).encode()
    ).hexdigest()


def samples_table(results: dict[str, Any]) -> tuple[pa.Table, list[SampleOutcome]]:
    """The raw per-sample table and the typed per-sample outcomes."""
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "task",
            "doc_id",
            "doc_hash",
            "prompt_hash",
            "target_hash",
            "filter",
            "prompt",
            "target",
            "response",
            "metrics_json",
            "doc_json",
            "arguments_json",
            "resps_json",
            "filtered_resps_json",
        )
    }
    outcomes: list[SampleOutcome] = []
    for task, samples in (results.get("samples") or {}).items():
        for s in samples:
            filt = str(s.get("filter", "none"))
            doc_hash = _doc_hash(s)
            prompt, response = _prompt_and_response(s)
            metric_values: dict[str, float] = {}
            for metric in s.get("metrics", []):
                val = _num(s.get(metric))
                if val is not None:
                    metric_values[metric] = val
                    outcomes.append(
                        SampleOutcome(task, int(s["doc_id"]), doc_hash, metric, filt, val)
                    )
            cols["task"].append(task)
            cols["doc_id"].append(int(s["doc_id"]))
            cols["doc_hash"].append(doc_hash)
            cols["prompt_hash"].append(str(s.get("prompt_hash", "")))
            cols["target_hash"].append(str(s.get("target_hash", "")))
            cols["filter"].append(filt)
            cols["prompt"].append(prompt)
            cols["target"].append(_target_text(s))
            cols["response"].append(response)
            cols["metrics_json"].append(json.dumps(metric_values))
            cols["doc_json"].append(_text(s.get("doc")))
            cols["arguments_json"].append(_text(s.get("arguments")))
            cols["resps_json"].append(_text(s.get("resps")))
            cols["filtered_resps_json"].append(_text(s.get("filtered_resps")))
    schema = pa.schema([(k, pa.int64() if k == "doc_id" else pa.string()) for k in cols])
    return pa.table(cols, schema=schema), outcomes


def dataset_revisions(
    results: dict[str, Any], custom: dict[str, custom_tasks.CustomTask]
) -> dict[str, str]:
    """Task -> dataset revision as lm-eval loaded it (custom tasks: a hash of their data)."""
    out: dict[str, str] = {}
    for task, cfg in (results.get("configs") or {}).items():
        if task in custom:
            h = hashlib.sha256()
            for f in custom[task].data_files():
                h.update(f.read_bytes() if f.is_file() else b"")
            out[task] = f"local:{h.hexdigest()}"
            continue
        kwargs = cfg.get("dataset_kwargs") or {}
        rev = kwargs.get("revision") if isinstance(kwargs, dict) else None
        path = cfg.get("dataset_path", "")
        out[task] = f"{path}@{rev}" if rev else f"{path}@unpinned"
    return out
