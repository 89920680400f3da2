"""What the flow tests share: a real Prefect server's handle, ``evallab prefect setup``, stopping
a process group, and reading back the events a Prefect server recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import EVALLAB


@dataclass
class PrefectServer:
    """A real ``prefect server start`` for the test session."""

    url: str
    env: dict[str, str]
    home: Path
    log: Path


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM the process group, wait, then SIGKILL it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def prefect_setup(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run ``evallab prefect setup ARGS`` (it must succeed); returns its output."""
    proc = subprocess.run(
        [*EVALLAB, "prefect", "setup", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def released_events(api: str, repo: str, timeout: float = 60) -> list[dict[str, Any]]:
    """``hf.model.released`` events of ``repo`` in the Prefect API, once there is at least one.

    Fails the test if none arrives within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.post(
            f"{api}/events/filter",
            json={
                "filter": {
                    "event": {"name": ["hf.model.released"]},
                    "resource": {"id": [f"hf.model.{repo}"]},
                },
                "limit": 50,
            },
            timeout=10,
        )
        reply.raise_for_status()
        events = list(reply.json()["events"])
        if events:
            return events
        assert time.monotonic() < deadline, f"no hf.model.released event for {repo}"
        time.sleep(0.5)
