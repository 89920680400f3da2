"""Validity rules on telemetry: over-temperature, slowdown throttling, foreign GPU processes."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta

from evallab.spec import ChecksSpec
from evallab.telemetry.nvml import FakeNVML, GpuReading, decode_throttle_reasons
from evallab.telemetry.rules import judge_run_validity
from evallab.telemetry.sampler import TelemetrySampler

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class StepClock:
    """Each call is `step_s` later than the previous one (scripted time for the sampler)."""

    def __init__(self, step_s: float = 2.0) -> None:
        self.now = T0
        self.step = timedelta(seconds=step_s)

    def __call__(self) -> datetime:
        value = self.now
        self.now += self.step
        return value


def sample(readings: list[GpuReading], n: int, allowed: set[int] | None = None):  # type: ignore[no-untyped-def]
    """Take exactly n samples from a FakeNVML through the real sampler, 2 s apart."""
    sampler = TelemetrySampler(
        FakeNVML(readings=readings),
        interval_s=3600,
        clock=StepClock(2.0),
        allowed_pids=lambda: allowed if allowed is not None else {os.getpid()},
    )
    for _ in range(n):
        sampler.sample()
    return sampler.rows


def test_sustained_heat_invalidates_the_run() -> None:
    rows = sample([GpuReading(temperature_c=86.0)], n=31)  # 60 s above 82 °C
    reason = judge_run_validity(rows, ChecksSpec())
    assert reason is not None
    assert "temperature above 82 °C for 60 s" in reason
    assert "peak 86 °C" in reason


def test_short_heat_spikes_and_warm_gpu_stay_valid() -> None:
    assert judge_run_validity(sample([GpuReading(temperature_c=86.0)], n=30), ChecksSpec()) is None
    spiky = [GpuReading(temperature_c=88.0)] * 20 + [GpuReading(temperature_c=75.0)]
    spiky += [GpuReading(temperature_c=88.0)] * 20
    assert judge_run_validity(sample(spiky, n=41), ChecksSpec()) is None
    warm = sample([GpuReading(temperature_c=82.0)], n=100)  # at the limit, not above it
    assert judge_run_validity(warm, ChecksSpec()) is None


def test_temperature_threshold_and_window_are_configurable() -> None:
    rows = sample([GpuReading(temperature_c=78.0)], n=12)  # 22 s at 78 °C
    assert judge_run_validity(rows, ChecksSpec()) is None
    strict = ChecksSpec(max_temperature_c=75.0, temperature_window_s=20.0)
    assert "above 75 °C" in (judge_run_validity(rows, strict) or "")


def test_thermal_throttle_invalidates_the_run() -> None:
    mask = 0x40 | 0x4  # hw_thermal_slowdown + sw_power_cap
    readings = [GpuReading(temperature_c=70.0)] * 5
    readings += [GpuReading(temperature_c=80.0, throttle_reasons=decode_throttle_reasons(mask))]
    rows = sample(readings, n=8)
    reason = judge_run_validity(rows, ChecksSpec())
    assert reason is not None and "GPU 0 throttled (hw_thermal_slowdown)" in reason
    assert rows[5].throttle_reasons == ("sw_power_cap", "hw_thermal_slowdown")


def test_power_cap_and_idle_are_not_slowdowns() -> None:
    readings = [GpuReading(temperature_c=60.0, throttle_reasons=decode_throttle_reasons(0x1 | 0x4))]
    assert judge_run_validity(sample(readings, n=5), ChecksSpec()) is None


def test_foreign_process_on_the_gpu_invalidates_the_run() -> None:
    me = os.getpid()
    readings = [GpuReading(compute_pids=(me,))] * 3 + [GpuReading(compute_pids=(me, 424242))]
    rows = sample(readings, n=5, allowed={me})
    assert [r.other_processes for r in rows] == [0, 0, 0, 1, 1]
    reason = judge_run_validity(rows, ChecksSpec())
    assert reason is not None and "another process used the run's GPU 0 (pids 424242)" in reason


def test_only_the_lab_on_the_gpu_is_valid() -> None:
    me = os.getpid()
    rows = sample([GpuReading(temperature_c=65.0, compute_pids=(me,))], n=10, allowed={me})
    assert judge_run_validity(rows, ChecksSpec()) is None


def test_background_sampler_collects_first_periodic_and_last_rows() -> None:
    fake = FakeNVML(readings=[GpuReading(temperature_c=float(t)) for t in range(50, 90)])
    sampler = TelemetrySampler(fake, interval_s=0.01, allowed_pids=lambda: {os.getpid()})
    with sampler as rows:
        while fake.reads < 5:
            pass
    assert len(rows) >= 6  # first + >= 4 periodic + last
    temps = [r.temperature_c for r in rows]
    assert temps == sorted(temps) and temps[0] == 50.0
    assert all(b.ts >= a.ts for a, b in itertools.pairwise(rows))


def test_no_gpu_records_nothing() -> None:
    with TelemetrySampler(None) as rows:
        pass
    assert rows == []
    assert judge_run_validity(rows, ChecksSpec()) is None
