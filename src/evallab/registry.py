"""Lazily imported registries: a name -> ``"module:attribute"`` table and its instances.

Runtimes and harnesses register by name; a module is imported only when its name is used, so
heavy dependencies (torch, lm-eval) load only for what a campaign runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Generic, TypeVar

from evallab.errors import SpecError

__all__ = ["LazyRegistry"]

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    """Names mapped to classes imported on first use.

    Args:
        what: What a name stands for, in words (``"runtime kind"``), for the unknown-name error.
        targets: Name -> ``"module:attribute"`` of a class taking no arguments.
    """

    def __init__(self, what: str, targets: Mapping[str, str]) -> None:
        self._what = what
        self._targets = dict(targets)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._targets)

    def create(self, name: str) -> T:
        """Instantiate the class registered as ``name``.

        Raises:
            SpecError: nothing is registered under that name (the error lists what is).
        """
        target = self._targets.get(name)
        if target is None:
            raise SpecError(
                f"unknown {self._what}", value=name, fix=f"use one of {', '.join(self.names())}"
            )
        module, attr = target.split(":")
        instance: T = getattr(importlib.import_module(module), attr)()
        return instance
