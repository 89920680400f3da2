"""Which GPUs and driver stack a run uses.

Both :mod:`evallab.environment` (a run's provenance) and the NVML backends
(:mod:`evallab.telemetry.nvml`) need these types; they live here, importing nothing else of the
lab, so neither of those modules has to import the other's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["GpuIdentity", "GpuIdentitySource", "NvmlDevice", "combined_identity"]


@dataclass(frozen=True)
class GpuIdentity:
    """Which GPU and driver stack a run uses (empty strings on machines without one)."""

    name: str = ""
    driver: str = ""
    cuda_version: str = ""


@dataclass(frozen=True)
class NvmlDevice:
    """One physical GPU as NVML enumerates it (PCI bus order).

    Attributes:
        index: NVML's index (what ``nvidia-smi`` shows, and ``gpu_index`` in telemetry).
        uuid: ``GPU-xxxxxxxx-...``, what ``CUDA_VISIBLE_DEVICES`` may name instead of an index.
        mig_uuids: UUIDs of its MIG instances (``MIG-...``), empty without MIG.
    """

    index: int
    uuid: str
    mig_uuids: tuple[str, ...] = ()


class GpuIdentitySource(Protocol):
    """Anything that can say which GPUs there are (the NVML backends in :mod:`.nvml`)."""

    def gpu_identity(self, index: int = 0) -> GpuIdentity:
        """Name, driver and CUDA driver version of GPU ``index``."""
        ...

    def list_devices(self) -> Sequence[NvmlDevice]:
        """Every GPU of the machine, in NVML order."""
        ...


def combined_identity(source: GpuIdentitySource, indices: Sequence[int]) -> GpuIdentity:
    """One identity for the GPUs a run uses, as recorded in its provenance.

    The name lists every GPU in the order the run's CUDA numbers them, joined with ``" + "``
    (``"NVIDIA GeForce RTX 3090 + NVIDIA GeForce RTX 3090"``), so a tensor-parallel run never
    reads as a single-GPU one; one GPU keeps its plain name. Driver and CUDA versions are the
    machine's (NVML reports one of each), read from the first GPU.

    Args:
        source: Where identities come from.
        indices: NVML indices of the GPUs the run uses; none gives an empty identity.
    """
    if not indices:
        return GpuIdentity()
    idents = [source.gpu_identity(i) for i in indices]
    first = idents[0]
    return GpuIdentity(" + ".join(i.name for i in idents), first.driver, first.cuda_version)
