"""Run untrusted generated code: bubblewrap + an unprivileged uid + rlimits + wall-clock kill.

Every program runs in a fresh ``python3 -I`` inside its own bubblewrap sandbox:

* every namespace unshared (no network, no view of the host's processes, its own hostname),
* a read-only ``/usr`` and nothing else of the host's filesystem (no ``/etc``, no home, no
  ``/work``), a private size-capped ``/tmp`` as working directory, a minimal ``/dev`` and ``/proc``,
* an empty environment (the lab's DSN and tokens never reach it),
* launched through ``setpriv`` as an unprivileged uid that no other process on the host uses —
  one uid per worker slot — so ``RLIMIT_NPROC`` bounds a fork bomb to its own slot instead of
  starving the lab, other samples or the embedded database (which runs as ``nobody``),
* rlimits on address space, CPU time, file size, open files and process count, applied by a small
  prelude before the generated code is compiled,
* a wall-clock deadline after which the whole process group is killed; bubblewrap's pid namespace
  then takes every descendant (orphans included) down with it,
* output capped: a sample that writes more than ``max_output_bytes`` is killed.

The verdict travels on its own pipe, and a pass counts only when it carries a per-sample random
nonce, so generated code that calls ``exit(0)`` or ``os._exit(0)`` before the tests run fails.

Without bubblewrap the lab refuses to execute code unless the caller opts in to unsafe execution
(``allow_unsafe=True`` or ``EVALLAB_ALLOW_UNSAFE_CODE=1``); every result records the isolation used.
"""

from __future__ import annotations

import ast
import contextlib
import marshal
import os
import queue
import secrets
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evallab.errors import CodeExecutionError

__all__ = [
    "ISOLATION_BWRAP",
    "ISOLATION_NONE",
    "UNSAFE_ENV",
    "ExecResult",
    "Program",
    "Sandbox",
    "SandboxConfig",
    "Status",
    "bwrap_path",
]

#: Environment variable that allows running generated code without bubblewrap.
UNSAFE_ENV = "EVALLAB_ALLOW_UNSAFE_CODE"
ISOLATION_BWRAP = "bubblewrap"
ISOLATION_NONE = "none"

Status = Literal["passed", "failed", "timeout", "error"]

# The first uid of the range used for worker slots. 0x70000000-0x7FFFFFFF is left unused by the
# usual allocators (system users, login users, container subuid ranges); 65534 is avoided on
# purpose because the embedded PostgreSQL runs as nobody and would share its process count.
DEFAULT_UID_BASE = 0x70001000

_GIB = 1 << 30
_MIB = 1 << 20

# Runs inside the sandbox as ``python3 -I -S -c PRELUDE FD``. It reads a marshal payload (nonce,
# limits, program, tests) from stdin, applies the rlimits, runs the program then the tests in a
# fresh module, and reports on fd FD. It imports only builtin modules: json alone would add
# ~20 ms (it pulls in re) to every sample.
_PRELUDE = r"""
import marshal, os, resource, sys
def _lab_run(fd):
    p = marshal.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    for name, value in p["limits"]:
        resource.setrlimit(getattr(resource, name), (value, value))
    nonce = p.pop("nonce").encode()
    mod = type(sys)("__candidate__")
    sys.modules["__candidate__"] = mod
    phase = "program"
    sources = {"<program>": p["program"], "<tests>": p["tests"]}
    try:
        code = compile(p["program"], "<program>", "exec")
        tests = compile(p["tests"], "<tests>", "exec")
        del p
        exec(code, mod.__dict__)
        phase = "tests"
        exec(tests, mod.__dict__)
    except BaseException as exc:
        where, line = None, None
        tb = exc.__traceback__
        while tb is not None:
            fname = tb.tb_frame.f_code.co_filename
            if fname in sources:
                lines = sources[fname].splitlines()
                n = tb.tb_lineno
                where, line = fname, (lines[n - 1].strip() if 0 < n <= len(lines) else None)
            tb = tb.tb_next
        if isinstance(exc, SyntaxError) and exc.filename in sources:
            where, line = exc.filename, (exc.text or "").strip() or None
        try:
            msg = str(exc)
        except BaseException:
            msg = ""
        name = type(exc).__qualname__
        text = name + ": " + msg if msg else name
        status = "failed" if phase == "tests" else "error"
        os.write(fd, repr((status, where, line, text[-2000:])).encode())
        os._exit(1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os.write(fd, nonce + b" passed")
        os._exit(0)
_lab_run(int(sys.argv[1]))
"""


