"""In-process Hugging Face transformers: the CPU default runtime.

The session loads the model once (as lm-eval's ``HFLM``, the lab's transformers loader) and
serves it as :class:`~evallab.runtimes.base.LocalWeights`, so every benchmark of a (model,
runtime) group, whatever its harness, and the canary share one loaded model.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from evallab.errors import RuntimeLaunchError, SpecError
from evallab.models import ModelArtifact
from evallab.runtimes.base import (
    Capabilities,
    LocalWeights,
    RuntimeInfo,
    expect_spec,
)
from evallab.runtimes.venvs import InstallRecipe
from evallab.spec import BenchmarkSpec, RuntimeSpec, TransformersRuntimeSpec

__all__ = ["TransformersRuntime", "TransformersSession"]


class TransformersSession:
    """A model loaded once in this process and shared by every benchmark of its group."""

    def __init__(self, spec: TransformersRuntimeSpec, model: ModelArtifact) -> None:
        self.spec = spec
        self.model = model
        self.capabilities = Capabilities()
        self._lm: Any = None
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
        """The weights, how they are loaded, and the loaded model."""
        return LocalWeights(
            path=self.model.path,
            dtype=self.spec.dtype,
            device=self.spec.device,
            max_length=self.spec.max_length,
            batch_size=self.spec.batch_size,
            load=self._load,
        )

    def _load(self) -> Any:
        if self._lm is None:
            from lm_eval.models.huggingface import HFLM

            try:
                self._lm = HFLM(
                    pretrained=str(self.model.path),
                    dtype=self.spec.dtype,
                    device=self.spec.device,
                    max_length=self.spec.max_length,
                    batch_size=self.spec.batch_size,
                )
            except Exception as exc:  # transformers raises many kinds on a bad folder
                raise RuntimeLaunchError(
                    f"transformers could not load the model: {type(exc).__name__}: {exc}",
                    value=self.model.path,
                    fix="check the model folder holds config.json, weights and tokenizer files",
                ) from exc
        return self._lm

    def health(self) -> bool:
        return True

    def restart(self) -> None:
        self._lm = None

    def stop(self) -> None:
        self._lm = None

    def log_tail(self, lines: int = 40) -> str:
        """In-process: errors surface as exceptions, there is no server log."""
        return ""

    def __enter__(self) -> TransformersSession:
        # Load now: a model that can't load fails the runtime's start, not its first benchmark.
        self._load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TransformersRuntime:
    """Factory for :class:`TransformersSession`."""

    kind = "transformers"

    @staticmethod
    def install_recipe(version: str, package: str | None = None) -> InstallRecipe | None:
        """Nothing to install: it runs in the lab's own environment."""
        return None

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
