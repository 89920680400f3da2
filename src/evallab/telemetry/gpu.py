"""Which GPU and driver stack a run uses.

Both :mod:`evallab.environment` (a run's provenance) and the NVML backends
(:mod:`evallab.telemetry.nvml`) need these types; they live here, importing nothing else of the
lab, so neither of those modules has to import the other's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["GpuIdentity", "GpuIdentitySource"]


@dataclass(frozen=True)
class GpuIdentity:
    """Which GPU and driver stack a run uses (empty strings on machines without one)."""

    name: str = ""
    driver: str = ""
    cuda_version: str = ""


class GpuIdentitySource(Protocol):
    """Anything that can say which GPU is in use (the NVML backends in :mod:`.nvml`)."""

    def gpu_identity(self, index: int = 0) -> GpuIdentity:
        """Name, driver and CUDA driver version of GPU ``index``."""
        ...
