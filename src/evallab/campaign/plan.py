"""What a campaign will run: the prepared campaign, its groups and runs, and run identity."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from evallab.environment import EnvironmentInfo, collect_environment
from evallab.harnesses import get_harness
from evallab.harnesses.base import ScoreRow
from evallab.harnesses.custom_tasks import tasks_commit, tasks_sha256
from evallab.models import ModelArtifact, resolve_model
from evallab.pins import PinReport, verify_pins
from evallab.runtimes import get_runtime
from evallab.spec import BenchmarkSpec, CampaignSpec, ModelSpec, RuntimeSpec

__all__ = [
    "CampaignResult",
    "Group",
    "PlannedRun",
    "PreparedCampaign",
    "RunOutcome",
    "fetch_model",
    "prepare_campaign",
    "run_key",
    "runtime_version",
]


@dataclass(frozen=True)
class Group:
    """A (model, quant, runtime) group: its runs share one runtime session."""

    model: ModelArtifact
    runtime: RuntimeSpec

    @property
    def label(self) -> str:
        return f"{self.model.name} · {self.runtime.display}"


@dataclass(frozen=True)
class PlannedRun:
    """One (model, runtime, benchmark) run of a campaign, with its identity.

    ``run_id`` is derived from the campaign and the run key, so every attempt at the same run in
    the same campaign (a retried step, a re-submitted flow) uses the same id and folder: a
    finished evaluation can't be stored twice under two ids.
    """

    group: Group
    bench: BenchmarkSpec
    key: str
    run_id: uuid.UUID

    @property
    def label(self) -> str:
        return f"{self.group.label} · {self.bench.name}"


@dataclass
class RunOutcome:
    """What happened to one (model, runtime, benchmark) run."""

    run_id: uuid.UUID
    model: str
    runtime: str
    benchmark: str
    status: str
    reason: str = ""
    scores: list[ScoreRow] = field(default_factory=list)
    raw_dir: Path | None = None
    skipped: bool = False
    duration_s: float = 0.0
    run_key: str = ""


@dataclass
class CampaignResult:
    """The outcome of a whole campaign."""

    campaign_id: uuid.UUID
    name: str
    status: str
    runs: list[RunOutcome]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [r for r in self.runs if r.status == "failed"]


@dataclass
class PreparedCampaign:
    """A validated campaign with every model resolved and every combination checked."""

    spec: CampaignSpec
    base_dir: Path
    spec_path: Path
    tasks_dir: Path
    models: dict[str, ModelArtifact]
    environment: EnvironmentInfo
    tasks_sha256: str
    tasks_commit: str
    pins: PinReport | None = None

    def groups(self) -> list[Group]:
        """(model, runtime) groups in campaign order; each group shares one runtime session."""
        return [Group(self.models[m.name], r) for m, r in self.spec.pairs()]

    def runs(self, group: Group, campaign_id: uuid.UUID) -> list[PlannedRun]:
        """The group's runs, in benchmark order, with their identities in ``campaign_id``."""
        out = []
        for bench in self.spec.benchmarks:
            key = run_key(self, group.model, group.runtime, bench)
            out.append(PlannedRun(group, bench, key, uuid.uuid5(campaign_id, key)))
        return out

    @property
    def total_runs(self) -> int:
        return len(self.spec.pairs()) * len(self.spec.benchmarks)


def runtime_version(spec: RuntimeSpec) -> str:
    """The runtime version a spec pins (or the in-process transformers version)."""
    version = getattr(spec, "version", None)
    if version:
        return str(version)
    if spec.kind == "transformers":
        from importlib import metadata

        return metadata.version("transformers")
    return ""


def run_key(
    prepared: PreparedCampaign, model: ModelArtifact, runtime: RuntimeSpec, bench: BenchmarkSpec
) -> str:
    """Identity of a run: sha256 of its pins and config (equal keys = the same experiment)."""
    harness_version = get_harness(bench.harness).version()
    model_pins: list[object] = [model.model_id, model.revision, model.sha256, model.quant]
    model_pins.append(model.chat)
    if model.provenance:
        # Weights the lab made (a GGUF conversion) are the experiment's, not the source's.
        model_pins.append(model.weights_sha256)
    payload = {
        "model": model_pins,
        "runtime": runtime.model_dump(mode="json"),
        "runtime_version": runtime_version(runtime),
        "benchmark": bench.model_dump(mode="json"),
        "seed": prepared.spec.seed,
        "harness": list(harness_version),
        "tasks_sha256": prepared.tasks_sha256,
        "fingerprint": prepared.environment.fingerprint,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def fetch_model(spec: CampaignSpec, model: ModelSpec, base_dir: Path) -> ModelArtifact:
    """Fetch or build one of the campaign's models, in the form its runtimes serve.

    A Hugging Face folder labelled with a GGUF quant type is converted (and quantized) for the
    campaign's llama.cpp runtime here, before anything starts (see :mod:`evallab.quant`).
    """
    from evallab.quant.prepare import prepare_gguf

    artifact = resolve_model(model, base_dir, allow_unpinned=spec.allow_unpinned)
    return prepare_gguf(artifact, spec.runtimes)


def check_benchmarks(spec: CampaignSpec, base_dir: Path) -> Path:
    """Validate every benchmark against its harness; return the custom tasks folder."""
    tasks_dir = spec.tasks_dir if spec.tasks_dir.is_absolute() else base_dir / spec.tasks_dir
    for bench in spec.benchmarks:
        get_harness(bench.harness).check(bench, tasks_dir, base_dir)
    return tasks_dir


def prepare_campaign(
    spec: CampaignSpec,
    base_dir: Path,
    spec_path: Path,
    *,
    pins: PinReport | None = None,
    models: dict[str, ModelArtifact] | None = None,
) -> PreparedCampaign:
    """Validate benchmarks, resolve models and check runtimes before anything heavy runs.

    The engine verifies the pins and fetches the models as steps of their own and passes their
    results as ``pins`` and ``models`` (keyed by model name) so they aren't redone.

    Raises:
        LabError: the first problem found (unknown task, missing model, bad runtime combo...).
    """
    tasks_dir = check_benchmarks(spec, base_dir)
    # Pins first: a refused revision or a runtime version mismatch stops before any download.
    environment = pins.environment if pins is not None else collect_environment()
    if pins is None:
        pins = verify_pins(spec, base_dir, environment=environment)
    if models is None:
        models = {m.name: fetch_model(spec, m, base_dir) for m in spec.models}
    for model_spec, runtime_spec in spec.pairs():
        runtime = get_runtime(runtime_spec.kind)
        model = models[model_spec.name]
        runtime.check(runtime_spec, model, spec.benchmarks)
        # Each harness decides what it can run on what this runtime can do.
        capabilities = runtime.capabilities(runtime_spec, model)
        for bench in spec.benchmarks:
            get_harness(bench.harness).check_runtime(bench, capabilities, tasks_dir)
    return PreparedCampaign(
        spec=spec,
        base_dir=base_dir,
        spec_path=spec_path,
        tasks_dir=tasks_dir,
        models=models,
        environment=environment,
        tasks_sha256=tasks_sha256(tasks_dir),
        tasks_commit=tasks_commit(tasks_dir),
        pins=pins,
    )
