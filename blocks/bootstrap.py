"""Create or update the lab's blocks from the environment; safe to run any number of times.

``evallab prefect bootstrap-blocks`` calls :func:`bootstrap_blocks`. It reads:

* ``EVALLAB_DATABASE_URL`` (or ``[database] url`` in evallab.toml) → ``ResultsDatabase``
  ``results``;
* ``HF_TOKEN`` → Prefect ``Secret`` ``hf-token``;
* the runtime registry under ``EVALLAB_RUNTIMES_DIR`` → ``RuntimeProfiles`` ``<this host>``.

Every block is saved with ``overwrite=True``: a second run updates values in place and creates
nothing new. Something missing from the environment is reported as skipped, never guessed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from prefect.blocks.system import Secret
from pydantic import SecretStr

from blocks.lab import (
    HF_TOKEN_BLOCK,
    RESULTS_DB_BLOCK,
    ResultsDatabase,
    RuntimeProfile,
    RuntimeProfiles,
    profile_block_name,
)
from evallab.errors import OrchestrationError
from evallab.runtimes.venvs import list_installed, runtimes_dir
from evallab.store.db import configured_dsn

__all__ = ["BlockChange", "bootstrap_blocks", "ensure_gpu_limit", "ensure_work_pool"]


@dataclass(frozen=True)
class BlockChange:
    """What bootstrap did with one block."""

    block: str
    action: Literal["saved", "skipped"]
    detail: str


def bootstrap_blocks(environ: Mapping[str, str] | None = None) -> list[BlockChange]:
    """Create or update the results-database, HF-token and runtime-profile blocks.

    Args:
        environ: Where to read settings (default ``os.environ``).

    Returns:
        One entry per block, saved or skipped (with why).
    """
    env = os.environ if environ is None else environ
    changes: list[BlockChange] = []

    dsn = env.get("EVALLAB_DATABASE_URL") or configured_dsn()
    db_name = f"{ResultsDatabase.get_block_type_slug()}/{RESULTS_DB_BLOCK}"
    if dsn:
        ResultsDatabase(dsn=SecretStr(dsn)).save(RESULTS_DB_BLOCK, overwrite=True)
        changes.append(BlockChange(db_name, "saved", "from EVALLAB_DATABASE_URL"))
    else:
        changes.append(
            BlockChange(
                db_name,
                "skipped",
                "EVALLAB_DATABASE_URL is not set; flows use the embedded database of each worker",
            )
        )

    token = env.get("HF_TOKEN")
    if token:
        Secret(value=SecretStr(token)).save(HF_TOKEN_BLOCK, overwrite=True)
        changes.append(BlockChange(f"secret/{HF_TOKEN_BLOCK}", "saved", "from HF_TOKEN"))
    else:
        changes.append(
            BlockChange(
                f"secret/{HF_TOKEN_BLOCK}", "skipped", "HF_TOKEN is not set (public models only)"
            )
        )

    host = env.get("EVALLAB_WORKER_HOST") or socket.gethostname()
    installed = [r for r in list_installed() if r.exists()]
    profiles = RuntimeProfiles(
        host=host,
        runtimes_dir=str(runtimes_dir()),
        profiles=[
            RuntimeProfile(
                kind=r.kind, package=r.package, version=r.version, venv=r.path, python=r.python
            )
            for r in installed
        ],
    )
    name = profile_block_name(host)
    profiles.save(name, overwrite=True)
    listed = ", ".join(f"{r.kind}=={r.version}" for r in installed) or "no runtime virtualenvs"
    changes.append(BlockChange(f"{RuntimeProfiles.get_block_type_slug()}/{name}", "saved", listed))
    return changes


def ensure_work_pool(name: str, concurrency_limit: int | None) -> Literal["created", "updated"]:
    """Create the process work pool ``name`` or update its concurrency limit (idempotent).

    A pool whose limit is 1 runs one flow run at a time: that is how one GPU is never shared.

    Raises:
        OrchestrationError: a pool of that name exists with another worker type.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    concurrency_limit=concurrency_limit,
                )
            )
            return "created"
        if pool.type != "process":
            raise OrchestrationError(
                f"work pool {name!r} exists with worker type {pool.type!r}, not 'process'",
                value=name,
                fix="delete it (`prefect work-pool delete NAME`) or choose another pool name",
            )
        client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))
        return "updated"


def ensure_gpu_limit(name: str) -> Literal["created", "exists", "updated"]:
    """Create the global concurrency limit ``name`` with one slot (a GPU), unless it exists.

    Campaign flows hold a slot of their GPU's limit only while they start a runtime, run its
    canary and evaluate: two campaigns never share a GPU, and their pin checks and downloads
    don't wait for one. Safe when two flows create it at once.
    """
    from httpx import HTTPStatusError
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            found = None
        if found is not None:
            if found.limit == 1 and found.active:
                return "exists"
            # A GPU holds one campaign: a limit someone raised (or disabled) would share it.
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True)
            )
            return "updated"
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1, active=True)
            )
        except (ObjectAlreadyExists, HTTPStatusError):
            client.read_global_concurrency_limit_by_name(name)  # another flow created it
            return "exists"
        return "created"
