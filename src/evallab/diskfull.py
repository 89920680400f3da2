"""Recognise a full disk behind whatever exception a library raised about it.

A full disk shows up as ``OSError(ENOSPC)`` from Python, but also as a ``shutil.Error`` listing
failed copies, SQLite's "database or disk is full", or an Arrow ``OSError`` whose errno is lost,
often wrapped in a ``HarnessError`` or another library's exception. The runner treats all of them
alike: a full disk fails every later run too, so the campaign stops with one clear message.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

__all__ = ["describe_space", "is_disk_full"]

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXTS = ("no space left on device", "disk is full", "disk quota exceeded")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or any(cur is s for s in seen):
            continue
        seen.append(cur)
        todo += [cur.__cause__, cur.__context__]
    return seen


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or anything in its cause/context chain, says the disk is full."""
    for cur in _chain(exc):
        if isinstance(cur, OSError) and cur.errno in _FULL_ERRNOS:
            return True
        if any(text in str(cur).lower() for text in _FULL_TEXTS):
            return True
    return False


def describe_space(path: Path) -> str:
    """``"12.3 MB free of 4.0 GB"`` for the filesystem holding ``path`` (or its nearest parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"
