"""Runtime registry: kind name -> Runtime implementation (imported lazily).

An unknown kind lists the known ones.
"""

from __future__ import annotations

from evallab.registry import LazyRegistry
from evallab.runtimes.base import (
    Capabilities,
    ClientSettings,
    Endpoint,
    LocalWeights,
    Runtime,
    RuntimeInfo,
    RuntimeSession,
)

__all__ = [
    "Capabilities",
    "ClientSettings",
    "Endpoint",
    "LocalWeights",
    "Runtime",
    "RuntimeInfo",
    "RuntimeSession",
    "get_runtime",
    "known_runtimes",
]

# Modules import heavy dependencies only when used.
_REGISTRY: LazyRegistry[Runtime] = LazyRegistry(
    "runtime kind",
    {
        "transformers": "evallab.runtimes.transformers:TransformersRuntime",
        "vllm": "evallab.runtimes.vllm:VLLMRuntime",
        "llamacpp": "evallab.runtimes.llamacpp:LlamaCppRuntime",
        "sglang": "evallab.runtimes.sglang:SGLangRuntime",
        "openai-endpoint": "evallab.runtimes.openai_endpoint:OpenAIEndpointRuntime",
    },
)


def known_runtimes() -> list[str]:
    """Names of every registered runtime kind."""
    return _REGISTRY.names()


def get_runtime(kind: str) -> Runtime:
    """Instantiate the runtime registered as ``kind``.

    Raises:
        SpecError: no runtime has that name.
    """
    return _REGISTRY.create(kind)
