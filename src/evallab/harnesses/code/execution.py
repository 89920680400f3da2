"""The execute phase: every generated program runs against its tests in the sandbox.

Results are appended to a JSONL log as they complete (keyed by problem, sample and the program's
sha256), so an interrupted execution resumes with the programs that did not finish.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from evallab.errors import HarnessError
from evallab.harnesses.code.datasets import CodeProblem
from evallab.sandbox import ExecResult, Program, Sandbox

__all__ = ["ExecutionLog", "SampleResult", "execute_programs"]


@dataclass(frozen=True)
class SampleResult:
    """One sample's execution outcome."""

    doc_id: int
    sample: int
    program_sha256: str
    status: str
    failing_test: str | None
    error: str | None
    output: str
    duration_s: float
    isolation: str

    @property
    def passed(self) -> bool:
        """Whether the sample passed every test."""
        return self.status == "passed"


def program_sha256(program: str, tests: str) -> str:
    """Identity of what was executed."""
    return hashlib.sha256((program + "\0" + tests).encode()).hexdigest()


class ExecutionLog:
    """Append-only JSONL of :class:`SampleResult` (thread-safe appends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.results: dict[tuple[int, int], SampleResult] = {}
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            lines = path.read_text(encoding="utf-8").split("\n")
            good = 0
            for i, line in enumerate(lines):
                if not line:
                    continue
                try:
                    rec = SampleResult(**json.loads(line))
                except (ValueError, TypeError):
                    if i >= len(lines) - 2:
                        break  # the line a crash cut short
                    raise HarnessError(
                        f"execution log is corrupt at line {i + 1}",
                        value=path,
                        fix="delete the file to execute every sample again",
                    ) from None
                self.results[(rec.doc_id, rec.sample)] = rec
                good += len(line.encode()) + 1
            with path.open("r+b") as fh:
                fh.truncate(good)

    def add(self, rec: SampleResult) -> None:
        """Persist one result.

        Flushed, not fsynced: a result is cheap to recompute, and an fsync per sample would
        cost more than running it.
        """
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(rec)) + "\n")
            self.results[(rec.doc_id, rec.sample)] = rec


def execute_programs(
    problems: Sequence[CodeProblem],
    programs: Sequence[Sequence[str]],
    sandbox: Sandbox,
    log: ExecutionLog,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[SampleResult]]:
    """Run every (problem, sample) program not already in ``log``.

    Args:
        problems: The problems, aligned with ``programs``.
        programs: Per problem, the list of sample programs.
        sandbox: Where code runs.
        log: Results so far; new ones are appended as they complete.
        progress: Called with (done, total).

    Returns:
        Per problem, per sample, the results.
    """
    jobs: list[tuple[int, int, str]] = []
    todo: list[Program] = []
    total = sum(len(p) for p in programs)
    done = 0
    for problem, samples in zip(problems, programs, strict=True):
        for i, prog in enumerate(samples):
            sha = program_sha256(prog, problem.tests)
            prev = log.results.get((problem.doc_id, i))
            if prev is not None and prev.program_sha256 == sha:
                done += 1
                continue
            jobs.append((problem.doc_id, i, sha))
            todo.append(Program(prog, problem.tests, problem.timeout_s))

    def on_result(index: int, res: ExecResult) -> None:
        nonlocal done
        doc_id, sample, sha = jobs[index]
        log.add(
            SampleResult(
                doc_id,
                sample,
                sha,
                res.status,
                res.failing_test,
                res.error,
                res.output,
                res.duration_s,
                res.isolation,
            )
        )
        done += 1
        if progress is not None:
            progress(done, total)

    sandbox.run_many(todo, on_result=on_result)
    return [
        [log.results[(problem.doc_id, i)] for i in range(len(samples))]
        for problem, samples in zip(problems, programs, strict=True)
    ]
