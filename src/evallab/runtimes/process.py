"""Launch model servers so that nothing outlives the lab, and stop them cleanly.

Every server runs under a tiny *supervisor* (this module run as ``python -m``):

* The supervisor starts in a new session, so it leads a fresh process group; the server and
  everything the server forks (vLLM's engine core, tokenizer workers...) join that group.
* The lab holds the write end of a pipe connected to the supervisor's stdin. When the lab exits
  for any reason — including SIGKILL — the kernel closes that pipe, the supervisor reads EOF and
  tears the group down (SIGTERM, a grace period, then SIGKILL). ``PR_SET_PDEATHSIG`` alone would
  not do: it fires when the *thread* that forked exits (a worker thread in an orchestrator) and it
  only reaches the direct child, not the server's own children.
* The supervisor is also a child subreaper, so a grandchild that double-forks out of the group is
  re-parented to it and still killed on teardown.
* When the server exits by itself (a crash), the supervisor kills what is left of the group and
  exits with the server's exit code.

The lab's side (:func:`launch`, :class:`ManagedProcess`) stops a server with SIGTERM to the whole
process group, waits, then SIGKILLs the group.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evallab.errors import PortInUseError, RuntimeLaunchError

__all__ = [
    "ManagedProcess",
    "check_port_free",
    "free_port",
    "group_pids",
    "launch",
    "log_tail",
    "pid_alive",
]

_PR_SET_CHILD_SUBREAPER = 36
#: Exit code the supervisor uses when it tore the group down because the lab went away.
_EXIT_ORPHANED = 143


# ------------------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise if ``host:port`` can't be bound (another process listens there).

    Raises:
        PortInUseError: the port is taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the servers (uvicorn) set it: connections of a server that just died
        # linger in TIME_WAIT and must not count as "in use", only a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUseError(
                    f"port {port} on {host} is already in use",
                    value=f"{host}:{port}",
                    fix="stop the process using it (`ss -ltnp | grep :PORT`), or set 'port: 0' "
                    "in the runtime to pick a free port",
                ) from exc
            raise


# ------------------------------------------------------------------------------------ helpers


def log_tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log file ('' if it doesn't exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether a process exists and isn't a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # Field 3 (after the parenthesised command name) is the state; Z = zombie, X = dead.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, pgid) of a live process, None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    out = []
    for pid in _all_pids():
        st = _proc_stat(pid)
        if st is not None and st[1] == pgid:
            out.append(pid)
    return sorted(out)


def _descendants(root: int) -> list[int]:
    """Live descendants of ``root`` (any process group)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _proc_stat(pid)
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    out: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ------------------------------------------------------------------------------- lab's side


