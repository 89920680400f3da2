"""Benchmarks, checks and the campaign itself: the top level of a campaign file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from evallab.spec.base import StrictModel, check_name
from evallab.spec.models import HubModelSpec, ModelSpec
from evallab.spec.runtimes import RuntimeSpec, TransformersRuntimeSpec

__all__ = ["BenchmarkSpec", "CampaignSpec", "ChecksSpec", "GenerationSpec"]


class GenerationSpec(StrictModel):
    """Generation settings applied to generate_until tasks (recorded with every run)."""

    max_gen_toks: int = Field(default=64, ge=1)
    """Maximum new tokens per generation."""
    temperature: float = Field(default=0.0, ge=0)
    """0 means greedy."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    n: int = Field(default=1, ge=1, le=1000)
    """Samples per problem (code benchmarks; pass@k needs n >= k)."""


class BenchmarkSpec(StrictModel):
    """One harness invocation over one or more tasks; one run per (model, runtime)."""

    name: str
    """Label of the benchmark, unique within the campaign."""
    harness: Literal["lm_eval", "code"] = "lm_eval"
    """``lm_eval`` (standard + custom tasks) or ``code`` (HumanEval-family, sandboxed)."""
    tasks: tuple[str, ...]
    """Task names (lm-eval tasks, custom tasks from ``tasks_custom/``, or code datasets)."""
    num_fewshot: int | None = Field(default=None, ge=0)
    """Few-shot examples; None keeps each task's default."""
    limit: int | None = Field(default=None, ge=1)
    """Evaluate only the first N documents of each task (for smoke runs)."""
    generation: GenerationSpec = GenerationSpec()
    """Generation settings."""
    pass_k: tuple[int, ...] = (1,)
    """k values for pass@k (code harness)."""
    dataset_files: dict[str, Path] = Field(default_factory=dict)
    """Code harness: local data file per task instead of the hub (relative to the campaign's base
    folder: the nearest folder above the campaign file holding pyproject.toml or tasks_custom/)."""
    dataset_revisions: dict[str, str] = Field(default_factory=dict)
    """Code harness: hub dataset commit sha (40 hex) per task, for tasks without a local file."""

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_name(v, "benchmark name")

    @field_validator("tasks")
    @classmethod
    def _tasks_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("tasks must list at least one task")
        if len(set(v)) != len(v):
            raise ValueError(f"tasks {list(v)} lists a task twice")
        return v


class ChecksSpec(StrictModel):
    """Reproducibility and validity rules applied to every run."""

    canary: Literal["fail", "warn", "off"] = "fail"
    """What a canary drift does: fail the group, warn and tag the runs, or skip the canary."""
    max_temperature_c: float = 82.0
    """GPU temperature above which, sustained for ``temperature_window_s``, a run is invalid."""
    temperature_window_s: float = 60.0
    """How long the temperature must stay above the limit to invalidate a run."""
    telemetry_interval_s: float = Field(default=2.0, gt=0)
    """Seconds between telemetry samples."""
    repro_tolerance: float = Field(default=0.005, ge=0)
    """Relative tolerance between runs with identical pins (0.005 = 0.5 %)."""
    regression_sigma: float = Field(default=2.0, gt=0)
    """A score more than this many sigma below its history is a regression."""
    regression_min_history: int = Field(default=5, ge=2)
    """Valid runs needed before a regression can be flagged."""


class CampaignSpec(StrictModel):
    """A campaign: every model x runtime x benchmark combination, evaluated reproducibly."""

    name: str
    """Campaign name (results are grouped by it)."""
    description: str = ""
    """Free text."""
    seed: int = 1234
    """Seed for harness sampling, few-shot selection and torch."""
    allow_unpinned: bool = False
    """Let hub models use a branch/tag revision (runs are tagged unpinned)."""
    tasks_dir: Path = Path("tasks_custom")
    """Folder of custom lm-eval task YAMLs (relative to the campaign file's repository root)."""
    models: tuple[ModelSpec, ...]
    """Models to evaluate."""
    runtimes: tuple[RuntimeSpec, ...] = (TransformersRuntimeSpec(kind="transformers"),)
    """Runtimes each model is served with."""
    benchmarks: tuple[BenchmarkSpec, ...]
    """Benchmarks run on each (model, runtime)."""
    checks: ChecksSpec = ChecksSpec()
    """Reproducibility and validity rules."""

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_name(v, "campaign name")

    def floating_models(self) -> list[HubModelSpec]:
        """Hub models whose revision is a branch or tag rather than a full commit sha."""
        return [m for m in self.models if isinstance(m, HubModelSpec) and not m.is_pinned]

    @model_validator(mode="after")
    def _unique(self) -> CampaignSpec:
        for what, names in (
            ("model", [m.name for m in self.models]),
            ("benchmark", [b.name for b in self.benchmarks]),
            ("runtime", [r.display for r in self.runtimes]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique; repeated: {dupes}")
        if not self.models:
            raise ValueError("models must list at least one model")
        if not self.benchmarks:
            raise ValueError("benchmarks must list at least one benchmark")
        known = {r.display for r in self.runtimes} | {r.kind for r in self.runtimes}
        for m in self.models:
            unknown = sorted(set(m.runtimes or ()) - known)
            if unknown:
                raise ValueError(
                    f"model {m.name!r} names runtimes {unknown} that the campaign doesn't have; "
                    f"its runtimes are {sorted(known)}"
                )
        return self

    def pairs(self) -> list[tuple[ModelSpec, RuntimeSpec]]:
        """The (model, runtime) pairs that run, in campaign order.

        Every model runs on every runtime unless it lists the ``runtimes`` it runs on (by label
        or kind), e.g. a float32 reference on transformers beside GGUF quants on llama.cpp.
        """
        return [
            (m, r)
            for m in self.models
            for r in self.runtimes
            if m.runtimes is None or r.display in m.runtimes or r.kind in m.runtimes
        ]
