"""Helpers shared by the test suites: run the CLI as a user does, read rows back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg

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
