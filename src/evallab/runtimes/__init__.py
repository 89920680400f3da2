"""Runtime registry: kind name -> Runtime implementation (imported lazily).

An unknown kind lists the known ones.
"""

from __future__ import annotations

import importlib

from evallab.errors import SpecError
from evallab.runtimes.base import LmEvalModel, Runtime, RuntimeInfo, RuntimeSession

__all__ = [
    "LmEvalModel",
    "Runtime",
    "RuntimeInfo",
    "RuntimeSession",
    "get_runtime",
    "known_runtimes",
]

# kind -> "module:attribute"; modules import heavy dependencies only when used.
_REGISTRY: dict[str, str] = {
    "transformers": "evallab.runtimes.transformers:TransformersRuntime",
    "vllm": "evallab.runtimes.vllm:VLLMRuntime",
    "llamacpp": "evallab.runtimes.llamacpp:LlamaCppRuntime",
    "sglang": "evallab.runtimes.sglang:SGLangRuntime",
    "openai-endpoint": "evallab.runtimes.openai_endpoint:OpenAIEndpointRuntime",
}


def known_runtimes() -> list[str]:
    """Names of every registered runtime kind."""
    return sorted(_REGISTRY)


def get_runtime(kind: str) -> Runtime:
    """Instantiate the runtime registered as ``kind``.

    Raises:
        SpecError: no runtime has that name.
    """
    target = _REGISTRY.get(kind)
    if target is None:
        raise SpecError(
            "unknown runtime kind", value=kind, fix=f"use one of {', '.join(known_runtimes())}"
        )
    module, attr = target.split(":")
    cls = getattr(importlib.import_module(module), attr)
    runtime: Runtime = cls()
    return runtime
