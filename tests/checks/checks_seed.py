"""Helpers for the checks tests: write runs with scores into a real migrated database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from evallab.harnesses.base import ScoreRow
from evallab.store.ingest import ingest_run, insert_campaign
from evallab.store.records import CampaignRecord
from tests.helpers import run_record

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def off_loop(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a synchronous store function from async seeding code (the store runs its own loop)."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def new_campaign(conn: asyncpg.Connection, name: str = "nightly") -> uuid.UUID:
    cid = uuid.uuid4()
    await insert_campaign(
        conn, CampaignRecord(cid, name, {"name": name}, "s" * 64, "c.yaml", "0.1.0", "abc", T0)
    )
    return cid


async def add_run(
    conn: asyncpg.Connection,
    campaign_id: uuid.UUID,
    *,
    started_at: datetime,
    scores: Sequence[tuple[str, str, float]] = (("demo_mc", "acc", 0.5),),
    model: str = "tiny-a",
    quant: str = "none",
    runtime_label: str = "transformers",
    benchmark: str = "demo",
    status: str = "succeeded",
    status_reason: str = "",
    run_key: str = "k" * 64,
    fingerprint: str = "f" * 64,
    tags: Sequence[str] = (),
    samples_per_min: float | None = 120.0,
    telemetry: Sequence[tuple[Any, ...]] = (),
) -> uuid.UUID:
    rid = uuid.uuid4()
    rec = run_record(
        campaign_id,
        run_id=rid,
        run_key=run_key,
        benchmark=benchmark,
        model_name=model,
        model_id=f"evallab/{model}",
        model_sha256="m" * 64,
        quant=quant,
        runtime_label=runtime_label,
        runtime_version="5.24.0",
        tasks=sorted({t for t, _, _ in scores}),
        seed=1234,
        lab_commit="abc",
        env_fingerprint=fingerprint,
        hostname="lab",
        status=status,
        status_reason=status_reason,
        started_at=started_at,
        finished_at=started_at + timedelta(minutes=5),
        duration_s=300.0,
        n_samples=600,
        samples_per_min=samples_per_min,
        tags=list(tags),
        gpu_name="Fake GPU 80GB",
    )
    await ingest_run(
        conn,
        rec,
        [ScoreRow(t, m, "none", v, 0.01, 100, True) for t, m, v in scores],
        telemetry=telemetry,
    )
    return rid
