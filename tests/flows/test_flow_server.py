"""A real Prefect server and process worker: the GPU pool never runs two campaigns at once,
and a campaign whose flow process is SIGKILLed resumes without duplicates or orphans."""

from __future__ import annotations

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
from tests.flows.conftest import REPO, PrefectServer, campaign_yaml, stop_process
from tests.helpers import EVALLAB, fetch

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]


def lab_env(server: PrefectServer, pg_dsn: str, lab_home: Path) -> dict[str, str]:
    return {
        **server.env,
        "EVALLAB_DATABASE_URL": pg_dsn,
        "EVALLAB_HOME": str(lab_home),
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def flow_runs(server: PrefectServer, ids: list[str]) -> list[dict[str, Any]]:
    reply = httpx.post(
        f"{server.url}/flow_runs/filter", json={"flow_runs": {"id": {"any_": ids}}}, timeout=10
    )
    reply.raise_for_status()
    return list(reply.json())


def test_gpu_pool_runs_one_campaign_at_a_time(
    prefect_server: PrefectServer, pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    env = lab_env(prefect_server, pg_dsn, lab_home)
    setup = subprocess.run(
        [*EVALLAB, "prefect", "setup"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "concurrency limit 1" in setup.stdout
    pool = httpx.get(f"{prefect_server.url}/work_pools/gpu", timeout=10).json()
    assert (pool["type"], pool["concurrency_limit"]) == ("process", 1)
    # Setup is safe to repeat.
    again = subprocess.run(
        [*EVALLAB, "prefect", "setup", "--no-deploy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr

    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu", "--name", "gpu-0"],
        cwd=tmp_path,
        env={**env, "CUDA_VISIBLE_DEVICES": "0"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        ids = []
        # Different configs, different runs; benchmark names no other test uses, so no earlier
        # run in the session has the same pins (a campaign resumes by run identity).
        for name, limit in (("pool-a", 5), ("pool-b", 4)):
            bench = f"  - {{name: {name}-mc, tasks: [demo_mc], limit: {limit}}}\n"
            path = campaign_yaml(tmp_path, name, bench)
            sub = subprocess.run(
                [*EVALLAB, "submit", str(path)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert sub.returncode == 0, sub.stderr
            ids.append(sub.stdout.strip().rsplit("(", 1)[1].rstrip(")"))
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            runs = flow_runs(prefect_server, ids)
            if all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs):
                break
            time.sleep(2)
        else:
            pytest.fail(
                f"flow runs did not finish: {(tmp_path / 'worker.log').read_text()[-4000:]}"
            )
    finally:
        stop_process(worker)  # the worker goes before the server
        log.close()
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], (
        tmp_path / "worker.log"
    ).read_text()[-4000:]
    spans = sorted(
        (datetime.fromisoformat(r["start_time"]), datetime.fromisoformat(r["end_time"]))
        for r in runs
    )
    assert spans[0][1] <= spans[1][0], f"the two campaign runs overlapped: {spans}"
    rows = fetch(
        pg_dsn,
        "SELECT c.name, r.status FROM runs r JOIN campaigns c USING (campaign_id) "
        "WHERE c.name IN ('pool-a', 'pool-b') ORDER BY 1",
    )
    assert [(r["name"], r["status"]) for r in rows] == [
        ("pool-a", "succeeded"),
        ("pool-b", "succeeded"),
    ]
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
        runs = httpx.post(f"{server.url}/flow_runs/filter", json={}, timeout=10).json()
        released = [r for r in runs if r["parameters"].get("model_repo") == "acme-ai/tiny-chat"]
        if released:
            break
        time.sleep(1)
    else:
        pytest.fail("the hf.model.released trigger did not start a campaign")
    params = released[0]["parameters"]
    assert (params["campaign"], params["revision"]) == ("deployments/demo.yaml", sha)
    # No worker is running now: delete the scheduled run so nothing picks it up later.
    httpx.delete(f"{server.url}/flow_runs/{released[0]['id']}", timeout=10).raise_for_status()


def run_flow(path: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from flows.campaign import campaign\n"
        f"campaign(campaign={str(path)!r})\n"
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
    env = lab_env(prefect_server, pg_dsn, lab_home)
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
        deadline = time.monotonic() + 300
        while not fetch(pg_dsn, sql):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the first benchmark never finished"
            time.sleep(0.3)
        time.sleep(1.0)  # inside the slow benchmark now
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1.0)
    assert group_pids(proc.pid) == [], "processes of the killed flow survived it"
    assert [tuple(r) for r in fetch(pg_dsn, sql)] == [("quick", "succeeded")]

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


def test_one_worker_per_gpu_scales_out_on_one_pool(
    prefect_server: PrefectServer, pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    """Two GPUs: the pool's limit is 2, each worker takes one run at a time on its own GPU."""
    env = lab_env(prefect_server, pg_dsn, lab_home)
    setup = subprocess.run(
        [
            *EVALLAB,
            "prefect",
            "setup",
            "--pool",
            "gpu-multi",
            "--gpus",
            "2",
            "--no-deploy",
            "--no-blocks",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    deploy = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--name",
            "campaign",
            "--pool",
            "gpu-multi",
        ],
        cwd=REPO,
        env={**env, "EVALLAB_REPO": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    workers, logs = [], []
    for gpu in ("0", "1"):
        log = (tmp_path / f"worker-{gpu}.log").open("wb")
        logs.append(log)
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "worker",
                    "start",
                    "--pool",
                    "gpu-multi",
                    "--name",
                    f"gpu-{gpu}",
                    "--limit",
                    "1",
                ],
                cwd=tmp_path,
                env={**env, "CUDA_VISIBLE_DEVICES": gpu},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        ids = []
        for name, limit in (("scale-a", 3), ("scale-b", 2)):
            bench = f"  - {{name: mc, tasks: [demo_mc], limit: {limit}}}\n"
            path = campaign_yaml(tmp_path, name, bench)
            sub = subprocess.run(
                [*EVALLAB, "submit", str(path)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert sub.returncode == 0, sub.stderr
            ids.append(sub.stdout.strip().rsplit("(", 1)[1].rstrip(")"))
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            runs = flow_runs(prefect_server, ids)
            if all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs):
                break
            time.sleep(2)
        else:
            pytest.fail("flow runs did not finish")
    finally:
        for w in workers:
            stop_process(w)
        for log in logs:
            log.close()
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"]
    devices = set()
    for name in ("scale-a", "scale-b"):
        reply = httpx.post(
            f"{prefect_server.url}/artifacts/filter",
            json={"artifacts": {"key": {"any_": [f"campaign-{name}"]}}},
            timeout=10,
        )
        [artifact] = reply.json()
        devices.add(artifact["data"].split("CUDA_VISIBLE_DEVICES=", 1)[1].split()[0])
    assert devices == {"0", "1"}, "each campaign should have run on its own GPU's worker"
