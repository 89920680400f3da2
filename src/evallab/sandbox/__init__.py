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

The package: :mod:`~evallab.sandbox.config` (limits, programs, results),
:mod:`~evallab.sandbox.prelude` (what runs inside the sandbox, and reading its report),
:mod:`~evallab.sandbox.runner` (:class:`Sandbox`) and :mod:`~evallab.sandbox.processes`
(stopping everything a slot's uid started).
"""

from evallab.sandbox.config import (
    DEFAULT_UID_BASE,
    ISOLATION_BWRAP,
    ISOLATION_NONE,
    UNSAFE_ENV,
    ExecResult,
    Program,
    SandboxConfig,
    Status,
    bwrap_path,
)
from evallab.sandbox.runner import Sandbox

__all__ = [
    "DEFAULT_UID_BASE",
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
