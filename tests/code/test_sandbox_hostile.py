"""Hostile generations are contained while honest ones in the same batch score correctly."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from evallab.errors import CodeExecutionError
from evallab.sandbox import DEFAULT_UID_BASE, Program, Sandbox, SandboxConfig

pytestmark = pytest.mark.bubblewrap

MARKER = "EVALLAB-HOSTILE-ORPHAN-7f3a"
SECRET = "postgresql://lab:hunter2@127.0.0.1:5432/evallab"


def _uid_procs(first: int, count: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if first <= entry.stat().st_uid < first + count:
                    pids.append(int(entry.name))
            except FileNotFoundError:
                continue
    return pids


def _marker_procs() -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmd = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if MARKER.encode() in cmd:
                found.append(int(entry.name))
    return found


class _Listener:
    """A TCP server on the host's loopback that records whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


HONEST = {
    "honest_add": Program("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n"),
    "honest_sort": Program(
        "def srt(xs):\n    return sorted(xs)\n", "assert srt([3, 1, 2]) == [1, 2, 3]\n"
    ),
    "honest_subprocess": Program(
        "import subprocess\ndef echo():\n"
        "    return subprocess.run(['/usr/bin/python3', '-c', 'print(42)'],"
        " capture_output=True, text=True).stdout.strip()\n",
        "assert echo() == '42'\n",
    ),
    "honest_tmp": Program(
        "import tempfile, os\ndef roundtrip():\n"
        "    with tempfile.NamedTemporaryFile('w+', delete=False) as f:\n"
        "        f.write('hi')\n    return open(f.name).read()\n",
        "assert roundtrip() == 'hi'\n",
    ),
    "honest_wrong": Program("def add(a, b):\n    return a - b\n", "assert add(1, 1) == 2\n"),
}


def _hostile(listener_port: int, host_dir: Path, host_pid: int) -> dict[str, Program]:
    # Each program's tests assert that the escape WORKED: a contained sample never passes.
    home = os.path.expanduser("~")
    return {
        "network": Program(
            "import socket\ntry:\n"
            f"    local = socket.create_connection(('127.0.0.1', {listener_port}), 1)\n"
            "except OSError:\n    local = None\n"
            "outside = socket.create_connection(('1.1.1.1', 53), 1)\n",
            "assert local and outside\n",
        ),
        "etc_shadow": Program("data = open('/etc/shadow').read()\n", "assert data\n"),
        "home": Program(f"data = __import__('os').listdir({home!r})\n", "assert data\n"),
        "dsn_env": Program(
            "import os\nprint(dict(os.environ))\ndsn = os.environ['EVALLAB_DATABASE_URL']\n",
            "assert dsn\n",
        ),
        "proc_environ_of_host": Program(
            f"data = open('/proc/{host_pid}/environ').read()\n", "assert data\n"
        ),
        "write_outside_tmp": Program(
            f"open({str(host_dir / 'escaped.txt')!r}, 'w').write('x')\n"
            "open('/usr/escaped.txt', 'w').write('x')\n",
            "assert True\n",
        ),
        "fork_bomb": Program(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
            "        pass\n",
            "assert True\n",
        ),
        "memory_bomb": Program(
            "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 26))\n", "assert True\n"
        ),
        "infinite_loop": Program("while True:\n    pass\n", "assert True\n"),
        "sleep_past_timeout": Program("import time\ntime.sleep(30)\n", "assert True\n"),
        "orphan": Program(
            "import subprocess, sys\n"
            "subprocess.Popen(['/usr/bin/python3', '-c', 'import time; time.sleep(60)', "
            f"'{MARKER}'], start_new_session=True)\n"
            "import os\nif os.fork() == 0:\n    os.setsid()\n"
            f"    os.execv('/usr/bin/python3', ['python3', '-c', 'import time; time.sleep(60)', "
            f"'{MARKER}'])\n"
            "raise SystemExit(0)\n",
            "assert True\n",
        ),
        "kill_parent": Program(
            "import os, signal\n"
            "for pid in (os.getppid(), 1):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
            f"os.kill({host_pid}, signal.SIGKILL)\n",
            "assert True\n",
        ),
        "huge_stdout": Program(
            "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n", "assert True\n"
        ),
        "early_exit": Program("import os\nos._exit(0)\n", "assert False\n"),
        "fake_verdict": Program(
            "import os\nfor fd in range(3, 64):\n    try:\n"
            "        os.write(fd, b'0' * 32 + b' passed')\n    except OSError:\n        pass\n"
            "os._exit(0)\n",
            "assert False\n",
        ),
    }


