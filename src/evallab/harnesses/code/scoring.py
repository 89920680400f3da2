"""Scoring a code task: pass@k, per-problem outcomes, per-sample rows; the execute phase alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from evallab.harnesses.base import SampleOutcome, ScoreRow
from evallab.harnesses.code.datasets import CodeProblem
from evallab.harnesses.code.execution import ExecutionLog, SampleResult, execute_programs
from evallab.harnesses.code.generation import (
    GenerationRecord,
)
from evallab.harnesses.code.passk import pass_at_k, pass_at_k_mean
from evallab.sandbox import Sandbox

__all__ = ["SAMPLE_SCHEMA", "TaskOutcome", "evaluate_programs", "score_task"]


class TaskOutcome:
    """Scores, outcomes and sample rows of one task (pure data, built by :func:`score_task`)."""

    def __init__(
        self, scores: list[ScoreRow], outcomes: list[SampleOutcome], rows: list[dict[str, Any]]
    ) -> None:
        self.scores = scores
        self.outcomes = outcomes
        self.rows = rows


def score_task(
    task: str,
    problems: list[CodeProblem],
    records: list[GenerationRecord],
    results: list[list[SampleResult]],
    ks: tuple[int, ...],
) -> TaskOutcome:
    """pass@k scores, per-problem outcomes and per-sample rows for one task."""
    counts = [(len(r), sum(s.passed for s in r)) for r in results]
    n_min = min((n for n, _ in counts), default=0)
    scores, outcomes, rows = [], [], []
    for k in ks:
        if k > n_min:
            continue  # pass@k is undefined with fewer than k samples (checked up front)
        mean, stderr = pass_at_k_mean(counts, k)
        scores.append(ScoreRow(task, f"pass@{k}", "none", mean, stderr, len(problems), True))
        for problem, (n, c) in zip(problems, counts, strict=True):
            outcomes.append(
                SampleOutcome(
                    task, problem.doc_id, problem.doc_hash, f"pass@{k}", "none", pass_at_k(n, c, k)
                )
            )
    for problem, rec, res in zip(problems, records, results, strict=True):
        for i, r in enumerate(res):
            rows.append(
                {
                    "task": task,
                    "doc_id": problem.doc_id,
                    "task_id": problem.task_id,
                    "doc_hash": problem.doc_hash,
                    "sample": i,
                    "prompt": problem.prompt,
                    "generation": rec.raw[i],
                    "program": rec.programs[i],
                    "status": r.status,
                    "passed": r.passed,
                    "failing_test": r.failing_test,
                    "error": r.error,
                    "output": r.output,
                    "duration_s": r.duration_s,
                    "isolation": r.isolation,
                }
            )
    return TaskOutcome(scores, outcomes, rows)


SAMPLE_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("doc_id", pa.int64()),
        ("task_id", pa.string()),
        ("doc_hash", pa.string()),
        ("sample", pa.int32()),
        ("prompt", pa.string()),
        ("generation", pa.string()),
        ("program", pa.string()),
        ("status", pa.string()),
        ("passed", pa.bool_()),
        ("failing_test", pa.string()),
        ("error", pa.string()),
        ("output", pa.string()),
        ("duration_s", pa.float64()),
        ("isolation", pa.string()),
    ]
)


def evaluate_programs(
    problems: list[CodeProblem],
    programs: list[list[str]],
    sandbox: Sandbox,
    state_file: Path,
) -> list[list[SampleResult]]:
    """The execute phase alone: run ``programs`` (per problem, per sample) against the tests.

    Args:
        problems: The problems.
        programs: Complete programs per problem (e.g. loaded bigcode generations).
        sandbox: Where code runs.
        state_file: The resumable execution log.
    """
    return execute_programs(problems, programs, sandbox, ExecutionLog(state_file))
