"""A campaign flow run that crashes is run again once, resuming, by prefect.yaml's automation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.flows.helpers import PrefectServer, prefect_setup, stop_process
from tests.helpers import EVALLAB, campaign_yaml, fetch

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]

FINISHED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def runs_of(server: PrefectServer) -> list[dict[str, Any]]:
    reply = httpx.post(f"{server.url}/flow_runs/filter", json={}, timeout=10)
    reply.raise_for_status()
    return list(reply.json())


def flow_process(flow_run_id: str) -> int | None:
    """The pid of the process executing ``flow_run_id`` (the worker sets it in its env)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            return int(entry.name)
    return None


def wait_for(what: str, check: Any, timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} did not happen in {timeout:.0f} s; worker log:\n{log.read_text()[-3000:]}")


def test_a_crashed_campaign_is_resubmitted_once_and_resumes(
    prefect_server: PrefectServer, pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    env = {
        **prefect_server.env,
        "EVALLAB_DATABASE_URL": pg_dsn,
        "EVALLAB_HOME": str(lab_home),
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    prefect_setup(env, tmp_path, "--no-blocks")
    path = campaign_yaml(
        tmp_path,
        "crashy",
        """  - {name: crash-mc, tasks: [demo_mc], limit: 4}
  - {name: crash-gen, tasks: [demo_gen]}
""",
    )
    sql = (
        "SELECT r.benchmark, r.status FROM runs r JOIN campaigns c USING (campaign_id) "
        "WHERE c.name = 'crashy' ORDER BY 1"
    )
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu", "--name", "crash"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        sub = subprocess.run(
            [*EVALLAB, "submit", str(path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sub.returncode == 0, sub.stderr
        first = sub.stdout.strip().rsplit("(", 1)[1].rstrip(")")
        # Kill the flow's process once its first benchmark is stored (the worker sees a crash).
        wait_for("the first benchmark", lambda: fetch(pg_dsn, sql), 420, log_path)
        pid = wait_for("the flow process", lambda: flow_process(first), 30, log_path)
        os.kill(pid, signal.SIGKILL)

        def resubmitted() -> dict[str, Any] | None:
            found = [
                r
                for r in runs_of(prefect_server)
                if str(r["parameters"].get("resubmit_of", "")).endswith(first)
            ]
            return found[0] if found and found[0]["state_type"] in FINISHED else None

        again = wait_for("the resubmitted run", resubmitted, 600, log_path)
        assert again["state_type"] == "COMPLETED", log_path.read_text()[-3000:]
        assert again["name"] == "crashy-resubmitted"
        [crashed] = [r for r in runs_of(prefect_server) if r["id"] == first]
        assert crashed["state_type"] == "CRASHED"

        # Its campaign finished: each benchmark stored once; the killed campaign is 'crashed'.
        assert [tuple(r) for r in fetch(pg_dsn, sql)] == [
            ("crash-gen", "succeeded"),
            ("crash-mc", "succeeded"),
        ]
        states = fetch(
            pg_dsn,
            "SELECT status, status_reason FROM campaigns WHERE name = 'crashy' ORDER BY started_at",
        )
        assert [r["status"] for r in states] == ["crashed", "succeeded"]
        # The worker ran the flow's on-crashed hook for the killed process.
        assert states[0]["status_reason"].startswith("the flow run crashed: ")
        assert "SIGKILL" in states[0]["status_reason"]

        # At most once: a resubmission of the resubmitted run does nothing.
        guard = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefect",
                "deployment",
                "run",
                "campaign/campaign",
                "--param",
                f"resubmit_of=prefect.flow-run.{again['id']}",
                "--watch",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert guard.returncode == 0, guard.stdout + guard.stderr
        assert "Completed" in guard.stdout + guard.stderr
        assert len(fetch(pg_dsn, "SELECT 1 FROM campaigns WHERE name = 'crashy'")) == 2
    finally:
        stop_process(worker)
        log.close()
