"""The sandbox itself: runs programs in parallel, one fresh bubblewrap sandbox each."""

from __future__ import annotations

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

from evallab.errors import CodeExecutionError
from evallab.sandbox.config import (
    ISOLATION_BWRAP,
    ISOLATION_NONE,
    UNSAFE_ENV,
    ExecResult,
    Program,
    SandboxConfig,
    bwrap_path,
    default_python,
)
from evallab.sandbox.prelude import PRELUDE, parse_report
from evallab.sandbox.processes import feed, kill_uid, signal_of, wait_uid_gone

__all__ = ["Sandbox"]


@dataclass
class Slot:
    index: int
    uid: int | None


@dataclass
class Capture:
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
        self.python = self.config.python or default_python()
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
        self._slots: queue.Queue[Slot] = queue.Queue()
        for i in range(self.workers):
            uid = self.config.uid_base + i if self._root and self._bwrap else None
            self._slots.put(Slot(i, uid))

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

    def _command(self, slot: Slot, result_fd: int) -> list[str]:
        inner = [self.python, "-I", "-S", "-c", PRELUDE, str(result_fd)]
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

    def _run_in_slot(self, program: Program, slot: Slot) -> ExecResult:
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
    ) -> tuple[Capture, bool]:
        cfg = self.config
        cap = Capture()
        stdin = proc.stdin
        stdout = proc.stdout
        if stdin is None or stdout is None:  # pragma: no cover - Popen always sets them here
            raise CodeExecutionError("sandbox pipes missing", value=proc.args)
        # The payload is small next to the pipe buffer most of the time; a writer thread keeps a
        # large one from deadlocking against a program that fills stdout first.
        writer = threading.Thread(target=feed, args=(stdin, payload), daemon=True)
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

    def _kill(self, proc: subprocess.Popen[bytes], slot: Slot) -> None:
        """Stop the sandbox and everything it started; return once its uid owns no process."""
        if proc.poll() is None and slot.uid is not None:
            # Kill the sandboxed processes first and let bubblewrap reap its child: killing
            # bubblewrap first would leave that child to the host's init to reap, and a zombie
            # still counts against the slot's RLIMIT_NPROC.
            kill_uid(slot.uid, spare=proc.pid)
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
            wait_uid_gone(slot.uid, timeout_s=5.0)
        elif self._bwrap is None:
            # Unsafe mode: no pid namespace, so kill what is left of the process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _verdict(
        self,
        code: int | None,
        cap: Capture,
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
        report = parse_report(raw)
        if report is not None:
            status, line, error = report
            return make(status, line, error)
        if timed_out:
            return make("timeout", None, "wall-clock limit reached")
        sig = signal_of(code, bwrap=self._bwrap is not None)
        if sig is not None:
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and duration >= timeout_s):
                return make("timeout", None, f"CPU time limit (signal {sig})")
            return make("error", None, f"killed by signal {sig}")
        return make("error", None, f"exited with code {code} before the tests finished")
