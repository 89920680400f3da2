"""Harness registry: harness name -> Harness implementation (imported lazily)."""

from __future__ import annotations

from evallab.harnesses.base import (
    Harness,
    HarnessRequest,
    HarnessResult,
    SampleOutcome,
    ScoreRow,
)
from evallab.registry import LazyRegistry

__all__ = [
    "Harness",
    "HarnessRequest",
    "HarnessResult",
    "SampleOutcome",
    "ScoreRow",
    "get_harness",
    "known_harnesses",
]

_REGISTRY: LazyRegistry[Harness] = LazyRegistry(
    "harness",
    {
        "lm_eval": "evallab.harnesses.lm_eval:LmEvalHarness",
        "code": "evallab.harnesses.code:CodeHarness",
    },
)


def known_harnesses() -> list[str]:
    """Names of every registered harness."""
    return _REGISTRY.names()


def get_harness(name: str) -> Harness:
    """Instantiate the harness registered as ``name``.

    Raises:
        SpecError: no harness has that name.
    """
    return _REGISTRY.create(name)
