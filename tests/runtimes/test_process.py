"""Process-group launch and stop: nothing outlives the lab, even when the lab is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evallab.errors import PortInUseError, RuntimeLaunchError
from evallab.runtimes.process import check_port_free, free_port, launch, log_tail, pid_alive

# A "server" that forks a child (same group), a child that ignores SIGTERM, and a grandchild that
# escapes into its own session (double fork + setsid), then reports every pid and sleeps.
TREE = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    out = sys.argv[1]
    a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    b = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    c = subprocess.Popen([sys.executable, "-c",
        "import os, subprocess, sys, time; os.setsid(); "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(600)", out + ".escaped"])
    while not os.path.exists(out + ".escaped") or not open(out + ".escaped").read():
        time.sleep(0.05)
    pids = [os.getpid(), a.pid, b.pid, c.pid, int(open(out + ".escaped").read())]
    open(out, "w").write(json.dumps(pids))
    print("tree up", flush=True)
    time.sleep(600)
    """
)


def _wait_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _wait_dead(pids: list[int], timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


@pytest.fixture
def tree_script(tmp_path: Path) -> Path:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    return script


def test_stop_kills_whole_group_including_sigterm_ignorers(
    tmp_path: Path, tree_script: Path
) -> None:
    pids_file = tmp_path / "pids.json"
    proc = launch(
        [sys.executable, str(tree_script), str(pids_file)], log_path=tmp_path / "s.log", grace_s=1.0
    )
    pids = json.loads(_wait_file(pids_file))
    assert all(pid_alive(p) for p in pids)
    assert proc.alive()
    proc.stop()
    assert _wait_dead(pids, 10) == []
    assert not proc.alive()
    assert proc.pids() == []
    assert "tree up" in proc.tail()
    assert "stopping server" in log_tail(tmp_path / "s.log")
    proc.stop()  # idempotent


def test_no_orphans_when_the_lab_is_sigkilled(tmp_path: Path, tree_script: Path) -> None:
    pids_file = tmp_path / "pids.json"
    lab_code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from evallab.runtimes.process import launch
        launch([sys.executable, {str(tree_script)!r}, {str(pids_file)!r}],
               log_path=Path({str(tmp_path / "lab.log")!r}), grace_s=1.0)
        time.sleep(600)
        """
    )
    lab = subprocess.Popen([sys.executable, "-c", lab_code])
    try:
        pids = json.loads(_wait_file(pids_file))
        assert all(pid_alive(p) for p in pids)
        os.kill(lab.pid, signal.SIGKILL)
        lab.wait(timeout=10)
        assert _wait_dead(pids, 15) == [], "server processes outlived a SIGKILLed lab"
    finally:
        if lab.poll() is None:
            lab.kill()
    assert "stopping server" in log_tail(tmp_path / "lab.log")


def test_server_crash_is_seen_and_its_leftovers_are_killed(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(tmp_path / 'child')!r}, 'w').write(str(c.pid))\n"
        "print('boom', flush=True); time.sleep(0.5); sys.exit(3)\n"
    )
    proc = launch([sys.executable, str(script)], log_path=tmp_path / "c.log", grace_s=1.0)
    child = int(_wait_file(tmp_path / "child"))
    deadline = time.monotonic() + 20
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.returncode() == 3
    assert _wait_dead([child], 10) == []
    tail = proc.tail()
    assert "boom" in tail
    assert "server exited with code 3" in tail
    proc.stop()


def test_missing_executable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeLaunchError, match="executable not found") as err:
        launch(["/nonexistent/venv/bin/python", "-V"], log_path=tmp_path / "x.log")
    assert "evallab runtime install" in err.value.message


def test_port_checks() -> None:
    port = free_port()
    check_port_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        with pytest.raises(PortInUseError, match=f"port {port}") as err:
            check_port_free("127.0.0.1", port)
        assert "port: 0" in err.value.message


def test_log_tail_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "nope.log") == ""
    log = tmp_path / "l.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)))
    assert log_tail(log, 3).splitlines() == ["line 97", "line 98", "line 99"]
