"""Which GPUs a process uses: CUDA_VISIBLE_DEVICES mapped to NVML indices, and their GPU slots."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest

import evallab.telemetry.devices as devices_module
from evallab.telemetry.devices import (
    VisibleGpus,
    gpu_slot_name,
    gpu_slot_names,
    parse_visible_devices,
    visible_gpus,
)
from evallab.telemetry.gpu import NvmlDevice
from evallab.telemetry.nvml import FakeNVML, RealNVML, fake_uuid

U0 = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
U1 = "GPU-8932aa11-0000-4106-c12f-000000000001"
U2 = "GPU-5c0ffee0-1111-2222-3333-444444444444"
MIG_A = "MIG-1d4c8e0a-2b3c-5d6e-8f90-a1b2c3d4e5f6"
MIG_B = "MIG-99887766-5544-3322-1100-ffeeddccbbaa"
# Three GPUs in NVML (PCI bus) order; GPU 2 is split into two MIG instances.
BOX = (
    NvmlDevice(0, U0),
    NvmlDevice(1, U1),
    NvmlDevice(2, U2, (MIG_A, MIG_B)),
)


@pytest.mark.parametrize(
    ("value", "indices", "ignored"),
    [
        (None, (0, 1, 2), ()),  # unset: every GPU
        ("", (), ()),  # empty: none
        ("  ", (), ()),
        ("0", (0,), ()),
        ("1", (1,), ()),
        ("0,1", (0, 1), ()),
        ("1,0", (1, 0), ()),  # CUDA's order is the list's: CUDA device 0 is NVML GPU 1
        (" 0 , 2 ", (0, 2), ()),
        ("2,2,0", (2, 0), ()),  # a GPU named twice is used once
        ("0,2,-1,1", (0, 2), ("-1", "1")),  # the first invalid entry ends the list (CUDA docs)
        ("-1", (), ("-1",)),  # the usual way to hide every GPU
        ("3", (), ("3",)),  # no such GPU
        ("0,7,1", (0,), ("7", "1")),
        ("0,,1", (0,), ("1",)),
        ("nope", (), ("nope",)),
        (U1, (1,), ()),  # full UUID
        (U1.upper().replace("GPU-", "gpu-"), (1,), ()),  # case doesn't matter
        ("GPU-5c0f", (2,), ()),  # a prefix naming one GPU
        ("GPU-8932", (), ("GPU-8932",)),  # a prefix of two GPUs names none
        ("GPU-8932f", (0,), ()),
        (f"{U2},0", (2, 0), ()),  # UUIDs and indices mixed
        ("GPU-deadbeef", (), ("GPU-deadbeef",)),
        (MIG_B, (2,), ()),  # a MIG instance uses its parent GPU
        (MIG_A[:12], (2,), ()),
        (f"MIG-{U2}/1/0", (2,), ()),  # the pre-R470 form
        (f"MIG-{U0}/0/0", (0,), ()),
        (f"{MIG_A},{MIG_B}", (2,), ()),
        ("MIG-00000000", (), ("MIG-00000000",)),
    ],
)
def test_cuda_visible_devices_maps_to_nvml_indices(
    value: str | None, indices: tuple[int, ...], ignored: tuple[str, ...]
) -> None:
    seen = parse_visible_devices(value, BOX)
    assert (seen.indices, seen.ignored) == (indices, ignored)


def test_index_entries_are_flagged_for_the_device_order_warning() -> None:
    assert parse_visible_devices("0,1", BOX).by_index
    assert parse_visible_devices(f"{U0},1", BOX).by_index
    assert not parse_visible_devices(f"{U0},{U1}", BOX).by_index
    assert not parse_visible_devices(None, BOX).by_index
    assert parse_visible_devices("0", ()) == VisibleGpus((), ("0",), False)  # no GPU at all


def test_visible_gpus_reads_the_environment_and_warns_once_about_device_order(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices_module, "_warned_order", False)
    two = FakeNVML(devices=2)
    caplog.set_level(logging.WARNING, logger="evallab.telemetry.devices")
    assert visible_gpus(two, {"CUDA_VISIBLE_DEVICES": "1"}) == (1,)
    assert visible_gpus(two, {"CUDA_VISIBLE_DEVICES": "0,1"}) == (0, 1)
    order = [r for r in caplog.records if "CUDA_DEVICE_ORDER" in r.message]
    assert len(order) == 1 and "2 GPUs" in order[0].message
    caplog.clear()
    monkeypatch.setattr(devices_module, "_warned_order", False)
    env = {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert visible_gpus(two, env) == (1,)
    assert visible_gpus(FakeNVML(devices=1), {"CUDA_VISIBLE_DEVICES": "0"}) == (0,)
    assert visible_gpus(two, {"CUDA_VISIBLE_DEVICES": fake_uuid(1)}) == (1,)
    assert visible_gpus(two, {}) == (0, 1)
    assert not caplog.records  # PCI order set, one GPU, UUIDs or unset: nothing to warn about
    assert visible_gpus(two, {**env, "CUDA_VISIBLE_DEVICES": "0,5"}) == (0,)
    [bad] = caplog.records
    assert "5 name no GPU" in bad.message and fake_uuid(1) in bad.message
    assert visible_gpus(None, {"CUDA_VISIBLE_DEVICES": "0"}) == ()  # no NVML, no GPU


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("0", ["gpu-box-0"]),
        ("1", ["gpu-box-1"]),
        ("0,1", ["gpu-box-0", "gpu-box-1"]),  # one limit per GPU, not one for the pair
        ("1,0", ["gpu-box-0", "gpu-box-1"]),  # the same order for every flow: no deadlock
        (None, ["gpu-box-0", "gpu-box-1", "gpu-box-2"]),  # sees every GPU, takes every slot
        ("", ["gpu-box-none"]),
        (U1, ["gpu-box-1"]),  # a UUID takes its GPU's slot, as its index would
        (f"MIG-{U2}/1/0", ["gpu-box-2"]),
        (f"{MIG_A},{MIG_B}", ["gpu-box-2"]),
    ],
)
def test_a_flow_takes_the_slot_of_every_gpu_it_sees(value: str | None, names: list[str]) -> None:
    assert gpu_slot_names(value, BOX, host="Box") == names


def test_a_pair_worker_and_a_single_gpu_worker_share_a_slot() -> None:
    pair = set(gpu_slot_names("0,1", BOX, host="box"))
    assert pair & set(gpu_slot_names("0", BOX, host="box")) == {"gpu-box-0"}
    assert pair & set(gpu_slot_names("1", BOX, host="box")) == {"gpu-box-1"}
    assert not set(gpu_slot_names("2", BOX, host="box")) & pair


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (None, ["gpu-h-0"]),  # without NVML: unset is GPU 0, as before
        ("", ["gpu-h-none"]),
        ("1", ["gpu-h-1"]),
        ("1,0", ["gpu-h-0", "gpu-h-1"]),
        ("10,2", ["gpu-h-2", "gpu-h-10"]),  # sorted by index, not as text
        ("sigkill", ["gpu-h-sigkill"]),  # any entry stands for a GPU as written
    ],
)
def test_without_nvml_each_entry_is_a_gpu(value: str | None, names: list[str]) -> None:
    assert gpu_slot_names(value, None, host="h") == names


def test_slot_names_are_prefect_safe() -> None:
    assert gpu_slot_name(0, "Lab_Box.local") == "gpu-lab-box-local-0"
    assert gpu_slot_name("MIG/1", "h") == "gpu-h-mig-1"


class _NvmlError(Exception):
    pass


class _NotSupported(_NvmlError):
    pass


def _stub_pynvml() -> types.ModuleType:
    """pynvml as a two-GPU machine answers: a GeForce card without MIG, an H100 split in two."""
    nv = types.ModuleType("pynvml")
    migs = {1: ["MIG-aaaa0000-0000-0000-0000-000000000000", None, MIG_B]}
    values: dict[str, Any] = {
        "NVMLError": _NvmlError,
        "NVMLError_NotSupported": _NotSupported,
        "NVML_DEVICE_MIG_ENABLE": 1,
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": lambda i: ("gpu", i),
        "nvmlDeviceGetUUID": lambda h: U0 if h == ("gpu", 0) else U1 if h[0] == "gpu" else h[1],
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 3,
    }

    def mig_mode(handle: tuple[str, int]) -> tuple[int, int]:
        if handle[1] == 0:
            raise _NotSupported()
        return (1, 1)

    def mig_handle(handle: tuple[str, int], slot: int) -> tuple[str, str]:
        uuid = migs[handle[1]][slot]
        if uuid is None:
            raise _NvmlError("not found")  # an empty slot
        return ("mig", uuid)

    values |= {
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
    }
    for name, value in values.items():
        setattr(nv, name, value)
    return nv


def test_real_backend_lists_uuids_and_mig_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _stub_pynvml())
    listed = RealNVML().list_devices()
    assert listed == [
        NvmlDevice(0, U0),
        NvmlDevice(1, U1, ("MIG-aaaa0000-0000-0000-0000-000000000000", MIG_B)),
    ]
    assert parse_visible_devices(MIG_B, listed).indices == (1,)
    assert gpu_slot_names(MIG_B, listed, host="h") == ["gpu-h-1"]
