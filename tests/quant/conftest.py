"""Fixtures for GGUF tests: an F16 export of the tiny model, llama.cpp's quantizer.

The quantizer comes from an installed llama.cpp runtime virtualenv (``evallab runtime install
llamacpp==VERSION``), found in ``EVALLAB_RUNTIMES_DIR`` (default ``<repo>/.venvs/runtimes``).
Without one, tests that need it skip locally and fail in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evallab.models import folder_sha256
from evallab.quant import LlamaCppQuantizer

REPO = Path(__file__).resolve().parents[2]
# Set at import time: the session's lab_home fixture moves EVALLAB_HOME to a temp folder, and the
# runtime virtualenvs must still be found where they were installed.
os.environ.setdefault("EVALLAB_RUNTIMES_DIR", str(REPO / ".venvs" / "runtimes"))


@pytest.fixture
def gguf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lab home of the test's own, so cached GGUF files never leak between tests."""
    home = tmp_path / "home"
    monkeypatch.setenv("EVALLAB_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_sha(tiny_model: Path) -> str:
    """Content hash of the tiny model's folder (the GGUF cache key)."""
    return folder_sha256(tiny_model)


@pytest.fixture(scope="session")
def llamacpp_quantizer() -> LlamaCppQuantizer:
    """llama.cpp's quantizer from the newest installed llama.cpp runtime."""
    from evallab.runtimes.venvs import list_installed, runtimes_dir

    found = [r for r in list_installed() if r.kind == "llamacpp" and r.exists()]
    if not found:
        missing = (
            f"no llama.cpp runtime is installed in {runtimes_dir()}: install one with "
            "`evallab runtime install llamacpp==0.3.36` (or set EVALLAB_RUNTIMES_DIR)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{missing}. CI must run the quantization tests.", pytrace=False)
        pytest.skip(missing)
    newest = max(found, key=lambda r: tuple(int(p) for p in r.version.split(".") if p.isdigit()))
    return LlamaCppQuantizer.from_runtime(newest)
