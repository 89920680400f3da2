"""The Runtime protocol: how a model gets served to a harness.

A runtime is a *kind* (transformers, vllm, llamacpp, sglang, openai-endpoint). ``check`` validates
a (runtime spec, model, benchmarks) combination before anything heavy starts; ``start`` returns a
live :class:`RuntimeSession` (a context manager) that a harness talks to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from evallab.models import ModelArtifact
    from evallab.spec import BenchmarkSpec, RuntimeSpec

__all__ = ["LmEvalModel", "Runtime", "RuntimeInfo", "RuntimeSession"]


@dataclass(frozen=True)
class RuntimeInfo:
    """What a running runtime reports about itself (recorded on every run)."""

    kind: str
    label: str
    version: str
    commit: str = ""
    command: str = ""
    log_path: str = ""
    base_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LmEvalModel:
    """How lm-evaluation-harness should reach a runtime: its model type and model args."""

    model_type: str
    model_args: dict[str, Any]
    batch_size: int | str = 1
    instance: Any = None
    """A ready ``lm_eval.api.model.LM`` (in-process runtimes load the model once per session)."""


@runtime_checkable
class RuntimeSession(Protocol):
    """A started runtime serving one model."""

    info: RuntimeInfo

    def lm_eval_model(self, benchmark: BenchmarkSpec) -> LmEvalModel:
        """lm-eval model type and args to evaluate ``benchmark`` against this session."""
        ...

    def health(self) -> bool:
        """True while the runtime answers."""
        ...

    def restart(self) -> None:
        """Restart the server after a crash (no-op for in-process runtimes)."""
        ...

    def stop(self) -> None:
        """Stop the runtime and every process it started."""
        ...

    def __enter__(self) -> RuntimeSession: ...

    def __exit__(self, *exc: object) -> None: ...


class Runtime(Protocol):
    """A kind of runtime, registered by name in :mod:`evallab.runtimes`."""

    kind: str

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        """Raise a LabError if this combination can't run (before anything heavy starts)."""
        ...

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> RuntimeSession:
        """Start serving ``model``; logs go under ``workdir``."""
        ...
