"""A real Prefect server and process workers: a GPU is never shared, queued campaigns are never
*Late*, and a campaign whose flow process is SIGKILLed resumes without duplicates or orphans.

Since the GPU is guarded by one global concurrency limit per GPU (``gpu-<host>-<i>``, 1 slot),
held only around a group's start-runtime → canary → evaluate → stop-runtime, the work pool has no
limit: a worker starts every campaign at once, and their GPU phases take turns.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from evallab.runtimes.process import group_pids
from tests.flows.helpers import PrefectServer, prefect_setup, stop_process
from tests.helpers import EVALLAB, REPO, campaign_yaml, fetch

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow, pytest.mark.timeout(1800)]

PREFECT = [sys.executable, "-m", "prefect"]
FINISHED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
Span = tuple[datetime, datetime]


def lab_env(server: PrefectServer, pg_dsn: str, lab_home: Path) -> dict[str, str]:
    env = {
        **server.env,
        "EVALLAB_DATABASE_URL": pg_dsn,
        "EVALLAB_HOME": str(lab_home),
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "200",  # setup's table and submit's line are not wrapped
    }
    # No TQDM_DISABLE: the flow itself must keep lm-eval's bars out of the worker's log.
    env.pop("TQDM_DISABLE", None)
    return env


def gpu_limit(devices: str) -> str:
    """The name of the global concurrency limit of GPU ``devices`` on this host."""
    from flows.executor import gpu_limit_name

    return gpu_limit_name(devices=devices)


# ----------------------------------------------------------------------------- Prefect API


def api_post(server: PrefectServer, path: str, body: dict[str, Any]) -> Any:
    reply = httpx.post(f"{server.url}{path}", json=body, timeout=10)
    reply.raise_for_status()
    return reply.json()


def flow_runs(server: PrefectServer, ids: list[str]) -> list[dict[str, Any]]:
    """The flow runs ``ids``, in that order."""
    runs = {
        r["id"]: r
        for r in api_post(server, "/flow_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
    }
    return [runs[i] for i in ids]


def gpu_limits(server: PrefectServer) -> dict[str, dict[str, Any]]:
    """Every global concurrency limit, by name."""
    return {c["name"]: c for c in api_post(server, "/v2/concurrency_limits/filter", {})}


def state_names(server: PrefectServer, flow_run_id: str) -> list[str]:
    """Every state a flow run went through, oldest first."""
    reply = httpx.get(
        f"{server.url}/flow_run_states/", params={"flow_run_id": flow_run_id}, timeout=10
    )
    reply.raise_for_status()
    return [s["name"] for s in sorted(reply.json(), key=lambda s: s["timestamp"])]


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def gpu_span(server: PrefectServer, flow_run_id: str) -> Span:
    """From the earliest start of a ``start-runtime`` task run to the latest end of a
    ``stop-runtime`` one: the flow run holds its GPU's slot all along (and a little longer)."""
    tasks = api_post(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    starts = [when(t["start_time"]) for t in tasks if t["name"].startswith("start-runtime · ")]
    ends = [when(t["end_time"]) for t in tasks if t["name"].startswith("stop-runtime · ")]
    assert starts and ends, f"no runtime started/stopped: {sorted(t['name'] for t in tasks)}"
    assert None not in starts and None not in ends
    return min(starts), max(ends)


def flow_span(run: dict[str, Any]) -> Span:
    return when(run["start_time"]), when(run["end_time"])


def disjoint(spans: list[Span]) -> bool:
    ordered = sorted(spans)
    return all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))


def waited_on(states: list[str]) -> list[str]:
    """The GPU limits a flow run waited for (its "Waiting for GPU (<limit>)" states)."""
    prefix = "Waiting for GPU ("
    return [s[len(prefix) : -1] for s in states if s.startswith(prefix)]


# ------------------------------------------------------------------------------- helpers


def row(output: str, obj: str) -> str:
    """The line of setup's table about ``obj``."""
    [line] = [ln for ln in output.splitlines() if f" {obj} " in ln]
    return line


def start_worker(
    env: dict[str, str], cwd: Path, pool: str, gpu: str, *extra: str
) -> tuple[subprocess.Popen[bytes], Path]:
    log = cwd / f"worker-{pool}-{gpu}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", pool, "--name", f"{pool}-{gpu}", *extra],
            cwd=cwd,
            env={**env, "CUDA_VISIBLE_DEVICES": gpu},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


