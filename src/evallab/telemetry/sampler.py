"""GPU telemetry: NVML readings sampled in the background while a run executes.

A run is sampled with::

    with TelemetrySampler(backend, interval_s=2.0) as rows:
        ...  # run the benchmark
    # rows now holds every TelemetryRow (one per GPU per sample), first and last sample included

Every GPU the run uses is read at each sample: by default the GPUs this process sees
(``CUDA_VISIBLE_DEVICES``, see :mod:`evallab.telemetry.devices`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from evallab.telemetry.devices import visible_gpus
from evallab.telemetry.nvml import NvmlBackend

__all__ = [
    "TELEMETRY_COLUMNS",
    "TelemetryRow",
    "TelemetrySampler",
    "lab_process_ids",
    "samples_per_min",
    "shift_rows",
]


@dataclass(frozen=True)
class TelemetryRow:
    """A timestamped reading as stored in the ``telemetry`` table."""

    ts: datetime
    gpu_index: int
    temperature_c: float | None
    power_w: float | None
    sm_clock_mhz: float | None
    mem_clock_mhz: float | None
    memory_used_mb: float | None
    utilization_pct: float | None
    throttle_reasons: tuple[str, ...]
    other_processes: int
    other_pids: tuple[int, ...] = ()

    def as_record(self) -> tuple[Any, ...]:
        """The row's values in :data:`TELEMETRY_COLUMNS` order, after ``run_id``."""
        return (
            self.ts,
            self.gpu_index,
            self.temperature_c,
            self.power_w,
            self.sm_clock_mhz,
            self.mem_clock_mhz,
            self.memory_used_mb,
            self.utilization_pct,
            list(self.throttle_reasons),
            self.other_processes,
        )


def lab_process_ids() -> set[int]:
    """This process and all its descendants (the runtime servers the lab started)."""
    # Imported where sampling needs it, so the rest of the telemetry package imports light.
    import psutil

    me = psutil.Process(os.getpid())
    return {me.pid, *(p.pid for p in me.children(recursive=True))}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TelemetrySampler:
    """Samples the run's GPUs every ``interval_s`` seconds in a background thread.

    Used as a context manager that yields the list the rows are appended to. A sample reads every
    GPU of the run (one row each, labelled with its NVML index); one is taken on entry and on
    exit, so even a short run has at least two rows per GPU. A compute process on a GPU that
    isn't the lab or one of its children (the runtime servers it started, on whichever of the
    run's GPUs they run) counts in that GPU's ``other_processes``.

    Args:
        backend: Where readings come from; None records nothing (CPU runs).
        gpus: NVML indices of the GPUs the run uses (default: those this process sees).
        interval_s: Seconds between samples.
        allowed_pids: Returns the pids allowed on the GPU (default: :func:`lab_process_ids`).
        clock: Timestamp source (tests pass a scripted clock).
    """

    def __init__(
        self,
        backend: NvmlBackend | None,
        gpus: Sequence[int] | None = None,
        interval_s: float = 2.0,
        allowed_pids: Callable[[], Iterable[int]] = lab_process_ids,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.backend = backend
        self.gpus: tuple[int, ...] = tuple(visible_gpus(backend) if gpus is None else gpus)
        self.interval_s = interval_s
        self.allowed_pids = allowed_pids
        self.clock = clock
        self.rows: list[TelemetryRow] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> list[TelemetryRow]:
        """Read every GPU of the run now; append one row per GPU to ``rows`` and return them."""
        if self.backend is None or not self.gpus:
            return []
        # One snapshot of the lab's process tree per sample, shared by all GPUs.
        allowed = set(self.allowed_pids())
        ts = self.clock()
        taken = []
        for index in self.gpus:
            reading = self.backend.read(index)
            others = tuple(sorted(p for p in reading.compute_pids if p not in allowed))
            taken.append(
                TelemetryRow(
                    ts=ts,
                    gpu_index=index,
                    temperature_c=reading.temperature_c,
                    power_w=reading.power_w,
                    sm_clock_mhz=reading.sm_clock_mhz,
                    mem_clock_mhz=reading.mem_clock_mhz,
                    memory_used_mb=reading.memory_used_mb,
                    utilization_pct=reading.utilization_pct,
                    throttle_reasons=reading.throttle_reasons,
                    other_processes=len(others),
                    other_pids=others,
                )
            )
        self.rows.extend(taken)
        return taken

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self.sample()
        except BaseException as exc:  # re-raised in the caller's thread by __exit__
            self.error = exc

    def __enter__(self) -> list[TelemetryRow]:
        self.sample()
        if self.backend is not None and self.gpus:
            self._thread = threading.Thread(
                target=self._loop, name="evallab-telemetry", daemon=True
            )
            self._thread.start()
        return self.rows

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.error is not None and exc is None:
            raise self.error
        if exc is None:
            self.sample()


def samples_per_min(n_samples: int, duration_s: float) -> float | None:
    """Eval throughput: samples per minute, None for a zero-length run."""
    if duration_s <= 0:
        return None
    return n_samples * 60.0 / duration_s


def shift_rows(rows: Sequence[TelemetryRow], delta: timedelta) -> list[TelemetryRow]:
    """Rows moved in time by ``delta`` (for building scripted histories)."""
    return [replace(r, ts=r.ts + delta) for r in rows]


#: Columns of the ``telemetry`` table, in the order :meth:`TelemetryRow.as_record` follows.
TELEMETRY_COLUMNS = (
    "run_id",
    "ts",
    "gpu_index",
    "temperature_c",
    "power_w",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "memory_used_mb",
    "utilization_pct",
    "throttle_reasons",
    "other_processes",
)
