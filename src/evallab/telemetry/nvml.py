"""NVML readings of a GPU: the real backend over ``pynvml`` and a scripted fake.

Two backends share one interface (:class:`NvmlBackend`): :class:`RealNVML` over ``pynvml``
(the ``nvidia-ml-py`` distribution) and :class:`FakeNVML`, which replays scripted readings so the
sampler and the validity rules can be exercised on machines without a GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from evallab.telemetry.gpu import GpuIdentity, NvmlDevice

__all__ = [
    "SLOWDOWN_REASONS",
    "THROTTLE_BITS",
    "FakeNVML",
    "GpuReading",
    "NvmlBackend",
    "RealNVML",
    "decode_throttle_reasons",
    "fake_uuid",
    "open_nvml",
]

#: NVML clock-event ("throttle") reason bits, named as stored in ``telemetry.throttle_reasons``.
THROTTLE_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}

#: Reasons that mean the GPU ran slower than it should: a run seeing any of them is invalid.
#: (Idle, power cap and application clocks are normal operating states, not faults.)
SLOWDOWN_REASONS: frozenset[str] = frozenset(
    {"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)


def decode_throttle_reasons(mask: int) -> tuple[str, ...]:
    """Names of the reason bits set in an NVML clock-event mask (unknown bits as ``bit_0x..``)."""
    names = [name for bit, name in THROTTLE_BITS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_BITS)
    bit = 1
    while unknown:
        if unknown & bit:
            names.append(f"bit_{bit:#x}")
            unknown &= ~bit
        bit <<= 1
    return tuple(names)


@dataclass(frozen=True)
class GpuReading:
    """One instantaneous NVML reading of one GPU (None where the GPU doesn't report it)."""

    temperature_c: float | None = None
    power_w: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    memory_used_mb: float | None = None
    utilization_pct: float | None = None
    throttle_reasons: tuple[str, ...] = ()
    compute_pids: tuple[int, ...] = ()


class NvmlBackend(Protocol):
    """What the sampler and the environment collector need from NVML."""

    def device_count(self) -> int:
        """Number of GPUs visible."""
        ...

    def gpu_identity(self, index: int = 0) -> GpuIdentity:
        """Name, driver version and CUDA driver version for GPU ``index``."""
        ...

    def list_devices(self) -> Sequence[NvmlDevice]:
        """Every GPU of the machine (index, UUID, MIG instances), in NVML order."""
        ...

    def read(self, index: int) -> GpuReading:
        """One reading of GPU ``index``, including the pids of its compute processes."""
        ...

    def close(self) -> None:
        """Release NVML."""
        ...


def _cuda_version_text(raw: int) -> str:
    # NVML encodes CUDA 12.4 as 12040.
    return f"{raw // 1000}.{(raw % 1000) // 10}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RealNVML:
    """NVML through ``pynvml``. Use :func:`open_nvml`, which returns None without a GPU."""

    def __init__(self) -> None:
        # Imported here: open_nvml() is the only way in and already handles a missing pynvml.
        import pynvml

        self._nv = pynvml
        pynvml.nvmlInit()
        self._lock = threading.Lock()

    def device_count(self) -> int:
        return int(self._nv.nvmlDeviceGetCount())

    def gpu_identity(self, index: int = 0) -> GpuIdentity:
        nv = self._nv
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        return GpuIdentity(
            name=_text(nv.nvmlDeviceGetName(handle)),
            driver=_text(nv.nvmlSystemGetDriverVersion()),
            cuda_version=_cuda_version_text(int(nv.nvmlSystemGetCudaDriverVersion())),
        )

    def list_devices(self) -> list[NvmlDevice]:
        nv = self._nv
        out = []
        with self._lock:
            for index in range(int(nv.nvmlDeviceGetCount())):
                h = nv.nvmlDeviceGetHandleByIndex(index)
                out.append(NvmlDevice(index, _text(nv.nvmlDeviceGetUUID(h)), self._mig_uuids(h)))
        return out

    def _mig_uuids(self, handle: Any) -> tuple[str, ...]:
        nv = self._nv
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
            if current != nv.NVML_DEVICE_MIG_ENABLE:
                return ()
            slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))
        except nv.NVMLError:
            # GeForce cards (and pre-Ampere ones) have no MIG: NotSupported.
            return ()
        uuids = []
        for slot in range(slots):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nv.NVMLError:
                continue  # an empty slot
            uuids.append(_text(nv.nvmlDeviceGetUUID(mig)))
        return tuple(uuids)

    def _maybe(self, fn: Callable[[], Any]) -> Any:
        # Consumer GPUs don't support every query; a missing value is recorded as NULL.
        try:
            return fn()
        except self._nv.NVMLError_NotSupported:
            return None

    def read(self, index: int) -> GpuReading:
        nv = self._nv
        with self._lock:
            h = nv.nvmlDeviceGetHandleByIndex(index)
            temp = self._maybe(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
            power = self._maybe(lambda: nv.nvmlDeviceGetPowerUsage(h))
            sm = self._maybe(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
            mem = self._maybe(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))
            meminfo = self._maybe(lambda: nv.nvmlDeviceGetMemoryInfo(h))
            util = self._maybe(lambda: nv.nvmlDeviceGetUtilizationRates(h))
            mask = self._maybe(lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(h))
            procs = self._maybe(lambda: nv.nvmlDeviceGetComputeRunningProcesses(h)) or []
        return GpuReading(
            temperature_c=float(temp) if temp is not None else None,
            power_w=power / 1000.0 if power is not None else None,
            sm_clock_mhz=float(sm) if sm is not None else None,
            mem_clock_mhz=float(mem) if mem is not None else None,
            memory_used_mb=meminfo.used / 2**20 if meminfo is not None else None,
            utilization_pct=float(util.gpu) if util is not None else None,
            throttle_reasons=decode_throttle_reasons(int(mask)) if mask is not None else (),
            compute_pids=tuple(int(p.pid) for p in procs),
        )

    def close(self) -> None:
        self._nv.nvmlShutdown()


def open_nvml() -> RealNVML | None:
    """The real NVML, or None when there is no NVIDIA driver (CPU machines)."""
    try:
        # Optional at run time: a CPU machine may lack the NVML bindings altogether.
        import pynvml
    except ImportError:
        return None
    try:
        return RealNVML()
    except pynvml.NVMLError:
        # No driver/library: a CPU machine. Telemetry and GPU identity are simply empty there.
        return None


def fake_uuid(index: int) -> str:
    """The UUID :class:`FakeNVML` gives GPU ``index`` (shaped as NVML's)."""
    return f"GPU-{index:08x}-fa4e-4e00-8000-{index:012x}"


@dataclass
class FakeNVML:
    """Scripted NVML for machines without a GPU: each ``read`` returns the next reading.

    Each GPU has its own script (``gpu_readings``, else ``readings``) and position in it; the
    last reading repeats once a script is exhausted.

    Args:
        readings: Readings returned in order, for every GPU without a script of its own.
        identity: What ``gpu_identity`` reports.
        identities: Optional sequence of identities returned by successive ``gpu_identity`` calls
            (to script a driver change mid-campaign); the last one repeats.
        devices: Number of GPUs reported (UUIDs from :func:`fake_uuid`).
        gpu_readings: Scripts of particular GPUs, by NVML index.
        names: GPU names by index, overriding ``identity``'s name.
    """

    readings: Sequence[GpuReading] = (GpuReading(),)
    identity: GpuIdentity = field(
        default_factory=lambda: GpuIdentity("Fake GPU 80GB", "550.54.15", "12.4")
    )
    identities: Sequence[GpuIdentity] = ()
    devices: int = 1
    gpu_readings: Mapping[int, Sequence[GpuReading]] = field(default_factory=dict)
    names: Mapping[int, str] = field(default_factory=dict)
    reads: int = field(default=0, init=False)
    reads_by_gpu: dict[int, int] = field(default_factory=dict, init=False)
    identity_calls: int = field(default=0, init=False)
    closed: bool = field(default=False, init=False)

    def _check(self, index: int) -> None:
        if not 0 <= index < self.devices:
            # Real NVML raises NVMLError_InvalidArgument: a caller reading a GPU it doesn't have.
            raise ValueError(f"FakeNVML has {self.devices} GPU(s), no index {index}")

    def device_count(self) -> int:
        return self.devices

    def list_devices(self) -> list[NvmlDevice]:
        return [NvmlDevice(i, fake_uuid(i)) for i in range(self.devices)]

    def gpu_identity(self, index: int = 0) -> GpuIdentity:
        self._check(index)
        if self.identities:
            ident = self.identities[min(self.identity_calls, len(self.identities) - 1)]
        else:
            ident = self.identity
        self.identity_calls += 1
        if index in self.names:
            ident = GpuIdentity(self.names[index], ident.driver, ident.cuda_version)
        return ident

    def read(self, index: int) -> GpuReading:
        self._check(index)
        script = self.gpu_readings.get(index, self.readings)
        self.reads += 1
        if not script:
            return GpuReading()
        done = self.reads_by_gpu.get(index, 0)
        self.reads_by_gpu[index] = done + 1
        return script[min(done, len(script) - 1)]

    def close(self) -> None:
        self.closed = True
