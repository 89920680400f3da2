"""What the bench scripts share: a scratch PostgreSQL and synthetic campaign and run rows."""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evallab.runtimes.process import free_port
from evallab.store.embedded import EmbeddedPostgres
from evallab.store.records import CampaignRecord, RunRecord


@contextmanager
def scratch_postgres() -> Iterator[tuple[str, Path]]:
    """A real embedded PostgreSQL in a temporary folder: yields (DSN, folder), then removes it."""
    with tempfile.TemporaryDirectory(prefix="evallab-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg", port=free_port())
        dsn = server.start()
        try:
            yield dsn, Path(tmp)
        finally:
            server.stop()


def doc_sha256(i: int) -> str:
    """A real digest for document ``i``, as harnesses write them (incompressible, unlike counters)."""
    return hashlib.sha256(f"document {i}".encode()).hexdigest()


def bench_campaign() -> CampaignRecord:
    """A campaign row to hang the benchmark's runs on."""
    return CampaignRecord(
        uuid.uuid4(), "bench", {}, "0" * 64, "bench.yaml", "0.1.0", "x", datetime.now(UTC)
    )


def bench_run(campaign_id: uuid.UUID, name: str = "bench", **fields: Any) -> RunRecord:
    """A succeeded run row with plausible provenance; ``fields`` override any column."""
    run = RunRecord(
        run_id=uuid.uuid4(),
        campaign_id=campaign_id,
        run_key=name,
        benchmark="bench",
        model_name=name,
        model_source="tiny",
        model_id=name,
        model_revision="r",
        model_sha256="0" * 64,
        quant="none",
        runtime="transformers",
        runtime_label="transformers",
        runtime_version="5",
        harness="lm_eval",
        harness_version="0.4.13",
        tasks=["bench_task"],
        seed=0,
        generation_config={},
        lab_version="0.1.0",
        lab_commit="x",
        env_fingerprint="0",
        python_version="3.11",
        hostname="bench",
        status="succeeded",
        started_at=datetime.now(UTC),
    )
    return replace(run, **fields)
