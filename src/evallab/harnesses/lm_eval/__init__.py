"""lm-evaluation-harness as a lab harness: standard tasks plus the user's ``tasks_custom/``.

The package's parts: :mod:`.tasks` resolves task names (groups and tags expanded, configs,
output types), :mod:`.client` builds the lm-eval model from the runtime session's endpoint or
weights, :mod:`.cache` keeps finished requests across a crashed server, :mod:`.results` parses
lm-eval's outputs into the lab's typed rows.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from evallab.errors import HarnessError, LabError, SpecError, UnknownTaskError
from evallab.harnesses import custom_tasks
from evallab.harnesses.base import HarnessRequest, HarnessResult
from evallab.harnesses.lm_eval.cache import BatchedCommitDict, cached_lm
from evallab.harnesses.lm_eval.client import lm_eval_model
from evallab.harnesses.lm_eval.results import (
    dataset_revisions,
    parse_results,
    samples_table,
)
from evallab.harnesses.lm_eval.tasks import scores_prompts, task_catalog
from evallab.runtimes.base import Capabilities
from evallab.spec import BenchmarkSpec

__all__ = ["LmEvalHarness"]


def _check_data_files(task: custom_tasks.CustomTask) -> None:
    """Refuse a custom task whose local data files are missing."""
    for f in task.data_files():
        if not f.exists():
            raise UnknownTaskError(
                f"custom task {task.name!r} reads a data file that does not exist",
                value=f"{f} (from {task.path})",
                fix="fix dataset_kwargs.data_files in the task YAML; relative paths "
                "resolve against the YAML's own folder",
            )


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
        """Refuse unknown tasks and custom tasks whose data files are missing.

        A name is known when it is a custom task, one of lm-eval's tasks, groups or tags, or a
        group or tag defined in the custom folder whose members all resolve (e.g. a group that
        pins a standard task's dataset revision).
        """
        custom = self._custom(tasks_dir)
        catalog = None
        for task in benchmark.tasks:
            if task in custom:
                _check_data_files(custom[task])
                continue
            broken = custom_tasks.yaml_problems(tasks_dir)
            if broken:
                # The task is most likely defined in a file the parser gave up on: the syntax
                # error is the problem to fix, not the task's name (and lm-eval's index of the
                # folder would stumble on it too).
                raise SpecError(
                    f"benchmark {benchmark.name!r} names task {task!r}, which no readable task "
                    f"YAML defines, and {len(broken)} custom task YAML(s) are not valid YAML: "
                    f"{'; '.join(p.describe() for p in broken[:3])}",
                    value=broken[0].path,
                    fix="fix the YAML syntax at that line (indentation, colons, quotes)",
                )
            if catalog is None:
                # The catalog with the custom folder is the one pins already built (cached).
                catalog = task_catalog([tasks_dir])
            if task in catalog.builtin_names:
                continue
            leaves = catalog.leaves(task) if task in catalog.names else []
            if leaves:
                for leaf in leaves:
                    if leaf.name in custom:
                        _check_data_files(custom[leaf.name])
                continue
            close = difflib.get_close_matches(
                task, sorted({*custom, *catalog.names}), n=5, cutoff=0.6
            )
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UnknownTaskError(
                f"benchmark {benchmark.name!r} names an unknown task",
                value=task,
                fix=f"{hint}list lm-eval's tasks with `lm_eval ls tasks`, or add a YAML with "
                f"'task: {task}' under {tasks_dir}",
            )

    def check_runtime(
        self, benchmark: BenchmarkSpec, capabilities: Capabilities, tasks_dir: Path
    ) -> None:
        """Refuse loglikelihood/multiple-choice tasks on a runtime that can't score them.

        Scoring a prompt needs its token logprobs from the runtime, and lm-eval's API clients
        need the model's tokenizer locally to find where the continuation starts.

        Raises:
            SpecError: a task scores prompts and the runtime can't (or has no local tokenizer).
        """
        if capabilities.prompt_logprobs and capabilities.local_tokenizer:
            return
        if not scores_prompts(benchmark, tasks_dir):
            return
        if not capabilities.prompt_logprobs:
            raise SpecError(
                capabilities.prompt_logprobs_caveat
                or "this runtime can't score prompts, so loglikelihood and multiple-choice tasks "
                "would be scored wrong",
                value=f"benchmark {benchmark.name!r} ({', '.join(benchmark.tasks)})",
                fix="run generation tasks on this runtime, and loglikelihood/multiple-choice "
                "tasks on vllm or transformers",
            )
        raise SpecError(
            "loglikelihood tasks need the model's tokenizer locally to count context tokens",
            value=f"benchmark {benchmark.name!r}",
            fix="set 'tokenizer' in the openai-endpoint runtime to a tokenizer folder",
        )

    def run(self, request: HarnessRequest) -> HarnessResult:
        """Evaluate the benchmark's tasks; raise HarnessError on failure."""
        import lm_eval

        from evallab.harnesses.lm_eval.manager import task_manager

        bench = request.benchmark
        custom = self._custom(request.tasks_dir)
        staged = None
        if custom:
            staged = custom_tasks.stage(request.tasks_dir, request.out_dir / "tasks")
        self.check_runtime(bench, request.session.capabilities, request.tasks_dir)
        lm = lm_eval_model(
            request.session, bench, chat=request.model.chat, tasks_dir=request.tasks_dir
        )
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
        store: BatchedCommitDict | None = None
        try:
            model, store = cached_lm(lm, cache)
            results = lm_eval.simple_evaluate(
                model=model,
                model_args=lm.model_args,
                tasks=list(bench.tasks),
                num_fewshot=bench.num_fewshot,
                batch_size=lm.batch_size,
                limit=bench.limit,
                log_samples=True,
                gen_kwargs=gen_kwargs or None,
                task_manager=task_manager([staged] if staged else []),
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
            dataset_revisions=dataset_revisions(results, custom),
            task_hashes={k: str(v) for k, v in (results.get("task_hashes") or {}).items()},
        )
