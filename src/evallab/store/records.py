"""Typed rows for the ``campaigns`` and ``runs`` tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = ["CampaignRecord", "RunRecord"]


@dataclass
class CampaignRecord:
    """One row of ``campaigns``."""

    campaign_id: uuid.UUID
    name: str
    spec: dict[str, Any]
    spec_sha256: str
    spec_path: str
    lab_version: str
    lab_commit: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"
    driver: str = ""
    driver_host: str = ""
    driver_pid: int | None = None
    flow_run_id: str = ""
    status_reason: str = ""
    driver_started_at: datetime | None = None
    """When the driver process started: with host and pid, tells it from a later one reusing
    the pid."""


@dataclass
class RunRecord:
    """One row of ``runs``: a (model, quant, runtime, benchmark) execution and its provenance."""

    run_id: uuid.UUID
    campaign_id: uuid.UUID
    run_key: str
    benchmark: str
    model_name: str
    model_source: str
    model_id: str
    model_revision: str
    model_sha256: str
    quant: str
    runtime: str
    runtime_label: str
    runtime_version: str
    harness: str
    harness_version: str
    tasks: list[str]
    seed: int
    generation_config: dict[str, Any]
    lab_version: str
    lab_commit: str
    env_fingerprint: str
    python_version: str
    hostname: str
    status: str
    started_at: datetime
    pinned: bool = True
    weights_sha256: str = ""
    runtime_commit: str = ""
    runtime_command: str = ""
    harness_commit: str = ""
    tasks_commit: str = ""
    tasks_sha256: str = ""
    dataset_revisions: dict[str, Any] = field(default_factory=dict)
    task_hashes: dict[str, Any] = field(default_factory=dict)
    num_fewshot: int | None = None
    sample_limit: int | None = None
    torch_version: str = ""
    gpu_name: str = ""
    gpu_driver: str = ""
    cuda_version: str = ""
    status_reason: str = ""
    tags: list[str] = field(default_factory=list)
    model_provenance: dict[str, Any] = field(default_factory=dict)
    runtime_extra: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None
    duration_s: float | None = None
    n_samples: int = 0
    samples_per_min: float | None = None
    raw_path: str = ""
    raw_sha256: str = ""
    results_path: str = ""
    results_sha256: str = ""
    content_sha256: str = ""
    """The identity of the run folder's content (its run.json seal); equal means same run."""

    @classmethod
    def columns(cls) -> list[str]:
        """Column names, in declaration order."""
        return [f.name for f in fields(cls)]

    def values(self) -> list[Any]:
        """Values in :meth:`columns` order."""
        return [getattr(self, c) for c in self.columns()]
