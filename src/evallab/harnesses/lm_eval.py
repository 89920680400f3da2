"""lm-evaluation-harness as a lab harness: standard tasks plus the user's ``tasks_custom/``.

lm-eval's outputs are parsed here, once: ``"acc,none"``-style keys become :class:`ScoreRow`,
per-sample metric values become :class:`SampleOutcome`, and the samples become a Parquet-ready
table.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import logging
import os
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa

from evallab.errors import HarnessError, LabError, UnknownTaskError
from evallab.harnesses import custom_tasks
from evallab.harnesses.base import HarnessRequest, HarnessResult, SampleOutcome, ScoreRow
from evallab.runtimes.base import LmEvalModel
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


class _BatchedCommitDict:
    """lm-eval's request cache with commits batched instead of one fsync per request.

    lm-eval opens its cache with ``autocommit=True``: every finished request is a SQLite commit,
    which costs more than the request itself on a fast server. Here writes are committed every
    ``every`` writes or ``interval_s`` seconds, and always when a harness call ends or fails, so
    a crashed server still leaves every finished request in the cache.
    """

    def __init__(self, path: str, every: int = 512, interval_s: float = 5.0) -> None:
        from sqlitedict import SqliteDict

        self._db = SqliteDict(path, autocommit=False)
        self._every = every
        self._interval = interval_s
        self._pending = 0
        self._last = time.monotonic()

    def __contains__(self, key: object) -> bool:
        return key in self._db

    def __getitem__(self, key: str) -> Any:
        return self._db[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._db[key] = value
        self._pending += 1
        if self._pending >= self._every or time.monotonic() - self._last > self._interval:
            self.commit()

    def commit(self) -> None:
        self._db.commit()
        self._pending = 0
        self._last = time.monotonic()

    def close(self) -> None:
        self.commit()
        self._db.close()


def _cached_lm(lm: LmEvalModel, cache_path: Path) -> tuple[Any, _BatchedCommitDict]:
    """The runtime's lm-eval model behind the lab's request cache (finished requests survive)."""
    from lm_eval.api.registry import get_model

    inner = lm.instance
    if inner is None:
        inner = get_model(lm.model_type).create_from_arg_obj(
            lm.model_args, {"batch_size": lm.batch_size}
        )
    store = _BatchedCommitDict(str(cache_path))
    return _cached_lm_class()(inner, store), store


@lru_cache(maxsize=1)
def _cached_lm_class() -> type:
    """Build the caching LM class lazily (lm-eval is a heavy import)."""
    from lm_eval.api.model import LM, CacheHook, hash_args

    class CachedLM(LM):
        """Serves requests already answered from the cache; sends the rest to ``inner``.

        Requests with sampling are never cached (repeats must differ).
        """

        def __init__(self, inner: Any, store: _BatchedCommitDict) -> None:
            super().__init__()
            self.inner = inner
            self.store = store
            hook = CacheHook(None)
            hook.dbdict = store  # type: ignore[assignment]
            inner.set_cache_hook(hook)

        def _serve(self, attr: str, requests: list[Any]) -> list[Any]:
            answers: list[Any] = [None] * len(requests)
            todo: list[int] = []
            for i, req in enumerate(requests):
                sampled = attr == "generate_until" and bool(req.args[1].get("do_sample", False))
                key = hash_args(attr, req.args)
                if not sampled and key in self.store:
                    answers[i] = self.store[key]
                else:
                    todo.append(i)
            if todo:
                method = getattr(self.inner, attr)
                # lm-eval's models pass ``disable`` to tqdm explicitly, which overrides
                # TQDM_DISABLE; the lab's CLI draws its own bar, so ask them directly.
                quiet = os.environ.get("TQDM_DISABLE", "") not in ("", "0", "false", "False")
                kwargs = (
                    {"disable_tqdm": True}
                    if quiet and "disable_tqdm" in inspect.signature(method).parameters
                    else {}
                )
                fresh = method([requests[i] for i in todo], **kwargs)
                for i, answer in zip(todo, fresh, strict=True):
                    answers[i] = answer
                    self.store[hash_args(attr, requests[i].args)] = answer
            self.store.commit()
            return answers

        def loglikelihood(self, requests: list[Any], *args: Any, **kw: Any) -> list[Any]:
            return self._serve("loglikelihood", requests)

        def loglikelihood_rolling(self, requests: list[Any], *args: Any, **kw: Any) -> list[Any]:
            return self._serve("loglikelihood_rolling", requests)

        def generate_until(self, requests: list[Any], *args: Any, **kw: Any) -> list[Any]:
            return self._serve("generate_until", requests)

        def apply_chat_template(self, *args: Any, **kw: Any) -> Any:
            return self.inner.apply_chat_template(*args, **kw)

        def chat_template(self, *args: Any, **kw: Any) -> Any:
            return self.inner.chat_template(*args, **kw)

        @property
        def tokenizer_name(self) -> str:
            return str(self.inner.tokenizer_name)

        @property
        def rank(self) -> int:
            return int(self.inner.rank)

        @property
        def world_size(self) -> int:
            return int(self.inner.world_size)

        @property
        def device(self) -> Any:
            return getattr(self.inner, "device", None)

        def __getattr__(self, name: str) -> Any:
            # Anything else (tokenizer, config, get_model_info...) is the runtime model's.
            if name in {"inner", "store"}:
                raise AttributeError(name)
            return getattr(self.inner, name)

    return CachedLM


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
        # Runtimes whose servers default to non-neutral sampling (llama.cpp's repeat_penalty
        # 1.1) ask for neutral settings so every runtime generates under the same rules.
        gen_kwargs.update(request.session.info.extra.get("generation_overrides") or {})
        cache = request.out_dir / "lm_eval_cache" / "requests.db"
        cache.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        store: _BatchedCommitDict | None = None
        try:
            model, store = _cached_lm(lm, cache)
            results = lm_eval.simple_evaluate(
                model=model,
                model_args=lm.model_args,
                tasks=list(bench.tasks),
                num_fewshot=bench.num_fewshot,
                batch_size=lm.batch_size,
                limit=bench.limit,
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
        except LabError:
            raise
        except Exception as exc:  # lm-eval raises bare Exceptions of many kinds
            raise HarnessError(
                f"lm-eval failed on benchmark {bench.name!r}: {type(exc).__name__}: {exc}",
                value=", ".join(bench.tasks),
                fix="run with --debug for the traceback; check the task config and the runtime",
            ) from exc
        finally:
            if store is not None:
                store.close()
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
