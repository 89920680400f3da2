"""Which GPUs a run uses: ``CUDA_VISIBLE_DEVICES`` mapped to NVML's indices.

NVML (and ``nvidia-smi``, and the ``gpu_index`` of stored telemetry) numbers every GPU of the
machine in PCI bus order and ignores ``CUDA_VISIBLE_DEVICES``. A run uses the GPUs its process
(and the runtime servers it starts, which inherit the environment) can see:

* unset: every GPU NVML lists;
* empty: none;
* a comma-separated list of integer indices, GPU UUIDs (``GPU-8932f937-...``, or a prefix naming
  one GPU) or MIG instances (``MIG-<uuid>`` or ``MIG-GPU-<uuid>/<gi>/<ci>``, which use their
  parent GPU). As CUDA does, the first entry that names no GPU ends the list.

An integer index is CUDA's, which is NVML's only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``: CUDA's
default order puts the fastest GPU first. The lab assumes PCI bus order and warns once when a
machine with several GPUs selects them by index without it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evallab.telemetry.gpu import GpuIdentitySource, NvmlDevice

__all__ = [
    "VisibleGpus",
    "gpu_slot_name",
    "gpu_slot_names",
    "parse_visible_devices",
    "visible_gpus",
]

log = logging.getLogger(__name__)

_INDEX = re.compile(r"\d+")
_warned_order = False


@dataclass(frozen=True)
class VisibleGpus:
    """The GPUs a process sees, as NVML indices.

    Attributes:
        indices: NVML indices in the order CUDA numbers them (CUDA device 0 first).
        ignored: Entries CUDA ignores: the first one that names no GPU, and all after it.
        by_index: Whether any entry was an integer index (whose meaning depends on
            ``CUDA_DEVICE_ORDER``).
    """

    indices: tuple[int, ...]
    ignored: tuple[str, ...] = ()
    by_index: bool = False


def _by_uuid_prefix(token: str, uuids: Mapping[str, int]) -> int | None:
    """The GPU whose UUID is ``token`` or starts with it (one match only, as CUDA requires)."""
    token = token.lower()
    if token in uuids:
        return uuids[token]
    found = {index for uuid, index in uuids.items() if uuid.startswith(token)}
    return found.pop() if len(found) == 1 else None


def _resolve(token: str, devices: Sequence[NvmlDevice]) -> int | None:
    """The NVML index ``token`` names, None when it names no GPU."""
    if _INDEX.fullmatch(token):
        index = int(token)
        return index if any(d.index == index for d in devices) else None
    upper = token.upper()
    if upper.startswith("GPU-"):
        return _by_uuid_prefix(token, {d.uuid.lower(): d.index for d in devices})
    if upper.startswith("MIG-GPU-"):
        # The pre-R470 form names the parent GPU and the instance: MIG-GPU-<uuid>/<gi>/<ci>.
        parent = token[len("MIG-") :].split("/", 1)[0]
        return _by_uuid_prefix(parent, {d.uuid.lower(): d.index for d in devices})
    if upper.startswith("MIG-"):
        migs = {m.lower(): d.index for d in devices for m in d.mig_uuids}
        return _by_uuid_prefix(token, migs)
    return None


def parse_visible_devices(value: str | None, devices: Sequence[NvmlDevice]) -> VisibleGpus:
    """The NVML indices of the GPUs a process with ``CUDA_VISIBLE_DEVICES=value`` sees.

    Args:
        value: ``CUDA_VISIBLE_DEVICES`` (None when unset).
        devices: Every GPU of the machine, from NVML.

    Returns:
        The visible GPUs in CUDA's order; a GPU named twice (or through two of its MIG
        instances) counts once.
    """
    if value is None:
        return VisibleGpus(tuple(sorted(d.index for d in devices)))
    tokens = [t.strip() for t in value.split(",")]
    if tokens == [""]:
        return VisibleGpus(())
    indices: list[int] = []
    by_index = False
    for n, token in enumerate(tokens):
        index = _resolve(token, devices)
        if index is None:
            return VisibleGpus(tuple(indices), tuple(t for t in tokens[n:] if t), by_index)
        by_index = by_index or bool(_INDEX.fullmatch(token))
        if index not in indices:
            indices.append(index)
    return VisibleGpus(tuple(indices), (), by_index)


def visible_gpus(
    source: GpuIdentitySource | None, environ: Mapping[str, str] | None = None
) -> tuple[int, ...]:
    """NVML indices of the GPUs this process sees (CUDA's order); none without NVML.

    Logs a warning for entries of ``CUDA_VISIBLE_DEVICES`` that name no GPU, and once per
    process when several GPUs are selected by index without ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.

    Args:
        source: The NVML backend (None on machines without a GPU).
        environ: The environment to read (default: this process's).
    """
    global _warned_order
    if source is None:
        return ()
    env = os.environ if environ is None else environ
    devices = source.list_devices()
    seen = parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES"), devices)
    if seen.ignored:
        log.warning(
            "CUDA_VISIBLE_DEVICES=%s: %s name no GPU of this machine (NVML lists %s); CUDA "
            "ignores them and every entry after the first",
            env.get("CUDA_VISIBLE_DEVICES"),
            ", ".join(seen.ignored),
            ", ".join(f"{d.index} {d.uuid}" for d in devices) or "none",
        )
    if (
        seen.by_index
        and len(devices) > 1
        and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID"
        and not _warned_order
    ):
        _warned_order = True
        log.warning(
            "CUDA_DEVICE_ORDER is not PCI_BUS_ID on a machine with %d GPUs: CUDA may number "
            "them fastest first, unlike NVML; the lab reads CUDA_VISIBLE_DEVICES=%s as NVML "
            "indices. Set CUDA_DEVICE_ORDER=PCI_BUS_ID for the lab and its workers.",
            len(devices),
            env.get("CUDA_VISIBLE_DEVICES"),
        )
    return seen.indices


def gpu_slot_name(device: str | int, host: str | None = None) -> str:
    """The name of the one-slot Prefect concurrency limit of one GPU: ``gpu-<host>-<device>``.

    Args:
        device: The GPU's NVML index (or, on a machine without NVML, the entry of
            ``CUDA_VISIBLE_DEVICES`` standing for it).
        host: The host name (default: this machine's).
    """
    raw = f"gpu-{host or socket.gethostname()}-{device}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")


def _token_order(token: str) -> tuple[int, int, str]:
    return (0, int(token), "") if _INDEX.fullmatch(token) else (1, 0, token)


def gpu_slot_names(
    value: str | None, devices: Sequence[NvmlDevice] | None, host: str | None = None
) -> list[str]:
    """The concurrency limits a flow with ``CUDA_VISIBLE_DEVICES=value`` takes: one per GPU.

    Sorted by GPU index, so any two flows take their limits in the same order. Without NVML
    (``devices`` None: a machine without a driver, and the tests) each entry of ``value`` stands
    for a GPU as written (unset is ``0``). A flow that sees no GPU takes ``gpu-<host>-none``.

    Args:
        value: ``CUDA_VISIBLE_DEVICES`` (None when unset).
        devices: Every GPU of the machine from NVML, None without NVML.
        host: The host name (default: this machine's).
    """
    if devices is None:
        tokens = {t.strip() for t in ("0" if value is None else value).split(",")} - {""}
        names = [str(t) for t in sorted(tokens, key=_token_order)]
    else:
        names = [str(i) for i in sorted(parse_visible_devices(value, devices).indices)]
    return [gpu_slot_name(n, host) for n in names] or [gpu_slot_name("none", host)]
