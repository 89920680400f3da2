"""lm-evaluation-harness as a lab harness: standard tasks plus the user's ``tasks_custom/``.

lm-eval's outputs are parsed here, once: ``"acc,none"``-style keys become :class:`ScoreRow`,
per-sample metric values become :class:`SampleOutcome`, and the samples become a Parquet-ready
table.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa

from evallab.errors import HarnessError, UnknownTaskError
from evallab.harnesses import custom_tasks
from evallab.harnesses.base import HarnessRequest, HarnessResult, SampleOutcome, ScoreRow
from evallab.spec import BenchmarkSpec

__all__ = ["LmEvalHarness", "parse_metric_key", "parse_results", "samples_table"]

_LOGLIKELIHOOD_TYPES = {"multiple_choice", "loglikelihood", "loglikelihood_rolling"}


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


@lru_cache(maxsize=8)
def _builtin_task_names() -> frozenset[str]:
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager().all_tasks)


def _dataset_revisions(
    results: dict[str, Any], custom: dict[str, custom_tasks.CustomTask]
) -> dict[str, str]:
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


class LmEvalHarness:
    """Runs lm-evaluation-harness tasks in-process against a runtime session."""

    name = "lm_eval"

    def version(self) -> tuple[str, str]:
        """lm-eval's installed version and, for a git install, its commit."""
        version = metadata.version("lm_eval")
        commit = ""
        try:
            direct = metadata.distribution("lm_eval").read_text("direct_url.json")
            if direct:
                commit = json.loads(direct).get("vcs_info", {}).get("commit_id", "")
        except (metadata.PackageNotFoundError, json.JSONDecodeError):
            pass
        return version, commit

    def _custom(self, tasks_dir: Path) -> dict[str, custom_tasks.CustomTask]:
        return custom_tasks.discover(tasks_dir)

    def check(self, benchmark: BenchmarkSpec, tasks_dir: Path, base_dir: Path) -> None:
        """Refuse unknown tasks and custom tasks whose data files are missing."""
        custom = self._custom(tasks_dir)
        builtin: frozenset[str] | None = None
        for task in benchmark.tasks:
            if task in custom:
                for f in custom[task].data_files():
                    if not f.exists():
                        raise UnknownTaskError(
                            f"custom task {task!r} reads a data file that does not exist",
                            value=f"{f} (from {custom[task].path})",
                            fix="fix dataset_kwargs.data_files in the task YAML; relative paths "
                            "resolve against the YAML's own folder",
                        )
                continue
            if builtin is None:
                builtin = _builtin_task_names()
            if task not in builtin:
                close = difflib.get_close_matches(task, [*custom, *builtin], n=5, cutoff=0.6)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise UnknownTaskError(
                    f"benchmark {benchmark.name!r} names an unknown task",
                    value=task,
                    fix=f"{hint}list lm-eval's tasks with `lm_eval ls tasks`, or add a YAML with "
                    f"'task: {task}' under {tasks_dir}",
                )

    def needs_loglikelihood(self, benchmark: BenchmarkSpec, tasks_dir: Path) -> bool:
        """True if a custom task is multiple-choice/loglikelihood, or a built-in task is."""
        custom = self._custom(tasks_dir)
        for task in benchmark.tasks:
            if task in custom:
                if custom[task].output_type in _LOGLIKELIHOOD_TYPES:
                    return True
                continue
            from lm_eval.tasks import TaskManager

            cfg = TaskManager()._get_config(task)
            if isinstance(cfg, dict) and cfg.get("output_type") in _LOGLIKELIHOOD_TYPES:
                return True
        return False

    def run(self, request: HarnessRequest) -> HarnessResult:
        """Evaluate the benchmark's tasks; raise HarnessError on failure."""
        import lm_eval
        from lm_eval.tasks import TaskManager

        bench = request.benchmark
        custom = self._custom(request.tasks_dir)
        staged = None
        if custom:
            staged = custom_tasks.stage(request.tasks_dir, request.out_dir / "tasks")
        lm = request.session.lm_eval_model(bench)
        gen = bench.generation
        # Only settings the campaign wrote override a task's own generation_kwargs.
        gen_kwargs: dict[str, Any] = {
            k: getattr(gen, k)
            for k in ("max_gen_toks", "temperature", "top_p")
            if k in gen.model_fields_set
        }
        if "temperature" in gen_kwargs:
            gen_kwargs["do_sample"] = bool(gen.temperature > 0)
        cache = request.out_dir / "lm_eval_cache" / "requests"
        cache.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            results = lm_eval.simple_evaluate(
                model=lm.instance if lm.instance is not None else lm.model_type,
                model_args=lm.model_args,
                tasks=list(bench.tasks),
                num_fewshot=bench.num_fewshot,
                batch_size=lm.batch_size,
                limit=bench.limit,
                use_cache=str(cache),
                log_samples=True,
                gen_kwargs=gen_kwargs or None,
                task_manager=TaskManager(include_path=str(staged) if staged else None),
                apply_chat_template=request.model.chat,
                random_seed=request.seed,
                numpy_random_seed=request.seed,
                torch_random_seed=request.seed,
                fewshot_random_seed=request.seed,
                bootstrap_iters=1000,
                verbosity="WARNING",
            )
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # lm-eval raises bare Exceptions of many kinds
            raise HarnessError(
                f"lm-eval failed on benchmark {bench.name!r}: {type(exc).__name__}: {exc}",
                value=", ".join(bench.tasks),
                fix="run with --debug for the traceback; check the task config and the runtime",
            ) from exc
        if results is None:
            raise HarnessError("lm-eval returned no results", value=bench.name, fix="see the logs")
        scores = parse_results(results)
        table, outcomes = samples_table(results)
        summary = {k: v for k, v in results.items() if k != "samples"}
        return HarnessResult(
            scores=scores,
            outcomes=outcomes,
            samples=table,
            results_json=summary,
            n_samples=len(
                {
                    (t, d)
                    for t, d in zip(
                        table["task"].to_pylist(), table["doc_id"].to_pylist(), strict=True
                    )
                }
            ),
            dataset_revisions=_dataset_revisions(results, custom),
            task_hashes={k: str(v) for k, v in (results.get("task_hashes") or {}).items()},
        )