def bwrap_path() -> str | None:
    """Path of the ``bwrap`` executable, or None when bubblewrap is not installed."""
    return shutil.which("bwrap")


def _default_python() -> str:
    # The system interpreter lives under /usr, the only host folder the sandbox sees.
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise CodeExecutionError(
        "no python3 interpreter found to run generated code",
        value="/usr/bin/python3",
        fix="install python3 (apt-get install -y python3) or pass SandboxConfig(python=...)",
    )


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation settings for executing generated code.

    Attributes:
        timeout_s: Wall-clock seconds per program (CPU time is capped at this plus one second).
        memory_bytes: Address-space limit (``RLIMIT_AS``).
        file_size_bytes: Largest file the program may write (``RLIMIT_FSIZE``).
        tmp_size_bytes: Size of the private ``/tmp`` tmpfs.
        max_processes: Processes the program's uid may have (``RLIMIT_NPROC``); bubblewrap's own
            two processes count too.
        max_open_files: ``RLIMIT_NOFILE``.
        max_output_bytes: stdout+stderr bytes after which the program is killed.
        keep_output_bytes: How much of the output is kept in the result.
        workers: Programs run in parallel (default: twice the number of CPU cores).
        python: Interpreter run inside the sandbox (default ``/usr/bin/python3``).
        allow_unsafe: Run without bubblewrap when it is missing (rlimits only; records ``none``).
        uid_base: First host uid of the per-slot range the sandboxes run as (root only).
    """

    timeout_s: float = 3.0
    memory_bytes: int = 2 * _GIB
    file_size_bytes: int = 16 * _MIB
    tmp_size_bytes: int = 64 * _MIB
    max_processes: int = 32
    max_open_files: int = 256
    max_output_bytes: int = 1 * _MIB
    keep_output_bytes: int = 4096
    workers: int | None = None
    python: str | None = None
    allow_unsafe: bool = False
    uid_base: int = DEFAULT_UID_BASE


@dataclass(frozen=True)
class Program:
    """One program to execute: generated code followed by the tests that judge it.

    Attributes:
        program: The candidate code (prompt + completion, already post-processed).
        tests: Test code run after ``program`` in the same module namespace.
        timeout_s: Per-program wall-clock override (None: the sandbox's default).
    """

    program: str
    tests: str
    timeout_s: float | None = None


@dataclass(frozen=True)
class ExecResult:
    """What happened to one program.

    Attributes:
        status: ``passed``, ``failed`` (a test raised), ``timeout``, or ``error`` (the program
            itself raised, could not compile, exceeded a limit or exited before the tests ended).
        failing_test: The source line of the failing test (or program line for errors).
        error: The exception (``AssertionError: ...``) or why the sandbox stopped it.
        output: The first ``keep_output_bytes`` of stdout+stderr.
        exit_code: The sandbox's exit status (negative: killed by that signal).
        duration_s: Wall-clock seconds.
        isolation: ``bubblewrap`` or ``none``.
    """

    status: Status
    failing_test: str | None
    error: str | None
    output: str
    exit_code: int | None
    duration_s: float
    isolation: str

    @property
    def passed(self) -> bool:
        """Whether every test passed."""
        return self.status == "passed"


@dataclass
class _Slot:
    index: int
    uid: int | None


@dataclass
class _Capture:
    output: bytearray = field(default_factory=bytearray)
    total: int = 0
    verdict: bytearray = field(default_factory=bytearray)
    over_limit: bool = False


class Sandbox:
    """Executes programs in parallel, each in its own fresh sandbox.

    Args:
        config: Limits and isolation settings.

    Raises:
        CodeExecutionError: bubblewrap is missing and unsafe execution was not allowed, or no
            python3 interpreter exists.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.python = self.config.python or _default_python()
        self._bwrap = bwrap_path()
        if self._bwrap is None:
            if not (self.config.allow_unsafe or os.environ.get(UNSAFE_ENV) == "1"):
                raise CodeExecutionError(
                    "bubblewrap is not installed, so generated code can't be executed safely",
                    value="bwrap not found on PATH",
                    fix="install it (apt-get install -y bubblewrap), or accept running generated "
                    f"code unisolated with {UNSAFE_ENV}=1 (the run records isolation 'none')",
                )
            self.isolation = ISOLATION_NONE
        else:
            self.isolation = ISOLATION_BWRAP
        self._root = os.geteuid() == 0
        # Two per core: each program spends part of its short life blocked in namespace setup,
        # exec and teardown, so one per core leaves the CPUs idle (measured on 2 cores).
        self.workers = max(1, self.config.workers or 2 * (os.cpu_count() or 1))
        self._slots: queue.Queue[_Slot] = queue.Queue()
        for i in range(self.workers):
            uid = self.config.uid_base + i if self._root and self._bwrap else None
            self._slots.put(_Slot(i, uid))

    # ------------------------------------------------------------------------------ public API

    def describe(self) -> dict[str, object]:
        """Isolation and limits, for provenance."""
        cfg = self.config
        return {
            "isolation": self.isolation,
            "bwrap": self._bwrap,
            "python": self.python,
            "unprivileged_uid": self._root and self._bwrap is not None,
            "timeout_s": cfg.timeout_s,
            "memory_bytes": cfg.memory_bytes,
            "file_size_bytes": cfg.file_size_bytes,
            "tmp_size_bytes": cfg.tmp_size_bytes,
            "max_processes": cfg.max_processes,
            "max_output_bytes": cfg.max_output_bytes,
            "workers": self.workers,
        }

    def run(self, program: Program) -> ExecResult:
        """Execute one program in a fresh sandbox (blocks until it ends or is killed)."""
        slot = self._slots.get()
        try:
            return self._run_in_slot(program, slot)
        finally:
            self._slots.put(slot)

    def run_many(
        self,
        programs: Sequence[Program],
        on_result: Callable[[int, ExecResult], None] | None = None,
    ) -> list[ExecResult]:
        """Execute programs in parallel across ``workers`` slots.

        Args:
            programs: What to run.
            on_result: Called (from the calling thread) with each index and result as it ends,
                in completion order — used to persist results incrementally.

        Returns:
            Results in the order of ``programs``.
        """
        results: list[ExecResult | None] = [None] * len(programs)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sandbox") as pool:
            futures = {pool.submit(self.run, p): i for i, p in enumerate(programs)}
            for fut in as_completed(futures):
                i = futures[fut]
                res = fut.result()
                results[i] = res
                if on_result is not None:
                    on_result(i, res)
        return [r for r in results if r is not None]

    # ----------------------------------------------------------------------------- internals

    def _limits(self, timeout_s: float) -> list[tuple[str, int]]:
        cfg = self.config
        limits = [
            ("RLIMIT_AS", cfg.memory_bytes),
            ("RLIMIT_CPU", int(timeout_s) + 1),
            ("RLIMIT_FSIZE", cfg.file_size_bytes),
            ("RLIMIT_NOFILE", cfg.max_open_files),
            ("RLIMIT_CORE", 0),
        ]
        if self.isolation == ISOLATION_BWRAP:
            # Without a private uid RLIMIT_NPROC would count the caller's own processes.
            limits.append(("RLIMIT_NPROC", cfg.max_processes))
        return limits

    def _command(self, slot: _Slot, result_fd: int) -> list[str]:
        inner = [self.python, "-I", "-S", "-c", _PRELUDE, str(result_fd)]
        if self._bwrap is None:
            return inner
        cmd: list[str] = []
        if slot.uid is not None:
            cmd += [
                "setpriv",
                f"--reuid={slot.uid}",
                f"--regid={slot.uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ]
        cmd += [
            self._bwrap,
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
            "--uid", "65534",
            "--gid", "65534",
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for top in ("bin", "lib", "lib32", "lib64", "sbin", "libx32"):
            host = Path("/") / top
            if host.is_symlink():
                cmd += ["--symlink", os.readlink(host), f"/{top}"]
            elif host.is_dir():
                cmd += ["--ro-bind", str(host), f"/{top}"]
        prefix = Path(self.python).resolve().parents[1]
        if not str(prefix).startswith("/usr"):
            cmd += ["--ro-bind", str(prefix), str(prefix)]
        cmd += [
            "--dev", "/dev",
            "--proc", "/proc",
            "--size", str(self.config.tmp_size_bytes), "--tmpfs", "/tmp",
            "--chdir", "/tmp",
            "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "PYTHONHASHSEED", "0",
            "--",
        ]  # fmt: skip
        return cmd + inner

    def _run_in_slot(self, program: Program, slot: _Slot) -> ExecResult:
        timeout_s = program.timeout_s if program.timeout_s is not None else self.config.timeout_s
        nonce = secrets.token_hex(16)
        # marshal: trusted host -> sandbox data, loadable without importing anything.
        payload = marshal.dumps(
            {
                "nonce": nonce,
                "limits": self._limits(timeout_s),
                "program": program.program,
                "tests": program.tests,
            }
        )
        read_fd, write_fd = os.pipe()
        workdir = None
        env: dict[str, str] = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        if self._bwrap is None:
            import tempfile

            workdir = tempfile.mkdtemp(prefix="evallab-unsafe-")
            env["HOME"] = workdir
            env["TMPDIR"] = workdir
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                self._command(slot, write_fd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
                cwd=workdir or "/",
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            raise CodeExecutionError(
                f"could not start the sandbox: {exc}",
                value=self._bwrap or self.python,
                fix="check that bubblewrap and python3 are installed and executable",
            ) from exc
        os.close(write_fd)
        try:
            cap, timed_out = self._communicate(proc, payload, read_fd, start + timeout_s)
        finally:
            os.close(read_fd)
            self._kill(proc, slot)
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
        duration = time.monotonic() - start
        return self._verdict(proc.returncode, cap, timed_out, nonce, duration, timeout_s)

    def _communicate(
        self, proc: subprocess.Popen[bytes], payload: bytes, result_fd: int, deadline: float
    ) -> tuple[_Capture, bool]:
        cfg = self.config
        cap = _Capture()
        stdin = proc.stdin
        stdout = proc.stdout
        if stdin is None or stdout is None:  # pragma: no cover - Popen always sets them here
            raise CodeExecutionError("sandbox pipes missing", value=proc.args)
        # The payload is small next to the pipe buffer most of the time; a writer thread keeps a
        # large one from deadlocking against a program that fills stdout first.
        writer = threading.Thread(target=_feed, args=(stdin, payload), daemon=True)
        writer.start()
        sel = selectors.DefaultSelector()
        sel.register(stdout, selectors.EVENT_READ, "out")
        sel.register(result_fd, selectors.EVENT_READ, "verdict")
        open_streams = 2
        timed_out = False
        try:
            while open_streams:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(timeout=remaining):
                    fd = key.fd if key.data == "verdict" else stdout.fileno()
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                        continue
                    if key.data == "verdict":
                        if len(cap.verdict) < 65536:
                            cap.verdict += chunk
                        continue
                    cap.total += len(chunk)
                    room = cfg.keep_output_bytes - len(cap.output)
                    if room > 0:
                        cap.output += chunk[:room]
                    if cap.total > cfg.max_output_bytes:
                        cap.over_limit = True
                        open_streams = 0
                        break
            if not timed_out and not cap.over_limit:
                try:
                    proc.wait(timeout=max(0.05, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            sel.close()
            writer.join(timeout=1.0)
        return cap, timed_out

    def _kill(self, proc: subprocess.Popen[bytes], slot: _Slot) -> None:
        """Stop the sandbox and everything it started; return once its uid owns no process."""
        if proc.poll() is None and slot.uid is not None:
            # Kill the sandboxed processes first and let bubblewrap reap its child: killing
            # bubblewrap first would leave that child to the host's init to reap, and a zombie
            # still counts against the slot's RLIMIT_NPROC.
            _kill_uid(slot.uid, spare=proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        if slot.uid is not None:
            _wait_uid_gone(slot.uid, timeout_s=5.0)
        elif self._bwrap is None:
            # Unsafe mode: no pid namespace, so kill what is left of the process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _verdict(
        self,
        code: int | None,
        cap: _Capture,
        timed_out: bool,
        nonce: str,
        duration: float,
        timeout_s: float,
    ) -> ExecResult:
        output = cap.output.decode("utf-8", "replace")
        make = lambda status, line, error: ExecResult(  # noqa: E731
            status, line, error, output, code, round(duration, 4), self.isolation
        )
        raw = bytes(cap.verdict)
        if raw == f"{nonce} passed".encode():
            return make("passed", None, None)
        if cap.over_limit:
            return make("error", None, f"output exceeded {self.config.max_output_bytes} bytes")
        report = _parse_report(raw)
        if report is not None:
            status, line, error = report
            return make(status, line, error)
        if timed_out:
            return make("timeout", None, "wall-clock limit reached")
        sig = _signal_of(code, bwrap=self._bwrap is not None)
        if sig is not None:
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and duration >= timeout_s):
                return make("timeout", None, f"CPU time limit (signal {sig})")
            return make("error", None, f"killed by signal {sig}")
        return make("error", None, f"exited with code {code} before the tests finished")


def _parse_report(raw: bytes) -> tuple[Status, str | None, str | None] | None:
    """The prelude's failure report: ``repr((status, where, line, error))``.

    The bytes come from untrusted code, so they are parsed as a literal only (never unmarshalled)
    and anything that isn't the expected 4-tuple of strings is ignored.
    """
    if not raw:
        return None
    try:
        value = ast.literal_eval(raw.decode("utf-8", "replace"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not (isinstance(value, tuple) and len(value) == 4):
        return None
    status, _where, line, error = value
    if status not in ("failed", "error"):
        return None
    return (
        "failed" if status == "failed" else "error",
        line if isinstance(line, str) and line else None,
        error if isinstance(error, str) and error else None,
    )


def _signal_of(code: int | None, *, bwrap: bool) -> int | None:
    """The signal that ended the program, from its exit status (bwrap reports 128 + signal)."""
    if code is None:
        return None
    if code < 0:
        return -code
    if bwrap and 128 < code < 128 + 65:
        return code - 128
    return None


def _feed(stream: object, payload: bytes) -> None:
    try:
        stream.write(payload)  # type: ignore[attr-defined]
        stream.close()  # type: ignore[attr-defined]
    except (BrokenPipeError, ValueError, OSError):
        # The program died (or was killed) before reading its input; the verdict says why.
        return


def _uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                pids.append(int(entry.name))
        except FileNotFoundError:
            continue
    return pids


def _kill_uid(uid: int, spare: int | None = None) -> None:
    for pid in _uid_processes(uid):
        if pid == spare:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_uid_gone(uid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        pids = _uid_processes(uid)
        if not pids:
            return
        if time.monotonic() > deadline:
            # The uid is private to this slot, so everything it still owns is ours to kill.
            _kill_uid(uid)
            return
        time.sleep(0.01)