def submit_together(env: dict[str, str], cwd: Path, paths: list[Path]) -> list[str]:
    """``evallab submit`` each campaign, all at once; their flow run ids, in order."""
    procs = [
        subprocess.Popen(
            [*EVALLAB, "submit", str(p)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in paths
    ]
    ids = []
    for path, proc in zip(paths, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        # "submitted <path> as flow run <stem> (<id>)": named after the campaign at creation.
        assert f"as flow run {path.stem} (" in out, out
        ids.append(out.strip().rsplit("(", 1)[1].rstrip(")"))
    return ids


def wait_finished(
    server: PrefectServer, ids: list[str], logs: list[Path], timeout: float = 1200
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = flow_runs(server, ids)
        if all(r["state_type"] in FINISHED for r in runs):
            return runs
        time.sleep(2)
    tails = "\n".join(f"{log.name}: {log.read_text()[-3000:]}" for log in logs)
    pytest.fail(f"flow runs did not finish: {[r['state_name'] for r in runs]}\n{tails}")


def check_gpu_turns(
    server: PrefectServer, runs: list[dict[str, Any]], limits: set[str]
) -> dict[str, list[str]]:
    """Each run took one of ``limits``, was never Late; runs on one limit never overlapped.

    Returns the flow run names on each limit used.
    """
    by_limit: dict[str, list[str]] = {}
    spans: dict[str, list[Span]] = {}
    for r in runs:
        states = state_names(server, r["id"])
        assert "Late" not in states, f"{r['name']} went Late: {states}"
        [limit] = set(waited_on(states)) or {"(none)"}
        assert limit in limits, f"{r['name']} took {limit}, not one of {limits}: {states}"
        by_limit.setdefault(limit, []).append(r["name"])
        spans.setdefault(limit, []).append(gpu_span(server, r["id"]))
    for limit, on_it in spans.items():
        assert disjoint(on_it), f"GPU phases on {limit} overlapped: {sorted(on_it)}"
    free = gpu_limits(server)
    assert all(free[name]["active_slots"] == 0 for name in limits), "a GPU slot was not freed"
    return by_limit


# --------------------------------------------------------------------------------- tests


def test_gpu_never_shared_and_queued_campaigns_are_not_late(
    prefect_server: PrefectServer, pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    env = lab_env(prefect_server, pg_dsn, lab_home)
    gpu0 = gpu_limit("0")
    out = prefect_setup(env, tmp_path)
    assert "no limit" in row(out, "work pool gpu"), out
    assert "1 slot" in row(out, f"concurrency limit {gpu0}"), out
    pool = httpx.get(f"{prefect_server.url}/work_pools/gpu", timeout=10).json()
    assert (pool["type"], pool["concurrency_limit"]) == ("process", None)
    limit = gpu_limits(prefect_server)[gpu0]
    assert (limit["limit"], limit["active"], limit["active_slots"]) == (1, True, 0)
    # Setup is safe to repeat: the limit is found, not duplicated.
    again = prefect_setup(env, tmp_path, "--no-deploy")
    assert " exists " in row(again, f"concurrency limit {gpu0}"), again
    assert [n for n in gpu_limits(prefect_server) if n == gpu0] == [gpu0]

    worker, log = start_worker(env, tmp_path, "gpu", "0")  # no --limit: the GPU limit guards
    try:
        # Different configs, different runs; benchmark names no other test uses, so no earlier
        # run in the session has the same pins (a campaign resumes by run identity).
        paths = [
            campaign_yaml(
                tmp_path, name, f"  - {{name: {name}-mc, tasks: [demo_mc], limit: {n}}}\n"
            )
            for name, n in (("pool-a", 5), ("pool-b", 4))
        ]
        ids = submit_together(env, tmp_path, paths)
        runs = wait_finished(prefect_server, ids, [log])
    finally:
        stop_process(worker)  # the worker goes before the server
    assert [(r["name"], r["state_type"]) for r in runs] == [
        ("pool-a", "COMPLETED"),
        ("pool-b", "COMPLETED"),
    ], log.read_text()[-4000:]
    # Both campaigns ran at once (pins, model, plan)... but took turns on the GPU, and the one
    # that waited did so in a "Waiting for GPU" state, never as a Late scheduled run.
    a, b = (flow_span(r) for r in runs)
    assert a[0] < b[1] and b[0] < a[1], f"the campaigns ran one after the other: {a}, {b}"
    worker_log = log.read_text()
    assert "Running loglikelihood requests" not in worker_log, worker_log[-3000:]
    assert check_gpu_turns(prefect_server, runs, {gpu0}) == {gpu0: ["pool-a", "pool-b"]}
    rows = fetch(
        pg_dsn,
        "SELECT c.name, r.status FROM runs r JOIN campaigns c USING (campaign_id) "
        "WHERE c.name IN ('pool-a', 'pool-b') ORDER BY 1",
    )
    assert [(r["name"], r["status"]) for r in rows] == [
        ("pool-a", "succeeded"),
        ("pool-b", "succeeded"),
    ]
    # Artifacts are keyed by the flow run's name (the campaign file's stem).
    keys = [
        "run-pool-a-tiny-base-transformers-pool-a-mc",
        "run-pool-b-tiny-base-transformers-pool-b-mc",
        "campaign-pool-a",
        "campaign-pool-b",
    ]
    found = api_post(prefect_server, "/artifacts/filter", {"artifacts": {"key": {"any_": keys}}})
    assert sorted({a["key"] for a in found}) == sorted(keys)
    check_release_trigger(prefect_server)


def check_release_trigger(server: PrefectServer) -> None:
    """prefect.yaml's trigger: an hf.model.released event schedules that model's campaign."""
    sha = "9b3a1c2d4e5f60718293a4b5c6d7e8f901234567"
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "hf.model.released",
        "resource": {
            "prefect.resource.id": "hf.model.acme-ai/tiny-chat",
            "prefect.resource.name": "acme-ai/tiny-chat",
        },
        "payload": {
            "repo": "acme-ai/tiny-chat",
            "revision": sha,
            "campaign": "deployments/demo.yaml",
            "source": "webhook",
            "chat": True,
            "quant": "none",
        },
    }
    httpx.post(f"{server.url}/events", json=[event], timeout=10).raise_for_status()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        runs = api_post(server, "/flow_runs/filter", {})
        released = [r for r in runs if r["parameters"].get("model_repo") == "acme-ai/tiny-chat"]
        if released:
            break
        time.sleep(1)
    else:
        pytest.fail("the hf.model.released trigger did not start a campaign")
    params = released[0]["parameters"]
    assert (params["campaign_path"], params["revision"]) == ("deployments/demo.yaml", sha)
    # No worker is running now: delete the scheduled run so nothing picks it up later.
    httpx.delete(f"{server.url}/flow_runs/{released[0]['id']}", timeout=10).raise_for_status()


def run_flow(path: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from flows.campaign import campaign\n"
        f"campaign(campaign_path={str(path)!r})\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_sigkilled_campaign_resumes_without_duplicates_or_orphans(
    prefect_server: PrefectServer, pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    # A "GPU" of its own: the killed flow holds its slot until Prefect's lease expires.
    env = {**lab_env(prefect_server, pg_dsn, lab_home), "CUDA_VISIBLE_DEVICES": "sigkill"}
    path = campaign_yaml(
        tmp_path,
        "killed",
        """  - {name: quick, tasks: [demo_mc], limit: 5}
  - {name: slow, tasks: [demo_gen]}
""",
    )
    sql = (
        "SELECT r.benchmark, r.status FROM runs r JOIN campaigns c USING (campaign_id) "
        "WHERE c.name = 'killed' ORDER BY 1"
    )
    proc = run_flow(path, env, tmp_path)
    try:
        deadline = time.monotonic() + 420
        while not fetch(pg_dsn, sql):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the first benchmark never finished"
            time.sleep(0.3)
        time.sleep(1.0)  # inside the slow benchmark now, holding the GPU's slot
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1.0)
    assert group_pids(proc.pid) == [], "processes of the killed flow survived it"
    assert [tuple(r) for r in fetch(pg_dsn, sql)] == [("quick", "succeeded")]
    campaigns_sql = (
        "SELECT status, driver, driver_pid, status_reason FROM campaigns WHERE name = 'killed' "
        "ORDER BY started_at"
    )
    [killed] = fetch(pg_dsn, campaigns_sql)
    # Nothing could close it: the row says running until a campaign on this host opens.
    assert (killed["status"], killed["driver"], killed["driver_pid"]) == (
        "running",
        "prefect",
        proc.pid,
    )

    resumed = run_flow(path, env, tmp_path)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-4000:]
    assert [tuple(r) for r in fetch(pg_dsn, sql)] == [("quick", "succeeded"), ("slow", "succeeded")]
    keys = fetch(
        pg_dsn,
        "SELECT run_key, count(*) AS n FROM runs r JOIN campaigns c "
        "USING (campaign_id) WHERE c.name = 'killed' GROUP BY 1",
    )
    assert sorted(r["n"] for r in keys) == [1, 1]
    # The resumed campaign found the killed one's driver gone and closed its row.
    first, second = fetch(pg_dsn, campaigns_sql)
    assert (first["status"], second["status"]) == ("crashed", "succeeded")
    assert f"pid {proc.pid}" in first["status_reason"], first["status_reason"]
    assert "killed" in first["status_reason"], first["status_reason"]
    # And the killed flow's GPU slot came back (its lease expired): nothing holds it now.
    assert gpu_limits(prefect_server)[gpu_limit("sigkill")]["active_slots"] == 0


def test_one_worker_per_gpu_scales_out_on_one_pool(
    prefect_server: PrefectServer, pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    """Two GPUs: two limits of one slot; each worker's campaigns take its own GPU's limit, and
    campaigns on one limit take turns."""
    env = lab_env(prefect_server, pg_dsn, lab_home)
    gpus = {gpu_limit("0"), gpu_limit("1")}
    out = prefect_setup(
        env, tmp_path, "--pool", "gpu-multi", "--gpus", "2", "--no-deploy", "--no-blocks"
    )
    for name in gpus:
        assert "1 slot" in row(out, f"concurrency limit {name}"), out
    limits = gpu_limits(prefect_server)
    assert {n: limits[n]["limit"] for n in gpus} == dict.fromkeys(gpus, 1)
    pool = httpx.get(f"{prefect_server.url}/work_pools/gpu-multi", timeout=10).json()
    assert pool["concurrency_limit"] is None
    deploy = subprocess.run(
        [*PREFECT, "--no-prompt", "deploy", "--name", "campaign", "--pool", "gpu-multi"],
        cwd=REPO,
        env={**env, "EVALLAB_REPO": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    # As docs/orchestration.md says: one worker per GPU, no --limit. Prefect hands scheduled runs
    # to whichever worker polls first, so both campaigns may land on one worker and take turns
    # on its GPU while the other GPU idles (what this test saw on a loaded machine): what holds
    # is that each campaign takes its own worker's GPU limit and a limit is never shared.
    workers = [start_worker(env, tmp_path, "gpu-multi", gpu) for gpu in ("0", "1")]
    logs = [log for _, log in workers]
    try:
        paths = [
            # Benchmark names no other test uses: a campaign resumes by run identity.
            campaign_yaml(
                tmp_path, name, f"  - {{name: {name}-mc, tasks: [demo_mc], limit: {n}}}\n"
            )
            for name, n in (("scale-a", 3), ("scale-b", 2))
        ]
        ids = submit_together(env, tmp_path, paths)
        runs = wait_finished(prefect_server, ids, logs)
    finally:
        for w, _ in workers:
            stop_process(w)
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [
        log.read_text()[-3000:] for log in logs
    ]
    on = check_gpu_turns(prefect_server, runs, gpus)
    # Each campaign took the limit of the GPU its worker was given (CUDA_VISIBLE_DEVICES), as its
    # campaign artifact records.
    for r in runs:
        [artifact] = api_post(
            prefect_server,
            "/artifacts/filter",
            {"artifacts": {"key": {"any_": [f"campaign-{r['name']}"]}}},
        )
        device = artifact["data"].split("CUDA_VISIBLE_DEVICES=", 1)[1].split()[0]
        assert r["name"] in on[gpu_limit(device)], (r["name"], device, on)
