"""Offline runs: `evallab run --offline` checks everything up front; `evallab prefetch` fetches it.

Real parts: the Hugging Face cache (a temporary folder), huggingface_hub's downloader against a
real HTTP server on loopback (``tests/flows/fake_hub.py``), a closed loopback port for "the hub
is down", and the CLI through its own error handling.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from evallab.offline import OFFLINE_ENV
from evallab.runtimes.process import free_port
from tests.cli_inproc import cli, one_paragraph_error
from tests.flows.fake_hub import FakeHub, fake_hub
from tests.helpers import REPO

SHA = "0123456789abcdef0123456789abcdef01234567"
DEMO = REPO / "deployments" / "demo.yaml"


@pytest.fixture(autouse=True)
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and lab home; offline settings restored after the test."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for var in (*OFFLINE_ENV, "HF_TOKEN", "EVALLAB_RUNTIMES_DIR", "EVALLAB_RUNS_DIR"):
        # Set, then removed: monkeypatch then restores the original (or its absence) afterwards,
        # also for the variables `--offline` sets.
        monkeypatch.setenv(var, "0")
        monkeypatch.delenv(var)
    monkeypatch.setenv("EVALLAB_HOME", str(tmp_path / "home"))
    return cache


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with fake_hub() as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        yield running


def hub_campaign(tmp_path: Path, runtimes: str = "") -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(
        f"name: hubby\ntasks_dir: {REPO / 'tasks_custom'}\n"
        f"models:\n  - {{name: m, source: hf, repo: org/model, revision: {SHA}}}\n"
        f"{runtimes}benchmarks:\n  - {{name: b, tasks: [demo_mc]}}\n"
    )
    return path


def test_the_demo_campaign_passes_the_offline_check(tmp_path: Path) -> None:
    rc, out = cli(["run", "--offline", "--check", str(DEMO)])
    assert rc == 0, out
    assert "offline: everything this campaign needs is here" in out
    assert "campaign demo is valid: 2 model(s) x 1 runtime(s) x 1 benchmark(s) = 2 run(s)" in out
    # --offline set the variables the Hugging Face libraries read.
    assert all(os.environ[var] == "1" for var in OFFLINE_ENV)
    assert not (tmp_path / "home").exists()  # nothing was built, run or written


def test_everything_missing_is_listed_in_one_message(tmp_path: Path) -> None:
    runtimes = "runtimes:\n  - {kind: vllm, version: 0.0.1}\n"
    path = hub_campaign(tmp_path, runtimes)
    rc, out = cli(["run", "--offline", str(path)])
    assert rc == 2
    text = one_paragraph_error(out)
    assert "2 thing(s) this offline run needs are not on this machine" in text
    assert f"model m (org/model@{SHA})" in text and "runtime vllm==0.0.1" in text
    assert f"`evallab prefetch {path}`" in text
    assert not (tmp_path / "home" / "runs").exists()


def test_prefetch_of_what_is_local_does_nothing(tmp_path: Path) -> None:
    rc, out = cli(["prefetch", str(DEMO)])
    assert rc == 0, out
    assert "nothing to fetch" in out and f"`evallab run --offline {DEMO}`" in out
    assert not (tmp_path / "home").exists()


def test_prefetch_downloads_the_pinned_snapshot_then_offline_passes(
    tmp_path: Path, hub: FakeHub, hub_env: Path
) -> None:
    hub.push("org/model", SHA, {"config.json": b"{}", "model.safetensors": b"weights"})
    path = hub_campaign(tmp_path)
    rc, out = cli(["prefetch", str(path)])
    assert rc == 0, out
    assert "fetched" in out and f"org/model@{SHA}" in out
    snapshot = hub_env / "models--org--model" / "snapshots" / SHA
    assert (snapshot / "model.safetensors").read_bytes() == b"weights"
    # A second prefetch finds it present and asks the hub nothing.
    asked = len(hub.requests)
    rc, out = cli(["prefetch", str(path)])
    assert rc == 0 and "present" in out and len(hub.requests) == asked
    rc, out = cli(["run", "--offline", "--check", str(path)])
    assert rc == 0, out


def test_prefetch_with_the_hub_down_is_one_paragraph_naming_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    rc, out = cli(["prefetch", str(hub_campaign(tmp_path))])
    assert rc == 2
    text = one_paragraph_error(out)
    assert f"the Hugging Face hub at {url} can't be reached" in text and "org/model" in text