@dataclass
class ManagedProcess:
    """A server running under a supervisor, in its own process group.

    Attributes:
        command: The server's exact command line.
        log_path: File receiving the server's stdout and stderr.
        supervisor: The supervisor process (its pid is the group id).
        grace_s: Seconds between SIGTERM and SIGKILL on stop.
    """

    command: tuple[str, ...]
    log_path: Path
    supervisor: subprocess.Popen[bytes]
    grace_s: float = 15.0
    _stopped: bool = field(default=False, repr=False)

    @property
    def pgid(self) -> int:
        """Process group of the server and everything it started."""
        return self.supervisor.pid

    @property
    def command_line(self) -> str:
        """The command as one shell-quoted string (recorded as provenance)."""
        return shlex.join(self.command)

    def alive(self) -> bool:
        """Whether the server is still running (its supervisor exits when it does)."""
        return self.supervisor.poll() is None

    def returncode(self) -> int | None:
        """The server's exit code once it has exited (None while running)."""
        return self.supervisor.poll()

    def pids(self) -> list[int]:
        """Every live process in the server's group (supervisor included)."""
        return group_pids(self.pgid)

    def tail(self, lines: int = 40) -> str:
        """Last lines of the server's log."""
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        """SIGTERM the whole group, wait ``grace_s``, then SIGKILL it. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        pgid = self.pgid
        # Closing stdin tells the supervisor to tear down too, should a signal be lost.
        if self.supervisor.stdin is not None:
            with contextlib.suppress(OSError):
                self.supervisor.stdin.close()
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            if self.supervisor.poll() is not None and not group_pids(pgid):
                break
            time.sleep(0.1)
        else:
            _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.supervisor.wait(timeout=5)
        # A member could survive the supervisor only if it ignored SIGTERM and the supervisor
        # was itself killed before its own SIGKILL sweep: finish the job.
        if group_pids(pgid):
            _signal_group(pgid, signal.SIGKILL)


def launch(
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    grace_s: float = 15.0,
) -> ManagedProcess:
    """Start ``command`` under a supervisor in a new process group.

    Args:
        command: The server command (argv, no shell).
        log_path: Where its stdout and stderr go (appended; a header line marks each launch).
        env: Full environment for the server (default: the lab's).
        cwd: Working directory for the server.
        grace_s: Seconds the supervisor and :meth:`ManagedProcess.stop` wait after SIGTERM.

    Raises:
        RuntimeLaunchError: the executable doesn't exist.
    """
    argv = tuple(str(a) for a in command)
    exe = Path(argv[0])
    if exe.is_absolute() and not exe.exists():
        raise RuntimeLaunchError(
            "server executable not found",
            value=exe,
            fix="install the runtime with `evallab runtime install KIND==VERSION`",
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== evallab launch {time.strftime('%Y-%m-%dT%H:%M:%S')}: ".encode())
        log.write(shlex.join(argv).encode() + b"\n")
    supervisor_cmd = [
        sys.executable,
        "-m",
        "evallab.runtimes.process",
        "--log",
        str(log_path),
        "--grace",
        str(grace_s),
        "--",
        *argv,
    ]
    proc = subprocess.Popen(
        supervisor_cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
        close_fds=True,
    )
    return ManagedProcess(command=argv, log_path=log_path, supervisor=proc, grace_s=grace_s)


# ------------------------------------------------------------------------- supervisor's side


def _set_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _teardown(grace_s: float) -> None:
    """SIGTERM the own group and strays, wait, then SIGKILL (the supervisor itself last)."""
    me = os.getpid()
    pgid = os.getpgid(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def others() -> list[int]:
        return [p for p in set(group_pids(pgid)) | set(_descendants(me)) if p != me]

    for pid in others():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and others():
        _reap()
        time.sleep(0.1)
    for pid in others():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _reap()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _supervise(argv: list[str]) -> int:
    log_path = Path(argv[argv.index("--log") + 1])
    grace_s = float(argv[argv.index("--grace") + 1])
    command = argv[argv.index("--") + 1 :]
    _set_subreaper()
    stop_requested = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with log_path.open("ab") as log:
        try:
            server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        except OSError as exc:
            log.write(f"=== evallab: could not start server: {exc}\n".encode())
            return 127
    stdin_fd = sys.stdin.fileno()
    code: int | None = None
    while not stop_requested:
        code = server.poll()
        if code is not None:
            break
        try:
            ready, _, _ = select.select([stdin_fd], [], [], 0.5)
        except InterruptedError:
            continue
        if ready and not os.read(stdin_fd, 4096):
            # EOF: the lab closed the pipe or died.
            stop_requested = True
    with log_path.open("ab") as log:
        if code is not None:
            log.write(f"=== evallab: server exited with code {code}\n".encode())
        else:
            log.write(b"=== evallab: stopping server (SIGTERM, then SIGKILL)\n")
    _teardown(grace_s)
    if code is None:
        code = server.poll()
    return _EXIT_ORPHANED if code is None else (code if code >= 0 else 128 - code)


if __name__ == "__main__":
    sys.exit(_supervise(sys.argv[1:]))
