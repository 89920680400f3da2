"""The ``code`` harness: HumanEval, HumanEval+, MBPP and MBPP+, executed in a real sandbox.

Two resumable phases per task, with state under ``<out_dir>/code/``:

1. **generate** — ``n`` samples per problem through the runtime's server (completions for base
   models, chat completions + code-block extraction for instruct models) or in-process
   transformers; appended to ``<task>.generations.jsonl`` as each problem completes, then written
   as bigcode-harness's ``list[list[str]]`` (``<task>.generations_bigcode.json``) for
   ``--load_generations_path`` cross-checks.
2. **execute** — every program against its tests in :mod:`evallab.sandbox`; per-sample
   ``passed|failed|timeout|error`` with the failing test, appended to ``<task>.executions.jsonl``.

Scores: ``pass@k`` (unbiased estimator) for each k the benchmark asks for. Sample outcomes: one
row per problem and k, valued by that problem's pass@k estimate (for pass@1, the fraction of its
samples that passed). See ``docs/code-benchmarks.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa

from evallab.errors import HarnessError, SpecError, UnknownTaskError
from evallab.harnesses.base import HarnessRequest, HarnessResult, SampleOutcome, ScoreRow
from evallab.harnesses.code.datasets import TASKS, LoadedTask, load_task
from evallab.harnesses.code.execution import ExecutionLog, execute_programs
from evallab.harnesses.code.generation import (
    GenerationLog,
    GenerationRecord,
    GenerationSettings,
    Generator,
    ServerGenerator,
    TransformersGenerator,
    run_generation,
)
from evallab.harnesses.code.scoring import SAMPLE_SCHEMA, score_task
from evallab.runtimes.base import Capabilities
from evallab.sandbox import Sandbox, SandboxConfig
from evallab.spec import BenchmarkSpec

__all__ = ["CodeHarness"]

# Bump when prompts or post-processing change: it is part of the generation log's key.
PROMPT_VERSION = "bigcode-1"


def _write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


class CodeHarness:
    """HumanEval-family benchmarks, bigcode-harness compatible, executed in bubblewrap."""

    name = "code"

    def __init__(self, sandbox_config: SandboxConfig | None = None) -> None:
        self.sandbox_config = sandbox_config

    def version(self) -> tuple[str, str]:
        """(evallab version + prompt version, "")."""
        try:
            lab = metadata.version("evallab")
        except metadata.PackageNotFoundError:
            lab = "0+unknown"
        return f"{lab}+{PROMPT_VERSION}", ""

    def check(self, benchmark: BenchmarkSpec, tasks_dir: Path, base_dir: Path) -> None:
        """Refuse unknown tasks, missing data files, unpinned hub data and k > n."""
        for task in benchmark.tasks:
            if task not in TASKS:
                raise UnknownTaskError(
                    f"benchmark {benchmark.name!r} names an unknown code task",
                    value=task,
                    fix=f"use one of {', '.join(sorted(TASKS))}",
                )
            file = self._file(benchmark, task, base_dir)
            if file is not None and not file.is_file():
                raise SpecError(
                    f"data file for code task {task!r} not found",
                    value=file,
                    fix="check dataset_files (relative paths resolve against the repository root)",
                )
            if file is None:
                rev = benchmark.dataset_revisions.get(task, "")
                if len(rev) != 40 or any(ch not in "0123456789abcdef" for ch in rev):
                    raise SpecError(
                        f"code task {task!r} loads from the hub without a pinned revision",
                        value=rev or None,
                        fix=f"set dataset_revisions: {{{task}: <40-hex commit of "
                        f"{TASKS[task].hub_repo}>}}, or a local file in dataset_files",
                    )
        n = benchmark.generation.n
        bad = [k for k in benchmark.pass_k if k > n]
        if bad:
            raise SpecError(
                f"benchmark {benchmark.name!r} asks for pass@{bad[0]} with n={n} samples",
                value=list(benchmark.pass_k),
                fix=f"set generation.n >= {max(bad)} or drop those k values",
            )

    def check_runtime(
        self, benchmark: BenchmarkSpec, capabilities: Capabilities, tasks_dir: Path
    ) -> None:
        """Code benchmarks only generate: every runtime can serve them."""

    @staticmethod
    def _file(benchmark: BenchmarkSpec, task: str, base_dir: Path) -> Path | None:
        file = benchmark.dataset_files.get(task)
        if file is None:
            return None
        return file if file.is_absolute() else (base_dir / file)

    def run(self, request: HarnessRequest) -> HarnessResult:
        """Generate, execute and score every task of the benchmark."""
        bench = request.benchmark
        self.check(bench, request.tasks_dir, request.base_dir)
        gen = bench.generation
        settings = GenerationSettings(
            n=gen.n,
            temperature=gen.temperature,
            top_p=gen.top_p,
            max_new_tokens=gen.max_gen_toks,
            seed=request.seed,
            chat=request.model.chat,
        )
        # The sandbox also honours EVALLAB_ALLOW_UNSAFE_CODE=1 (documented) by itself.
        config = self.sandbox_config or SandboxConfig(allow_unsafe=request.allow_unsafe_code)
        sandbox = Sandbox(config)
        state = request.out_dir / "code"
        state.mkdir(parents=True, exist_ok=True)
        scores: list[ScoreRow] = []
        outcomes: list[SampleOutcome] = []
        rows: list[dict[str, Any]] = []
        revisions: dict[str, str] = {}
        hashes: dict[str, str] = {}
        per_task: dict[str, Any] = {}
        shared: dict[str, Any] = {}
        n_docs = 0
        for task in bench.tasks:
            loaded = load_task(
                task,
                file=self._file(bench, task, request.base_dir),
                revision=bench.dataset_revisions.get(task),
                limit=bench.limit,
            )
            records = self._generate(request, loaded, settings, state, shared)
            programs = [r.programs for r in records]
            bigcode_path = state / f"{task}.generations_bigcode.json"
            _write_json_atomic(bigcode_path, programs)
            results = execute_programs(
                loaded.problems,
                programs,
                sandbox,
                ExecutionLog(state / f"{task}.executions.jsonl"),
                progress=self._progress(request, f"{task}: execute"),
            )
            out = score_task(task, loaded.problems, records, results, bench.pass_k)
            scores += out.scores
            outcomes += out.outcomes
            rows += out.rows
            revisions[task] = loaded.revision
            hashes[task] = hashlib.sha256(
                "".join(p.doc_hash for p in loaded.problems).encode()
            ).hexdigest()
            statuses: dict[str, int] = {}
            for r in out.rows:
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            per_task[task] = {
                "scores": {s.metric: s.value for s in out.scores},
                "n_problems": len(loaded.problems),
                "n_samples": len(out.rows),
                "statuses": statuses,
                "revision": loaded.revision,
                "source": loaded.source,
                "hub_repo": loaded.task.hub_repo,
                "timeout_s": loaded.task.timeout_s,
                "stop": list(loaded.task.stop),
                "generations": str(state / f"{task}.generations.jsonl"),
                "bigcode_generations": str(bigcode_path),
            }
            n_docs += len(loaded.problems)
        for gen_obj in shared.values():
            close = getattr(gen_obj, "close", None)
            if callable(close):
                close()
        table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
        return HarnessResult(
            scores=scores,
            outcomes=outcomes,
            samples=table,
            results_json={
                "harness": "code",
                "prompt_version": PROMPT_VERSION,
                "tasks": per_task,
                "generation": asdict(settings),
                "pass_k": list(bench.pass_k),
                "sandbox": sandbox.describe(),
            },
            n_samples=n_docs,
            dataset_revisions=revisions,
            task_hashes=hashes,
            extra={"isolation": sandbox.isolation, "sandbox": sandbox.describe()},
        )

    # ------------------------------------------------------------------------------ generate

    @staticmethod
    def _progress(request: HarnessRequest, note: str) -> Any:
        cb = request.progress
        if cb is None:
            return None
        return lambda done, total: cb(done, total, note)

    def _generate(
        self,
        request: HarnessRequest,
        loaded: LoadedTask,
        settings: GenerationSettings,
        state: Path,
        shared: dict[str, Any],
    ) -> list[GenerationRecord]:
        task = loaded.task.name
        key_src = {
            "task": task,
            "revision": loaded.revision,
            "doc_hashes": [p.doc_hash for p in loaded.problems],
            "settings": asdict(settings),
            "model": request.model.sha256,
            "runtime": request.session.info.kind,
            "prompt_version": PROMPT_VERSION,
        }
        # The doc hashes make a log with --limit 5 incompatible with one with --limit 10; key on
        # settings only and let the log hold any subset of problems.
        key_src.pop("doc_hashes")
        key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()
        log = GenerationLog(state / f"{task}.generations.jsonl", key)
        for p in loaded.problems:
            rec = log.records.get(p.doc_id)
            if rec is not None and rec.doc_hash != p.doc_hash:
                raise HarnessError(
                    f"generation log holds problem {p.task_id} with different content",
                    value=log.path,
                    fix="the dataset changed under the same revision label; delete the log",
                )
        if all(p.doc_id in log.records for p in loaded.problems):
            return [log.records[p.doc_id] for p in loaded.problems]
        generator = self._generator(request, settings, task, shared)
        return run_generation(
            loaded.problems,
            generator,
            log,
            settings,
            loaded.task.stop,
            progress=self._progress(request, f"{task}: generate"),
        )

    def _generator(
        self,
        request: HarnessRequest,
        settings: GenerationSettings,
        task: str,
        shared: dict[str, Any],
    ) -> Generator:
        endpoint = request.session.endpoint
        if endpoint is not None:
            api_key = None
            key_env = endpoint.settings.api_key_env
            if key_env:
                api_key = os.environ.get(key_env)
            gen = ServerGenerator(
                endpoint.base_url,
                endpoint.served_model,
                settings,
                task,
                concurrency=endpoint.settings.num_concurrent,
                api_key=api_key,
            )
            shared[f"server:{task}"] = gen
            return gen
        loaded = shared.get("transformers")
        if loaded is None:
            loaded = self._load_transformers(request)
            shared["transformers"] = loaded
        model, tok, max_length = loaded
        return TransformersGenerator(model, tok, settings, task, max_length=max_length)

    @staticmethod
    def _load_transformers(request: HarnessRequest) -> tuple[Any, Any, int]:
        # Reuse the model the in-process session already loaded (one copy in memory).
        weights = request.session.weights
        instance = weights.load() if weights is not None else None
        max_length = weights.max_length if weights is not None else 2048
        model = getattr(instance, "model", None)
        tok = getattr(instance, "tokenizer", None)
        if model is not None and tok is not None:
            return model, tok, max_length
        standalone = TransformersGenerator.from_path(
            request.model.path,
            GenerationSettings(1, 0.0, 1.0, 1, 0, False),
            "",
            device=weights.device if weights is not None else "cpu",
            dtype=weights.dtype if weights is not None else "float32",
        )
        return standalone.model, standalone.tokenizer, max_length
