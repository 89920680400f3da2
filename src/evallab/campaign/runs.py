"""What a campaign's driver and its planner hand the engine, and what the engine hands back.

Driver-facing types (:class:`DriverInfo`, :class:`Reporter`), a group's plan after looking at
what is stored (:class:`GroupPlan`), and the outcomes of runs that were skipped or read back
from their folders.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from evallab.campaign.leftovers import process_started_at
from evallab.campaign.plan import Group, PlannedRun, RunOutcome
from evallab.campaign.raw import MANIFEST, StoredRun
from evallab.paths import runs_dir

__all__ = [
    "DriverInfo",
    "GroupPlan",
    "Reporter",
    "SilentReporter",
    "skipped_outcome",
    "stored_outcome",
    "unstored_folders",
]


class Reporter(Protocol):
    """Progress callbacks: the CLI draws a progress bar, the flow logs."""

    def run_started(self, label: str, index: int, total: int) -> None: ...

    def run_finished(self, outcome: RunOutcome) -> None: ...

    def message(self, text: str) -> None: ...


class SilentReporter:
    """A reporter that reports nothing."""

    def run_started(self, label: str, index: int, total: int) -> None:
        return None

    def run_finished(self, outcome: RunOutcome) -> None:
        return None

    def message(self, text: str) -> None:
        return None


@dataclass(frozen=True)
class DriverInfo:
    """Who runs the campaign (recorded on its row, so a dead driver can be recognised)."""

    name: str
    campaign_id: uuid.UUID | None = None
    flow_run_id: str = ""
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    #: When the driver process started: tells it from a later process that reuses its pid.
    started_at: datetime | None = field(default_factory=lambda: process_started_at(os.getpid()))


@dataclass
class GroupPlan:
    """A group's runs: those a resume skips, those stored from disk, those to evaluate."""

    group: Group
    skipped: list[RunOutcome]
    recovered: list[Path]
    todo: list[PlannedRun]


def skipped_outcome(run: PlannedRun) -> RunOutcome:
    """The outcome of a run a resume skips: it already succeeded with the same pins."""
    return RunOutcome(
        uuid.UUID(int=0),
        run.group.model.name,
        run.group.runtime.display,
        run.bench.name,
        "succeeded",
        "already succeeded with the same pins",
        skipped=True,
        run_key=run.key,
    )


def stored_outcome(stored: StoredRun) -> RunOutcome:
    """The outcome of a run read back from its folder."""
    r = stored.record
    return RunOutcome(
        r.run_id,
        r.model_name,
        r.runtime_label,
        r.benchmark,
        r.status,
        r.status_reason,
        scores=stored.scores,
        raw_dir=stored.folder,
        duration_s=r.duration_s or 0.0,
        run_key=r.run_key,
    )


def unstored_folders(keys: list[str], stored_ids: set[uuid.UUID]) -> dict[str, Path]:
    """Finished run folders (succeeded or invalid) for ``keys`` that the database lacks."""
    wanted, found = set(keys), {}
    root = runs_dir()
    if not root.is_dir():
        return {}
    for manifest in root.glob(f"*/{MANIFEST}"):
        try:
            run = json.loads(manifest.read_text())["run"]
        except (OSError, ValueError, KeyError):
            continue
        key, status = run.get("run_key"), run.get("status")
        done = key in wanted and status in ("succeeded", "invalid")
        if done and uuid.UUID(run["run_id"]) not in stored_ids:
            found[key] = manifest.parent
    return found
