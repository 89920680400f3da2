"""One host-wide lock helper: an exclusive ``flock`` on a lock file, held for a block."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["file_lock"]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold this host's exclusive lock on ``path`` (created, with its folder, if missing).

    Waits for the holder. The kernel drops the lock when its descriptor closes, so a holder
    that crashes never leaves it taken.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
