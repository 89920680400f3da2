"""A SIGKILLed lab leaves no vLLM process behind (real server, real engine processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evallab.runtimes.process import pid_alive

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_sigkilled_lab_leaves_no_vllm_processes(  # type: ignore[no-untyped-def]
    vllm_spec, tiny_artifact, tmp_path: Path
) -> None:
    out = tmp_path / "pids.json"
    lab_code = textwrap.dedent(
        f"""
        import json, pickle, sys, time
        from pathlib import Path
        from evallab.runtimes.vllm import VLLMRuntime
        spec, model = pickle.loads(bytes.fromhex(sys.argv[1]))
        session = VLLMRuntime().start(spec, model, Path({str(tmp_path)!r}))
        Path({str(out)!r}).write_text(json.dumps(session.process.pids()))
        time.sleep(600)
        """
    )
    import pickle

    payload = pickle.dumps((vllm_spec, tiny_artifact)).hex()
    lab = subprocess.Popen([sys.executable, "-c", lab_code, payload], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 300
        while not out.exists() and time.monotonic() < deadline and lab.poll() is None:
            time.sleep(0.5)
        assert out.exists(), "the lab never reported a healthy server"
        pids = json.loads(out.read_text())
        assert len(pids) >= 3 and all(pid_alive(p) for p in pids)
        os.kill(lab.pid, signal.SIGKILL)
        lab.wait(timeout=10)
        deadline = time.monotonic() + 60
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p for p in pids if pid_alive(p)] == []
    finally:
        if lab.poll() is None:
            lab.kill()
