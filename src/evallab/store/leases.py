"""Leases on a shared resource, held by live processes and dropped by the kernel when they die.

A lease is a file in a lease folder that its holder keeps open with an exclusive ``flock``. The
kernel releases a ``flock`` when the last descriptor of its open file is closed — including when
the holder is killed with SIGKILL — so a lease whose file can be locked by someone else belongs
to a dead process and no longer counts, whatever its pid has become since. ``flock`` locks
belong to open files, not processes, so two leases held by one process are told apart too.

A *permanent* lease is a plain file without a lock: it counts until it is removed on purpose.

Every change to the lease folder, and whatever the caller decides from it, happens under
:func:`exclusive_lock` on a lock file next to it, so a lease is never judged between being
created and being locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from evallab.errors import DatabaseError

__all__ = [
    "HeldLease",
    "LeaseInfo",
    "drop_permanent",
    "exclusive_lock",
    "live_leases",
    "take_lease",
]

_SUFFIX = ".lease"
_PERMANENT = "permanent.lease"
_POLL_S = 0.05


@dataclass(frozen=True)
class LeaseInfo:
    """One lease that still counts.

    Attributes:
        path: The lease file.
        pid: The holder's process id (as it was when the lease was taken).
        command: The holder's command line, for messages.
        permanent: Whether this is the permanent lease (held by no process).
    """

    path: Path
    pid: int
    command: str
    permanent: bool


@contextlib.contextmanager
def exclusive_lock(path: Path, *, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    The lock dies with its holder, so a crashed holder never blocks the next one; only a live
    holder that is stuck does, and then this gives up after ``timeout_s`` with a clear error
    rather than hanging the command.

    Raises:
        DatabaseError: the lock stayed taken for ``timeout_s``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise DatabaseError(
                    "another lab process has been starting or stopping the embedded "
                    f"PostgreSQL for over {timeout_s:.0f} s",
                    value=path,
                    fix="wait for it, or find it with `fuser -v <path>` and end it",
                )
            time.sleep(_POLL_S)
        yield
    finally:
        # Closing the only descriptor of this open file releases the lock.
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class HeldLease:
    """A lease this process holds; :meth:`drop` gives it up.

    Call :func:`take_lease` and :meth:`drop` under :func:`exclusive_lock`.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd
        # A child forked while the lease is held shares its open file; only the process that
        # took the lease may remove it, or the child's exit would end the parent's lease.
        self._owner_pid = os.getpid()

    def drop(self) -> None:
        """Remove the lease file and close it (idempotent)."""
        if self._owner_pid == os.getpid():
            self.path.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def take_lease(folder: Path, *, permanent: bool = False) -> HeldLease:
    """Register a lease in ``folder``: a locked file for this process, or the permanent one.

    Returns:
        The lease; a non-permanent one lasts until :meth:`HeldLease.drop` or this process's end.
    """
    folder.mkdir(parents=True, exist_ok=True)
    record = json.dumps(
        {
            "pid": os.getpid(),
            "command": " ".join(sys.argv),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    if permanent:
        path = folder / _PERMANENT
        path.write_text(record + "\n")
        return HeldLease(path, None)
    # The pid makes the folder readable to a person; the random part keeps two leases of one
    # process (nested or threaded callers) apart.
    path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}{_SUFFIX}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, (record + "\n").encode())
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return HeldLease(path, fd)


def drop_permanent(folder: Path) -> bool:
    """Remove the permanent lease in ``folder``; return whether there was one."""
    path = folder / _PERMANENT
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def live_leases(folder: Path, *, ignore: HeldLease | None = None) -> list[LeaseInfo]:
    """The leases in ``folder`` that still count, deleting those whose holder has died.

    Args:
        folder: The lease folder.
        ignore: A lease of the caller's that must not count (it is about to be dropped).
    """
    if not folder.is_dir():
        return []
    found: list[LeaseInfo] = []
    for path in sorted(folder.glob(f"*{_SUFFIX}")):
        if ignore is not None and path == ignore.path:
            continue
        if path.name == _PERMANENT:
            found.append(_info(path, permanent=True))
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            if _try_lock(fd):
                # Nobody holds it: its holder ended without dropping it (killed, or crashed).
                path.unlink(missing_ok=True)
                continue
            found.append(_info(path, permanent=False))
        finally:
            os.close(fd)
    return found


def _info(path: Path, *, permanent: bool) -> LeaseInfo:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    pid = data.get("pid")
    if not isinstance(pid, int):
        head = path.name.split("-", 1)[0]
        pid = int(head) if head.isdigit() else 0
    return LeaseInfo(path, pid, str(data.get("command", "")), permanent)
