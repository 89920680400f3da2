"""In-process Hugging Face transformers: the CPU default runtime.

The session describes the weights (folder, dtype, device, context length, batch size); the
harness that uses them loads them once per session into :attr:`TransformersSession.resources`,
so every benchmark of a (model, runtime) group shares one loaded model.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from evallab.errors import SpecError
from evallab.models import ModelArtifact
from evallab.runtimes.base import (
    Capabilities,
    LocalWeights,
    RuntimeInfo,
    SessionResources,
    expect_spec,
)
from evallab.spec import BenchmarkSpec, RuntimeSpec, TransformersRuntimeSpec

__all__ = ["TransformersRuntime", "TransformersSession"]


class TransformersSession:
    """A model loaded once in this process and shared by every benchmark of its group."""

    def __init__(self, spec: TransformersRuntimeSpec, model: ModelArtifact) -> None:
        self.spec = spec
        self.model = model
        self.capabilities = Capabilities()
        self.resources = SessionResources()
        self.info = RuntimeInfo(
            kind="transformers",
            label=spec.display,
            version=metadata.version("transformers"),
            command=f"in-process lm_eval hf pretrained={model.path} dtype={spec.dtype} "
            f"device={spec.device}",
        )

    @property
    def endpoint(self) -> None:
        """No server: the weights are loaded in this process."""
        return None

    @property
    def weights(self) -> LocalWeights:
        """The weights and how to load them."""
        return LocalWeights(
            path=self.model.path,
            dtype=self.spec.dtype,
            device=self.spec.device,
            max_length=self.spec.max_length,
            batch_size=self.spec.batch_size,
        )

    def health(self) -> bool:
        return True

    def restart(self) -> None:
        self.resources.clear()

    def stop(self) -> None:
        self.resources.clear()

    def log_tail(self, lines: int = 40) -> str:
        """In-process: errors surface as exceptions, there is no server log."""
        return ""

    def __enter__(self) -> TransformersSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TransformersRuntime:
    """Factory for :class:`TransformersSession`."""

    kind = "transformers"

    def capabilities(self, spec: RuntimeSpec, model: ModelArtifact) -> Capabilities:
        """Everything: the model scores prompts in-process with its own tokenizer."""
        return Capabilities()

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        expect_spec(spec, TransformersRuntimeSpec, self.kind)
        if model.gguf_path is not None:
            raise SpecError(
                f"model {model.name!r} is a GGUF file; the transformers runtime serves HF folders",
                value=model.gguf_path,
                fix="serve GGUF models with kind: llamacpp",
            )

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> TransformersSession:
        return TransformersSession(expect_spec(spec, TransformersRuntimeSpec, self.kind), model)
