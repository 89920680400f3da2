"""The checks' tests use fake GPUs: the machine's own GPU selection must not leak into them."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_gpu_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sampler and the environment collector read CUDA_VISIBLE_DEVICES by default; a runner
    # with it set (CUDA_VISIBLE_DEVICES=1, or empty to hide its GPUs) would hide fake GPU 0.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
