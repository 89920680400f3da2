"""CodeHarness end to end with the tiny model in-process, plus resumable generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evallab.errors import SpecError
from evallab.harnesses import get_harness
from evallab.harnesses.base import HarnessRequest
from evallab.harnesses.code import CodeHarness
from evallab.harnesses.code.datasets import load_task
from evallab.harnesses.code.generation import (
    GenerationLog,
    GenerationSettings,
    TransformersGenerator,
    run_generation,
)
from evallab.models import ModelArtifact, folder_sha256
from evallab.runtimes.transformers import TransformersSession
from evallab.spec import BenchmarkSpec, GenerationSpec, TransformersRuntimeSpec

pytestmark = pytest.mark.bubblewrap

DATA = Path(__file__).parent / "data"


def _artifact(path: Path) -> ModelArtifact:
    digest = folder_sha256(path)
    return ModelArtifact(
        name="tiny",
        source="tiny",
        model_id="evallab/tiny",
        revision=f"local:{digest[:12]}",
        sha256=digest,
        path=path,
        quant="none",
        chat=False,
    )


class _Crash(RuntimeError):
    pass


class _CrashAfter:
    """Wraps a real generator and dies after ``limit`` problems (a simulated crash)."""

    def __init__(self, inner: TransformersGenerator, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.calls: list[int] = []
        self.concurrency = 1

    def generate(self, problem, stops, count):  # type: ignore[no-untyped-def]
        if len(self.calls) >= self.limit:
            raise _Crash("simulated crash")
        self.calls.append(problem.doc_id)
        return self.inner.generate(problem, stops, count)


@pytest.mark.slow
def test_generation_resumes_after_a_crash(tiny_model: Path, tmp_path: Path) -> None:
    loaded = load_task("mbpp", file=DATA / "mbpp_mini.jsonl")
    settings = GenerationSettings(
        n=2, temperature=0.8, top_p=0.95, max_new_tokens=12, seed=7, chat=False
    )
    real = TransformersGenerator.from_path(tiny_model, settings, "mbpp")
    log_path = tmp_path / "gen.jsonl"

    crashing = _CrashAfter(real, limit=2)
    with pytest.raises(_Crash):
        run_generation(
            loaded.problems, crashing, GenerationLog(log_path, "k"), settings, loaded.task.stop
        )
    assert crashing.calls == [0, 1]
    with log_path.open("a") as fh:
        fh.write('{"doc_id": 2, "task_')  # the crash also cut a write short

    resumed = _CrashAfter(real, limit=99)
    records = run_generation(
        loaded.problems, resumed, GenerationLog(log_path, "k"), settings, loaded.task.stop
    )
    assert resumed.calls == [2]  # only the problem that never finished
    assert [r.doc_id for r in records] == [0, 1, 2]
    assert all(len(r.raw) == 2 and len(r.programs) == 2 for r in records)

    # Same seeds, same generations as an uninterrupted run.
    fresh = run_generation(
        loaded.problems,
        real,
        GenerationLog(tmp_path / "fresh.jsonl", "k"),
        settings,
        loaded.task.stop,
    )
    assert [r.raw for r in fresh] == [r.raw for r in records]

    with pytest.raises(Exception, match="other settings"):
        GenerationLog(log_path, "another-key")


def _request(
    tiny_model: Path, out: Path, bench: BenchmarkSpec, session: TransformersSession
) -> HarnessRequest:
    return HarnessRequest(
        benchmark=bench,
        model=_artifact(tiny_model),
        session=session,
        seed=1234,
        out_dir=out,
        tasks_dir=DATA,
        base_dir=DATA,
    )


@pytest.mark.slow
def test_code_harness_end_to_end_tiny_model(tiny_model: Path, tmp_path: Path) -> None:
    harness = get_harness("code")
    assert isinstance(harness, CodeHarness)
    bench = BenchmarkSpec(
        name="code-smoke",
        harness="code",
        tasks=("mbpp", "humanevalplus"),
        generation=GenerationSpec(n=2, temperature=0.8, top_p=0.95, max_gen_toks=16),
        pass_k=(1, 2),
        dataset_files={
            "mbpp": Path("mbpp_mini.jsonl"),
            "humanevalplus": Path("humanevalplus_mini.jsonl"),
        },
    )
    harness.check(bench, DATA, DATA)
    session = TransformersSession(
        TransformersRuntimeSpec(kind="transformers"), _artifact(tiny_model)
    )
    out = tmp_path / "run"
    with session:
        result = harness.run(_request(tiny_model, out, bench, session))

    assert {(s.task, s.metric) for s in result.scores} == {
        ("mbpp", "pass@1"),
        ("mbpp", "pass@2"),
        ("humanevalplus", "pass@1"),
        ("humanevalplus", "pass@2"),
    }
    assert all(s.n == 3 and s.filter == "none" and 0.0 <= s.value <= 1.0 for s in result.scores)
    assert len(result.outcomes) == 2 * 3 * 2  # tasks x problems x k
    assert {o.doc_id for o in result.outcomes} == {0, 1, 2}
    assert result.samples.num_rows == 2 * 3 * 2  # tasks x problems x n
    assert set(result.samples["status"].to_pylist()) <= {"passed", "failed", "timeout", "error"}
    assert set(result.samples["isolation"].to_pylist()) == {"bubblewrap"}
    assert result.n_samples == 6
    assert set(result.dataset_revisions) == {"mbpp", "humanevalplus"}
    assert all(v.startswith("local:") for v in result.dataset_revisions.values())
    assert result.extra["isolation"] == "bubblewrap"
    bigcode = json.loads((out / "code" / "mbpp.generations_bigcode.json").read_text())
    assert len(bigcode) == 3 and all(len(s) == 2 for s in bigcode)
    assert all(prog.startswith('"""\n') for s in bigcode for prog in s)

    # Injected canonical "generations" score 1.0 through the same resume + execute path.
    log = out / "code" / "mbpp.generations.jsonl"
    lines = log.read_text().splitlines()
    canon = {
        p.doc_id: p.canonical_program
        for p in load_task("mbpp", file=DATA / "mbpp_mini.jsonl").problems
    }
    rewritten = [lines[0]]
    for line in lines[1:]:
        rec = json.loads(line)
        rec["programs"] = [canon[rec["doc_id"]]] * len(rec["programs"])
        rewritten.append(json.dumps(rec))
    log.write_text("\n".join(rewritten) + "\n")
    mbpp_only = bench.model_copy(update={"tasks": ("mbpp",)})
    with session:
        again = harness.run(_request(tiny_model, out, mbpp_only, session))
    scores = {(s.task, s.metric): s.value for s in again.scores}
    assert scores == {("mbpp", "pass@1"): 1.0, ("mbpp", "pass@2"): 1.0}
    assert set(again.samples["status"].to_pylist()) == {"passed"}


def test_check_refuses_unpinned_hub_data_and_k_above_n() -> None:
    harness = CodeHarness()
    with pytest.raises(SpecError, match="pinned revision"):
        harness.check(BenchmarkSpec(name="b", harness="code", tasks=("humaneval",)), DATA, DATA)
    with pytest.raises(SpecError, match="pass@10"):
        harness.check(
            BenchmarkSpec(
                name="b",
                harness="code",
                tasks=("humaneval",),
                pass_k=(1, 10),
                dataset_revisions={"humaneval": "0" * 40},
            ),
            DATA,
            DATA,
        )
    with pytest.raises(SpecError, match="unknown code task"):
        harness.check(BenchmarkSpec(name="b", harness="code", tasks=("apps",)), DATA, DATA)
