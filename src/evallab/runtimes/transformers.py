"""In-process Hugging Face transformers (lm-eval's ``hf`` model): the CPU default runtime."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from evallab.errors import RuntimeLaunchError, SpecError
from evallab.models import ModelArtifact
from evallab.runtimes.base import LmEvalModel, RuntimeInfo
from evallab.spec import BenchmarkSpec, RuntimeSpec, TransformersRuntimeSpec

__all__ = ["TransformersRuntime", "TransformersSession"]


class TransformersSession:
    """A model loaded once in this process and shared by every benchmark of its group."""

    def __init__(self, spec: TransformersRuntimeSpec, model: ModelArtifact) -> None:
        self.spec = spec
        self.model = model
        self._lm: Any = None
        self.info = RuntimeInfo(
            kind="transformers",
            label=spec.display,
            version=metadata.version("transformers"),
            command=f"in-process lm_eval hf pretrained={model.path} dtype={spec.dtype} "
            f"device={spec.device}",
        )

    def _model_args(self) -> dict[str, Any]:
        return {
            "pretrained": str(self.model.path),
            "dtype": self.spec.dtype,
            "device": self.spec.device,
            "max_length": self.spec.max_length,
        }

    def _load(self) -> Any:
        if self._lm is None:
            from lm_eval.models.huggingface import HFLM

            try:
                self._lm = HFLM(**self._model_args(), batch_size=self.spec.batch_size)
            except Exception as exc:  # transformers raises many kinds on a bad folder
                raise RuntimeLaunchError(
                    f"transformers could not load the model: {type(exc).__name__}: {exc}",
                    value=self.model.path,
                    fix="check the model folder holds config.json, weights and tokenizer files",
                ) from exc
        return self._lm

    def lm_eval_model(self, benchmark: BenchmarkSpec) -> LmEvalModel:
        return LmEvalModel("hf", self._model_args(), self.spec.batch_size, instance=self._load())

    def health(self) -> bool:
        return True

    def restart(self) -> None:
        self._lm = None

    def stop(self) -> None:
        self._lm = None

    def __enter__(self) -> TransformersSession:
        self._load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TransformersRuntime:
    """Factory for :class:`TransformersSession`."""

    kind = "transformers"

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        if not isinstance(spec, TransformersRuntimeSpec):
            raise SpecError(
                "runtime spec is not a transformers spec", value=spec, fix="use kind: transformers"
            )
        if model.gguf_path is not None:
            raise SpecError(
                f"model {model.name!r} is a GGUF file; the transformers runtime serves HF folders",
                value=model.gguf_path,
                fix="serve GGUF models with kind: llamacpp",
            )

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> TransformersSession:
        if not isinstance(spec, TransformersRuntimeSpec):
            raise SpecError(
                "runtime spec is not a transformers spec", value=spec, fix="use kind: transformers"
            )
        return TransformersSession(spec, model)
