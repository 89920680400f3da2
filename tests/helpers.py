"""Helpers shared by the test suites: run the CLI as a user does, read rows back, write campaign
files and run rows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from evallab.store.records import RunRecord

REPO = Path(__file__).resolve().parents[1]
EVALLAB = [sys.executable, "-m", "evallab.cli"]


def evallab(
    args: Sequence[str],
    *,
    dsn: str | None = None,
    cwd: Path = REPO,
    env: Mapping[str, str] | None = None,
    timeout: int = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``evallab ARGS`` in a subprocess, as a user would, and capture its output.

    Args:
        args: The command line after ``evallab``.
        dsn: Results database for ``EVALLAB_DATABASE_URL`` (else the inherited one).
        cwd: Working directory.
        env: Extra environment variables.
        timeout: Seconds before the run is killed.
    """
    full = {**os.environ, "COLUMNS": "200", "TQDM_DISABLE": "1", **(env or {})}
    if dsn:
        full["EVALLAB_DATABASE_URL"] = dsn
    return subprocess.run(
        [*EVALLAB, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
    )


def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Rows of one query, on a connection of its own."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def run_campaign_here(
    path: Path, dsn: str, *, resume: bool = False, reporter: object = None
) -> Any:
    """Run a campaign file in this process as ``evallab run`` does; returns its CampaignResult."""
    from evallab.campaign import CampaignEngine, DriverInfo, run_locally
    from evallab.spec import load_campaign
    from evallab.store import Store

    spec, base = load_campaign(path)
    with Store(dsn) as store:
        engine = CampaignEngine(
            spec,
            base,
            path.resolve(),
            store,
            DriverInfo("cli"),
            reporter=reporter,
            resume=resume,  # type: ignore[arg-type]
        )
        return run_locally(engine)


def campaign_yaml(folder: Path, name: str, benchmarks: str, tasks_dir: Path | None = None) -> Path:
    """A tiny-model campaign file (fast: benchmarks use ``limit:``)."""
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntasks_dir: {tasks_dir or REPO / 'tasks_custom'}\nseed: 3\n"
        "models:\n  - {name: tiny-base, source: tiny, seed: 0}\n"
        "checks: {canary: warn}\n"
        f"benchmarks:\n{benchmarks}"
    )
    return path


def run_record(campaign_id: uuid.UUID, **fields: Any) -> RunRecord:
    """A succeeded ``runs`` row with plausible provenance; ``fields`` override any column."""
    run = RunRecord(
        run_id=uuid.uuid4(),
        campaign_id=campaign_id,
        run_key="k" * 64,
        benchmark="b",
        model_name="m",
        model_source="tiny",
        model_id="evallab/tiny",
        model_revision="local:abc",
        model_sha256="s" * 64,
        quant="none",
        runtime="transformers",
        runtime_label="transformers",
        runtime_version="5",
        harness="lm_eval",
        harness_version="0.4.13",
        tasks=["t"],
        seed=1,
        generation_config={"max_gen_toks": 8},
        lab_version="0.1.0",
        lab_commit="c",
        env_fingerprint="f",
        python_version="3.11",
        hostname="h",
        status="succeeded",
        started_at=datetime.now(UTC),
    )
    return replace(run, **fields)