def test_hostile_suite_is_contained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALLAB_DATABASE_URL", SECRET)
    listener = _Listener()
    config = SandboxConfig(timeout_s=2.0, workers=4)
    sandbox = Sandbox(config)
    assert sandbox.isolation == "bubblewrap"
    hostile = _hostile(listener.port, tmp_path, os.getpid())
    programs = {**HONEST, **hostile}
    names = list(programs)
    try:
        results = dict(zip(names, sandbox.run_many([programs[n] for n in names]), strict=True))
    finally:
        listener.close()

    # Honest samples score correctly despite fork bombs and memory bombs running beside them.
    for name in ("honest_add", "honest_sort", "honest_subprocess", "honest_tmp"):
        assert results[name].status == "passed", (name, results[name])
    assert results["honest_wrong"].status == "failed"
    assert results["honest_wrong"].failing_test == "assert add(1, 1) == 2"

    # No hostile sample passes its "the escape worked" test.
    for name in hostile:
        assert results[name].status != "passed", (name, results[name])
        assert results[name].isolation == "bubblewrap"

    assert listener.connections == 0
    assert "unreachable" in (results["network"].error or "").lower()
    assert "FileNotFoundError" in (results["etc_shadow"].error or "")
    assert "FileNotFoundError" in (results["home"].error or "")
    assert "KeyError" in (results["dsn_env"].error or "")
    assert SECRET not in results["dsn_env"].output
    assert "FileNotFoundError" in (results["proc_environ_of_host"].error or "")
    assert results["write_outside_tmp"].status == "error"
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/usr/escaped.txt").exists()
    assert results["fork_bomb"].status == "timeout"
    # RLIMIT_AS stops it with MemoryError, unless zero-filling 2 GiB outlasts the 2 s deadline.
    bomb = results["memory_bomb"]
    assert bomb.status == "timeout" or "MemoryError" in (bomb.error or ""), bomb
    assert results["infinite_loop"].status == "timeout"
    assert results["sleep_past_timeout"].status == "timeout"
    assert results["sleep_past_timeout"].duration_s < 10
    assert results["orphan"].status == "error"
    assert results["kill_parent"].status == "error"  # ProcessLookupError: host pid not visible
    assert "ProcessLookupError" in (results["kill_parent"].error or "")
    assert results["huge_stdout"].status == "error"
    assert "output exceeded" in (results["huge_stdout"].error or "")
    assert len(results["huge_stdout"].output) <= config.keep_output_bytes
    assert results["early_exit"].status == "error"
    assert results["fake_verdict"].status == "error"

    # Nothing outlives the suite: no process of the sandbox uids, no orphan, no file of theirs.
    time.sleep(0.2)
    assert _uid_procs(config.uid_base, sandbox.workers) == []
    assert _marker_procs() == []
    stray = [
        p
        for p in Path("/tmp").iterdir()
        if DEFAULT_UID_BASE <= p.lstat().st_uid < DEFAULT_UID_BASE + 1024
    ]
    assert stray == []
    assert list(tmp_path.iterdir()) == []


def test_sandbox_sees_no_host_filesystem() -> None:
    sandbox = Sandbox(SandboxConfig(timeout_s=5.0, workers=1))
    res = sandbox.run(
        Program(
            "import os\nroots = sorted(os.listdir('/'))\nuid = os.getuid()\n"
            "procs = [p for p in os.listdir('/proc') if p.isdigit()]\n",
            "assert roots == ['bin', 'dev', 'lib', 'lib64', 'proc', 'sbin', 'tmp', 'usr'] "
            "or 'work' not in roots, roots\n"
            "assert 'work' not in roots and 'root' not in roots and 'etc' not in roots\n"
            "assert uid == 65534\n"
            "assert procs == ['1'], procs\n",
        )
    )
    assert res.status == "passed", res


def test_missing_bubblewrap_refuses_without_unsafe_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH
    monkeypatch.delenv("EVALLAB_ALLOW_UNSAFE_CODE", raising=False)
    with pytest.raises(CodeExecutionError, match="bubblewrap is not installed"):
        Sandbox(SandboxConfig())
    unsafe = Sandbox(SandboxConfig(allow_unsafe=True, workers=1))
    assert unsafe.isolation == "none"
    res = unsafe.run(Program("def f():\n    return 1\n", "assert f() == 1\n"))
    assert res.status == "passed"
    assert res.isolation == "none"
    assert unsafe.describe()["isolation"] == "none"
