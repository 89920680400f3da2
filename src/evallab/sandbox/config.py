"""Sandbox settings and results: limits, the program to run, what happened to it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Literal

from evallab.errors import CodeExecutionError

__all__ = [
    "DEFAULT_UID_BASE",
    "ISOLATION_BWRAP",
    "ISOLATION_NONE",
    "UNSAFE_ENV",
    "ExecResult",
    "Program",
    "SandboxConfig",
    "Status",
    "bwrap_path",
    "default_python",
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

GIB = 1 << 30
MIB = 1 << 20


def bwrap_path() -> str | None:
    """Path of the ``bwrap`` executable, or None when bubblewrap is not installed."""
    return shutil.which("bwrap")


def default_python() -> str:
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
    memory_bytes: int = 2 * GIB
    file_size_bytes: int = 16 * MIB
    tmp_size_bytes: int = 64 * MIB
    max_processes: int = 32
    max_open_files: int = 256
    max_output_bytes: int = 1 * MIB
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
