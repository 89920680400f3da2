"""Harness registry: harness name -> Harness implementation (imported lazily)."""

from __future__ import annotations

import importlib

from evallab.errors import SpecError
from evallab.harnesses.base import (
    Harness,
    HarnessRequest,
    HarnessResult,
    SampleOutcome,
    ScoreRow,
)

__all__ = [
    "Harness",
    "HarnessRequest",
    "HarnessResult",
    "SampleOutcome",
    "ScoreRow",
    "get_harness",
    "known_harnesses",
]

_REGISTRY: dict[str, str] = {
    "lm_eval": "evallab.harnesses.lm_eval:LmEvalHarness",
    "code": "evallab.harnesses.code:CodeHarness",
}


def known_harnesses() -> list[str]:
    """Names of every registered harness."""
    return sorted(_REGISTRY)


def get_harness(name: str) -> Harness:
    """Instantiate the harness registered as ``name``.

    Raises:
        SpecError: no harness has that name.
    """
    target = _REGISTRY.get(name)
    if target is None:
        raise SpecError(
            "unknown harness", value=name, fix=f"use one of {', '.join(known_harnesses())}"
        )
    module, attr = target.split(":")
    harness: Harness = getattr(importlib.import_module(module), attr)()
    return harness
