"""The checks a campaign runs around its runtime sessions, benchmarks and ingests.

:class:`CampaignGuard` ties them together for the campaign engine: the canary and a version
snapshot when a session starts, a version re-check before each benchmark, NVML sampling while a
harness runs, the validity rules before a run is stored, and the repro window and regression
checks after.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from evallab.analysis.regressions import find_regressions
from evallab.analysis.repro import find_repro_violations
from evallab.canary.check import run_canary
from evallab.pins import VersionSnapshot, recheck_versions, running_runtime, snapshot_versions
from evallab.spec import BenchmarkSpec, ChecksSpec
from evallab.telemetry.devices import visible_gpus
from evallab.telemetry.gpu import GpuIdentity, GpuIdentitySource, NvmlDevice
from evallab.telemetry.nvml import NvmlBackend, open_nvml
from evallab.telemetry.rules import judge_run_validity
from evallab.telemetry.sampler import TelemetryRow, TelemetrySampler

if TYPE_CHECKING:
    from evallab.harnesses.base import Harness, HarnessRequest, HarnessResult
    from evallab.models import ModelArtifact
    from evallab.runtimes.base import Capabilities, RuntimeSession
    from evallab.store import Store

__all__ = ["CampaignGuard", "ChecksSpecHolder"]


class ChecksSpecHolder(Protocol):
    """What :class:`CampaignGuard` reads from a campaign spec."""

    @property
    def checks(self) -> ChecksSpec: ...

    @property
    def seed(self) -> int: ...

    @property
    def benchmarks(self) -> Sequence[BenchmarkSpec]: ...


class _Nvml(enum.Enum):
    """Default of :class:`CampaignGuard`'s ``nvml``: open the real NVML (None is "no GPU")."""

    REAL = "real"


class _NoGpu:
    """Without NVML there is no GPU identity to compare: an empty one on both sides."""

    def gpu_identity(self, index: int = 0) -> GpuIdentity:
        return GpuIdentity()

    def list_devices(self) -> Sequence[NvmlDevice]:
        return ()


class _SampledHarness:
    """Wraps a harness so every ``run`` call (retries included) is sampled by NVML."""

    def __init__(self, inner: Harness, guard: CampaignGuard) -> None:
        self._inner = inner
        self._guard = guard
        self.name = inner.name

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def version(self) -> tuple[str, str]:
        return self._inner.version()

    def check(self, benchmark: BenchmarkSpec, tasks_dir: Path, base_dir: Path) -> None:
        self._inner.check(benchmark, tasks_dir, base_dir)

    def check_runtime(
        self, benchmark: BenchmarkSpec, capabilities: Capabilities, tasks_dir: Path
    ) -> None:
        self._inner.check_runtime(benchmark, capabilities, tasks_dir)

    def run(self, request: HarnessRequest) -> HarnessResult:
        with self._guard.sampler() as rows:
            try:
                return self._inner.run(request)
            finally:
                self._guard.rows.extend(rows)


class CampaignGuard:
    """The checks a campaign runs around its runtime sessions and benchmarks.

    The runner calls, in order: :meth:`start_session` after a runtime starts (canary + version
    snapshot), :meth:`before_benchmark` (versions re-checked), :meth:`wrap` on the harness
    (telemetry), :meth:`judge` before ingest (validity + tags), :meth:`after_ingest` (repro
    window and regressions; notes for the end-of-run summary).

    Args:
        spec: The campaign.
        store: The results database (canary rows, repro and regression checks).
        campaign_id: The campaign's id (canary rows belong to it).
        gpu_name: GPU name recorded with canary baselines.
        nvml: NVML backend; the real one (or None on CPU machines) when not given.

    Attributes:
        gpus: NVML indices of the GPUs the campaign's runs use (those this process sees, which
            its runtime servers inherit); every one is sampled and judged.
    """

    def __init__(
        self,
        spec: ChecksSpecHolder,
        store: Store,
        campaign_id: uuid.UUID,
        *,
        gpu_name: str = "",
        nvml: NvmlBackend | Literal[_Nvml.REAL] | None = _Nvml.REAL,
    ) -> None:
        self.spec = spec
        self.checks: ChecksSpec = spec.checks
        self.store = store
        self.campaign_id = campaign_id
        self.gpu_name = gpu_name
        self.nvml: NvmlBackend | None = open_nvml() if nvml is _Nvml.REAL else nvml
        self.gpus: tuple[int, ...] = visible_gpus(self.nvml)
        self.harness_names = sorted({b.harness for b in spec.benchmarks})
        self.baseline = snapshot_versions(self.harness_names, gpu=self._gpu_source())
        self.session_snapshot = self.baseline
        self.session_tags: list[str] = []
        self.rows: list[TelemetryRow] = []
        self.notes: list[str] = []

    def _gpu_source(self) -> GpuIdentitySource:
        return self.nvml if self.nvml is not None else _NoGpu()

    def start_session(self, session: RuntimeSession, model: ModelArtifact) -> None:
        """Canary the new session and snapshot the runtime version it reports."""
        recheck_versions(self.baseline, session=None, gpu=self._gpu_source())
        self.session_snapshot = VersionSnapshot(
            self.baseline.gpu, self.baseline.harnesses, running_runtime(session)
        )
        result = run_canary(
            session,
            model,
            store=self.store,
            campaign_id=self.campaign_id,
            policy=self.checks.canary,
            seed=self.spec.seed,
            gpu_name=self.gpu_name,
        )
        self.session_tags = result.tags if result is not None else []
        if result is not None and result.status == "drift":
            self.notes.append(
                f"canary drift tolerated (checks.canary: warn) for {model.name} on "
                f"{session.info.label}: {'; '.join(result.details)}"
            )

    def before_benchmark(self, session: RuntimeSession) -> None:
        """Stop the campaign if the driver, CUDA, harness or runtime version changed."""
        recheck_versions(self.session_snapshot, session=session, gpu=self._gpu_source())
        self.rows = []

    def sampler(self) -> TelemetrySampler:
        """A telemetry sampler for the current run: every GPU it uses."""
        return TelemetrySampler(
            self.nvml, gpus=self.gpus, interval_s=self.checks.telemetry_interval_s
        )

    def wrap(self, harness: Harness) -> Harness:
        """The harness, sampled by NVML while it runs."""
        return _SampledHarness(harness, self)

    def judge(self) -> tuple[str | None, list[str]]:
        """(invalid reason or None, tags) for the run just finished."""
        return judge_run_validity(self.rows, self.checks), list(self.session_tags)

    def telemetry_records(self) -> list[tuple[Any, ...]]:
        """The run's telemetry rows in ``telemetry`` column order (after ``run_id``)."""
        return [r.as_record() for r in self.rows]

    def after_ingest(self, run_id: uuid.UUID, status: str) -> list[str]:
        """Repro window and regression checks for a stored run; returns note lines."""
        if status != "succeeded":
            return []
        repro = find_repro_violations(self.store, run_id, self.checks.repro_tolerance)
        regs = find_regressions(self.store, run_id, self.checks)
        lines = [f"non-reproducible: {v.describe()}" for v in repro]
        lines += [f"regression: {r.describe()}" for r in regs]
        self.notes.extend(lines)
        return lines

    def close(self) -> None:
        """Release NVML."""
        if self.nvml is not None:
            self.nvml.close()
