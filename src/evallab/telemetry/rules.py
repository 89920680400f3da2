"""Validity rules applied to a run's telemetry.

:func:`judge_run_validity` applies them all, to each of the run's GPUs on its own samples:
sustained over-temperature, slowdown throttle reasons, another process on the GPU. A reason
(naming the GPU) means the run is ``invalid`` (stored as its status, so it never counts in a
score's history).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import groupby

from evallab.spec import ChecksSpec
from evallab.telemetry.nvml import SLOWDOWN_REASONS
from evallab.telemetry.sampler import TelemetryRow

__all__ = ["judge_run_validity"]


def _over_temperature(rows: Sequence[TelemetryRow], limit_c: float, window_s: float) -> str | None:
    start: TelemetryRow | None = None
    peak = float("-inf")
    for row in sorted(rows, key=lambda r: r.ts):
        temp = row.temperature_c
        if temp is None or temp <= limit_c:
            # The rule wants the heat *sustained*: any cooler sample restarts the window.
            start, peak = None, float("-inf")
            continue
        if start is None:
            start = row
        peak = max(peak, temp)
        held = (row.ts - start.ts).total_seconds()
        if held >= window_s:
            return (
                f"GPU {row.gpu_index} temperature above {limit_c:g} °C for {held:.0f} s "
                f"(limit {window_s:g} s), peak {peak:g} °C from {start.ts.isoformat()}"
            )
    return None


def _throttled(rows: Sequence[TelemetryRow]) -> str | None:
    seen: dict[str, datetime] = {}
    for row in rows:
        for reason in row.throttle_reasons:
            if reason in SLOWDOWN_REASONS and reason not in seen:
                seen[reason] = row.ts
    if not seen:
        return None
    first = min(seen.values())
    return (
        f"GPU {rows[0].gpu_index} throttled ({', '.join(sorted(seen))}) "
        f"first at {first.isoformat()}"
    )


def _foreign_processes(rows: Sequence[TelemetryRow]) -> str | None:
    pids: set[int] = set()
    count = 0
    first: datetime | None = None
    for row in rows:
        if row.other_processes > 0:
            pids.update(row.other_pids)
            count = max(count, row.other_processes)
            first = row.ts if first is None else min(first, row.ts)
    if first is None:
        return None
    who = f"pids {', '.join(map(str, sorted(pids)))}" if pids else f"{count} process(es)"
    return (
        f"another process used the run's GPU {rows[0].gpu_index} ({who}) "
        f"first at {first.isoformat()}"
    )


def _per_gpu(rows: Sequence[TelemetryRow]) -> list[list[TelemetryRow]]:
    """The rows of each GPU, GPUs in index order, each GPU's rows in time order."""
    ordered = sorted(rows, key=lambda r: (r.gpu_index, r.ts))
    return [list(group) for _, group in groupby(ordered, key=lambda r: r.gpu_index)]


def judge_run_validity(rows: Sequence[TelemetryRow], checks: ChecksSpec) -> str | None:
    """Apply the validity rules to a run's telemetry, each GPU on its own samples.

    A cool sample of one GPU doesn't restart another's over-temperature window: the rules see
    one GPU at a time.

    Args:
        rows: The run's telemetry samples (any order, any number of GPUs).
        checks: Thresholds (``max_temperature_c``, ``temperature_window_s``).

    Returns:
        Why the run is invalid (every rule that fired on every GPU, each naming its GPU,
        ``; ``-joined), or None when it is valid.
    """
    reasons = [
        r
        for gpu_rows in _per_gpu(rows)
        for r in (
            _over_temperature(gpu_rows, checks.max_temperature_c, checks.temperature_window_s),
            _throttled(gpu_rows),
            _foreign_processes(gpu_rows),
        )
        if r
    ]
    return "; ".join(reasons) or None
