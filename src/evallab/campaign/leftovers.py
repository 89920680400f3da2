"""What a killed campaign leaves behind: its ``running`` row and its unfinished run folders.

A driver killed with SIGKILL (or a machine that lost power) can't close its campaign row or
remove the folder of the run it was evaluating. Each campaign records its driver's host, pid and
process start time; each evaluation writes ``attempt.json`` (the same three) into its run folder
first. :func:`sweep_leftovers` — run when a campaign opens and by ``evallab db status`` — finds
drivers that are gone on this host (no such pid, or the pid now belongs to a process started at
another time) and:

* marks their ``running`` campaigns ``crashed``, with the reason;
* moves their unfinished run folders (no ``run.json``) aside to ``runs/_interrupted/``, where
  the next attempt at the same run takes its folder back (the harness caches in it, such as
  finished lm-eval requests and code generations, save work on ``--resume``). Finished folders
  stay, so ``--resume`` stores them without evaluating again.

Campaigns and folders of other hosts are left alone: their processes can't be seen from here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from evallab.campaign.manifest import MANIFEST
from evallab.paths import runs_dir
from evallab.store import Store

__all__ = [
    "ATTEMPT",
    "INTERRUPTED_DIR",
    "ProcessId",
    "adopt_interrupted",
    "process_started_at",
    "sweep_leftovers",
    "write_attempt",
]

ATTEMPT = "attempt.json"
INTERRUPTED_DIR = "_interrupted"
# Start times come from the kernel in clock ticks; two readings of one process agree far closer.
_SAME_START_S = 0.5


def process_started_at(pid: int) -> datetime | None:
    """When process ``pid`` started (None if there is no such process)."""
    try:
        return datetime.fromtimestamp(psutil.Process(pid).create_time(), UTC)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


@dataclass(frozen=True)
class ProcessId:
    """A process, told apart from a later one that reuses its pid."""

    host: str
    pid: int
    started_at: datetime | None

    @classmethod
    def current(cls) -> ProcessId:
        """This process."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_started_at(pid))

    def gone(self) -> str | None:
        """Why this process is known to be gone, or None (alive, or on another host).

        On this host: no process with the pid, a zombie, or one that started at another time
        (the pid was reused). Another host's processes can't be seen, so they never count as gone.
        """
        if self.host != socket.gethostname():
            return None
        try:
            proc = psutil.Process(self.pid)
            started = datetime.fromtimestamp(proc.create_time(), UTC)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return f"pid {self.pid} on {self.host} has exited"
        except psutil.NoSuchProcess:
            return f"pid {self.pid} on {self.host} no longer exists"
        except psutil.AccessDenied:
            return None
        if self.started_at is None:
            return None  # recorded by an older lab: the pid alone can't tell
        if abs((started - self.started_at).total_seconds()) > _SAME_START_S:
            return (
                f"pid {self.pid} on {self.host} now belongs to another process (started "
                f"{started:%Y-%m-%d %H:%M:%S}, the driver started "
                f"{self.started_at:%Y-%m-%d %H:%M:%S})"
            )
        return None

    def as_json(self) -> dict[str, object]:
        """For ``attempt.json``."""
        started = self.started_at.isoformat() if self.started_at else None
        return {"host": self.host, "pid": self.pid, "started_at": started}


def write_attempt(out_dir: Path, campaign_id: object, run_id: object) -> None:
    """Record which process is evaluating into ``out_dir`` (before anything else is written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    body = {"campaign_id": str(campaign_id), "run_id": str(run_id), **ProcessId.current().as_json()}
    (out_dir / ATTEMPT).write_text(json.dumps(body, indent=1))


def adopt_interrupted(out_dir: Path) -> bool:
    """Take back a run's folder moved aside after its driver was killed; True if there was one."""
    aside = out_dir.parent / INTERRUPTED_DIR / out_dir.name
    if out_dir.exists() or not aside.is_dir():
        return False
    aside.rename(out_dir)
    return True


def _attempt_process(folder: Path) -> tuple[ProcessId, str] | None:
    try:
        body = json.loads((folder / ATTEMPT).read_text())
        started = body.get("started_at")
        proc = ProcessId(
            str(body["host"]),
            int(body["pid"]),
            datetime.fromisoformat(started) if started else None,
        )
        return proc, str(body.get("campaign_id", ""))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _move_partial_folders() -> list[str]:
    root = runs_dir()
    if not root.is_dir():
        return []
    notes = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith("_") or not folder.is_dir() or (folder / MANIFEST).exists():
            continue
        found = _attempt_process(folder)
        if found is None:
            continue  # written by an older lab, or not a run folder: can't tell whose it is
        proc, campaign_id = found
        why = proc.gone()
        if why is None:
            continue
        aside = root / INTERRUPTED_DIR / folder.name
        shutil.rmtree(aside, ignore_errors=True)
        aside.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(aside)
        notes.append(
            f"run {folder.name} of campaign {campaign_id} never finished (its driver: {why}); "
            f"its partial folder was moved to {aside} (the next attempt at the run reuses it; "
            "delete it to start that run afresh)"
        )
    return notes


def sweep_leftovers(store: Store) -> list[str]:
    """Close the rows and move aside the unfinished folders of drivers gone on this host.

    The store must be migrated. Returns one note per campaign closed and per folder moved.
    """
    notes = []
    for row in store.running_campaigns(socket.gethostname()):
        why = ProcessId(row.driver_host, row.driver_pid, row.driver_started_at).gone()
        if why is None:
            continue
        reason = (
            f"its driver ({row.driver or 'unknown'}, pid {row.driver_pid} on {row.driver_host}) "
            f"ended without closing it (killed: {why}); finished runs are stored, the run it was "
            "evaluating was not"
        )
        if store.mark_campaign_crashed(row.campaign_id, reason):
            notes.append(f"campaign {row.name} ({row.campaign_id}) marked crashed: {reason}")
    return notes + _move_partial_folders()
