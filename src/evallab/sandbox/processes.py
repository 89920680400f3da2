"""Processes of a sandbox: exit statuses, feeding stdin, and killing everything a uid owns."""

from __future__ import annotations

import contextlib
import os
import signal
import time

__all__ = ["feed", "kill_uid", "signal_of", "uid_processes", "wait_uid_gone"]


def signal_of(code: int | None, *, bwrap: bool) -> int | None:
    """The signal that ended the program, from its exit status (bwrap reports 128 + signal)."""
    if code is None:
        return None
    if code < 0:
        return -code
    if bwrap and 128 < code < 128 + 65:
        return code - 128
    return None


def feed(stream: object, payload: bytes) -> None:
    try:
        stream.write(payload)  # type: ignore[attr-defined]
        stream.close()  # type: ignore[attr-defined]
    except (BrokenPipeError, ValueError, OSError):
        # The program died (or was killed) before reading its input; the verdict says why.
        return


def uid_processes(uid: int) -> list[int]:
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


def kill_uid(uid: int, spare: int | None = None) -> None:
    for pid in uid_processes(uid):
        if pid == spare:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_uid_gone(uid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        pids = uid_processes(uid)
        if not pids:
            return
        if time.monotonic() > deadline:
            # The uid is private to this slot, so everything it still owns is ours to kill.
            kill_uid(uid)
            return
        time.sleep(0.01)
