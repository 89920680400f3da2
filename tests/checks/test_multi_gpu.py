"""Two GPUs: every GPU a run sees is sampled and judged, and only those.

A fake NVML with two GPUs, through the same interface as the real one and the same code a
campaign uses (:class:`CampaignGuard`'s sampler and judge, and the environment collector).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest

from evallab.environment import collect_environment
from evallab.spec import ChecksSpec
from evallab.telemetry.guard import CampaignGuard
from evallab.telemetry.nvml import FakeNVML, GpuReading, decode_throttle_reasons
from evallab.telemetry.rules import judge_run_validity
from evallab.telemetry.sampler import TelemetrySampler

FOREIGN = 424242  # a pid that is neither this process nor one of its children
COOL = GpuReading(temperature_c=60.0, power_w=250.0)
THROTTLED = GpuReading(
    temperature_c=84.0, power_w=300.0, throttle_reasons=decode_throttle_reasons(0x40 | 0x4)
)


def two_gpus(gpu0: list[GpuReading], gpu1: list[GpuReading]) -> FakeNVML:
    return FakeNVML(
        devices=2,
        gpu_readings={0: gpu0, 1: gpu1},
        names={0: "NVIDIA GeForce RTX 3090", 1: "NVIDIA GeForce RTX 3090 Ti"},
    )


def guarded_run(fake: FakeNVML) -> tuple[str | None, list[Any]]:
    """One run through the campaign's guard: sampled on entry and exit, then judged."""
    spec = SimpleNamespace(checks=ChecksSpec(), seed=0, benchmarks=[])
    guard = CampaignGuard(spec, store=cast(Any, None), campaign_id=uuid.uuid4(), nvml=fake)
    with guard.sampler() as rows:
        pass
    guard.rows.extend(rows)
    reason, _tags = guard.judge()
    return reason, guard.rows


@pytest.fixture
def order_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


@pytest.fixture
def server() -> Iterator[int]:
    """A child process standing in for the runtime server the lab started."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_throttle_on_gpu_1_invalidates_a_run_on_both_gpus(
    monkeypatch: pytest.MonkeyPatch, order_set: None
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    reason, rows = guarded_run(two_gpus([COOL], [THROTTLED]))
    assert sorted((r.gpu_index, r.temperature_c) for r in rows) == [
        (0, 60.0),
        (0, 60.0),
        (1, 84.0),
        (1, 84.0),
    ]
    assert reason is not None and reason.startswith("GPU 1 throttled (hw_thermal_slowdown)")
    assert "GPU 0" not in reason


def test_a_foreign_process_on_gpu_1_invalidates_a_run_on_both_gpus(
    monkeypatch: pytest.MonkeyPatch, order_set: None
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    busy = GpuReading(temperature_c=60.0, compute_pids=(FOREIGN,))
    reason, rows = guarded_run(two_gpus([COOL], [busy]))
    assert [(r.gpu_index, r.other_pids) for r in rows if r.other_processes] == [
        (1, (FOREIGN,)),
        (1, (FOREIGN,)),
    ]
    assert reason is not None and f"run's GPU 1 (pids {FOREIGN})" in reason


def test_a_run_on_gpu_1_ignores_what_runs_on_gpu_0(
    monkeypatch: pytest.MonkeyPatch, order_set: None
) -> None:
    # The other worker's server on GPU 0, hot and throttling: not this run's GPU.
    other_worker = GpuReading(
        temperature_c=90.0, compute_pids=(FOREIGN,), throttle_reasons=("hw_slowdown",)
    )
    fake = two_gpus([other_worker], [COOL])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    reason, rows = guarded_run(fake)
    assert reason is None
    assert {r.gpu_index for r in rows} == {1} and len(rows) == 2
    assert fake.reads_by_gpu == {1: 2}  # GPU 0 was never read
    # Its provenance names the GPU it ran on, not GPU 0.
    assert collect_environment(gpu=fake).gpu_name == "NVIDIA GeForce RTX 3090 Ti"


def test_the_runtime_server_is_not_foreign_on_any_of_the_runs_gpus(
    monkeypatch: pytest.MonkeyPatch, order_set: None, server: int
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    # A tensor-parallel server: the lab's child on both GPUs.
    on_both = GpuReading(temperature_c=70.0, compute_pids=(server,))
    reason, rows = guarded_run(two_gpus([on_both], [on_both]))
    assert reason is None
    assert len(rows) == 4 and all(r.other_processes == 0 for r in rows)


def test_provenance_records_every_gpu_the_run_uses(
    monkeypatch: pytest.MonkeyPatch, order_set: None
) -> None:
    fake = two_gpus([COOL], [COOL])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    env = collect_environment(gpu=fake)
    assert env.gpu_name == "NVIDIA GeForce RTX 3090 Ti + NVIDIA GeForce RTX 3090"
    assert (env.gpu_driver, env.cuda_version) == ("550.54.15", "12.4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert collect_environment(gpu=fake).gpu_name == ""  # a run that sees no GPU uses none


def test_one_gpus_heat_does_not_hide_behind_anothers_cool_samples() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    ticks = (start + timedelta(seconds=2 * n) for n in itertools.count())
    sampler = TelemetrySampler(
        two_gpus([COOL], [GpuReading(temperature_c=86.0)]),
        gpus=(0, 1),
        interval_s=3600,
        allowed_pids=lambda: {os.getpid()},
        clock=lambda: next(ticks),
    )
    for _ in range(31):  # 60 s: both GPUs read at each sample, one cool, one hot
        sampler.sample()
    assert len(sampler.rows) == 62
    reason = judge_run_validity(sampler.rows, ChecksSpec())
    assert reason is not None and reason.startswith("GPU 1 temperature above 82 °C for 60 s")
    assert "GPU 0" not in reason


def test_the_report_charts_the_first_gpu_a_run_used(migrated_dsn: str) -> None:
    """A run on GPUs 1 and 2 (none on GPU 0) still has its chart, of GPU 1; aggregates span both."""
    from checks_seed import T0, add_run, new_campaign, run

    from evallab.store import Store

    async def seed() -> uuid.UUID:
        conn = await asyncpg.connect(migrated_dsn)
        try:
            cid = await new_campaign(conn, "two-gpus")
            samples = [
                (T0 + timedelta(seconds=2 * i), gpu, temp + i, 300.0, 1.0, 1.0, 1.0, 1.0, [], 0)
                for i in range(5)
                for gpu, temp in ((1, 60.0), (2, 80.0))
            ]
            return cast(uuid.UUID, await add_run(conn, cid, started_at=T0, telemetry=samples))
        finally:
            await conn.close()

    rid = run(seed())
    with Store(migrated_dsn) as store:
        summary = store.telemetry_summaries()[rid]
    assert (summary.samples, summary.gpus, summary.max_temp) == (10, 2, 84.0)
    assert summary.series_gpu == 1
    assert [p.temperature_c for p in summary.series] == [60.0, 61.0, 62.0, 63.0, 64.0]
