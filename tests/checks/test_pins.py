"""Pins: unpinned revisions, dataset revisions, runtime version mismatches, mid-campaign changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants

from evallab.environment import collect_environment, env_fingerprint
from evallab.errors import EnvironmentChangedError, PinError
from evallab.pins import recheck_versions, snapshot_versions, verify_pins
from evallab.spec import CampaignSpec
from evallab.telemetry.gpu import GpuIdentity
from evallab.telemetry.nvml import FakeNVML

SHA = "0123456789abcdef0123456789abcdef01234567"
DATA_SHA = "89abcdef0123456789abcdef0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache whose `main` refs point at known commits."""
    cache = tmp_path / "hub"
    for kind, repo, sha in (("models", "org/model", SHA), ("datasets", "org/data", DATA_SHA)):
        refs = cache / f"{kind}--{repo.replace('/', '--')}" / "refs"
        refs.mkdir(parents=True)
        (refs / "main").write_text(sha)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def campaign(
    revision: str,
    *,
    allow: bool = False,
    tasks: str = "demo_mc",
    tasks_dir: Path | None = None,
    runtimes: list[dict[str, Any]] | None = None,
) -> Any:
    raw: dict[str, Any] = {
        "name": "pins",
        "allow_unpinned": allow,
        "tasks_dir": str(tasks_dir or REPO / "tasks_custom"),
        "models": [{"name": "m", "source": "hf", "repo": "org/model", "revision": revision}],
        "benchmarks": [{"name": "b", "tasks": [tasks]}],
    }
    if runtimes:
        raw["runtimes"] = runtimes
    return CampaignSpec.model_validate(raw)


HARNESS = {"lm_eval": ("0.4.13", "")}


def test_branch_revision_is_resolved_recorded_and_refused(hub_cache: Path) -> None:
    env = collect_environment(gpu=FakeNVML())
    with pytest.raises(PinError) as err:
        verify_pins(campaign("main"), REPO, environment=env, harness_versions=HARNESS)
    assert "model m: requested main, found " + SHA in err.value.message
    assert "allow_unpinned" in err.value.message
    report = verify_pins(
        campaign("main"), REPO, environment=env, harness_versions=HARNESS, raise_on_refusal=False
    )
    row = next(r for r in report.rows if r.kind == "model")
    assert (row.status, row.resolved) == ("refused", SHA)


def test_allow_unpinned_accepts_and_marks_the_revision(hub_cache: Path) -> None:
    report = verify_pins(
        campaign("main", allow=True),
        REPO,
        harness_versions=HARNESS,
        environment=collect_environment(gpu=FakeNVML()),
    )
    assert [(r.name, r.status, r.resolved) for r in report.unpinned] == [("m", "unpinned", SHA)]
    assert report.refused == []


def test_full_sha_and_local_task_data_are_pinned(hub_cache: Path) -> None:
    report = verify_pins(
        campaign(SHA),
        REPO,
        harness_versions=HARNESS,
        environment=collect_environment(gpu=FakeNVML()),
    )
    assert report.refused == [] and report.unpinned == []
    statuses = {(r.kind, r.name): r.status for r in report.rows}
    assert statuses[("model", "m")] == "ok"
    assert statuses[("dataset", "demo_mc")] == "ok"
    gpu = {r.name: r.resolved for r in report.rows if r.kind == "gpu"}
    assert gpu == {"name": "Fake GPU 80GB", "driver": "550.54.15", "cuda": "12.4"}


def test_unresolvable_revision_is_refused(hub_cache: Path) -> None:
    with pytest.raises(PinError, match="can't be resolved"):
        verify_pins(
            campaign("v2.0", allow=True),
            REPO,
            harness_versions=HARNESS,
            environment=collect_environment(gpu=FakeNVML()),
        )


def _task_yaml(folder: Path, revision: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = f"dataset_kwargs:\n  revision: {revision}\n" if revision else ""
    (folder / "hubtask.yaml").write_text(
        "task: hub_task\ndataset_path: org/data\noutput_type: generate_until\n"
        "test_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n" + kwargs
    )
    return folder


def test_hub_dataset_without_a_commit_is_refused(hub_cache: Path, tmp_path: Path) -> None:
    tasks = _task_yaml(tmp_path / "tasks_unpinned", None)
    with pytest.raises(PinError) as err:
        verify_pins(
            campaign(SHA, tasks="hub_task", tasks_dir=tasks),
            REPO,
            harness_versions=HARNESS,
            environment=collect_environment(gpu=FakeNVML()),
        )
    assert f"dataset hub_task: requested (none), found {DATA_SHA}" in err.value.message


def test_hub_dataset_pinned_to_a_commit_passes(hub_cache: Path, tmp_path: Path) -> None:
    tasks = _task_yaml(tmp_path / "tasks_pinned", DATA_SHA)
    report = verify_pins(
        campaign(SHA, tasks="hub_task", tasks_dir=tasks),
        REPO,
        harness_versions=HARNESS,
        environment=collect_environment(gpu=FakeNVML()),
    )
    assert report.dataset_revisions == {"hub_task": DATA_SHA}


def _fake_runtime_venv(root: Path, installed: str) -> None:
    venv = root / f"vllm-{installed}"
    site = venv / "lib" / "python3.11" / "site-packages" / f"vllm-{installed}.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {installed}\n")
    (venv / "bin").mkdir()
    (venv / "bin" / "python").write_text("")
    # Registered under the version the campaign pins: the folder was upgraded behind its back.
    (root / "registry.json").write_text(
        json.dumps(
            {
                "runtimes": [
                    {
                        "kind": "vllm",
                        "package": "vllm",
                        "version": "0.32.0",
                        "path": str(venv),
                        "python": str(venv / "bin" / "python"),
                        "installed_at": "2026-01-01T00:00:00Z",
                    }
                ]
            }
        )
    )


def test_runtime_version_mismatch_names_both_values(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(tmp_path / "runtimes"))
    (tmp_path / "runtimes").mkdir()
    _fake_runtime_venv(tmp_path / "runtimes", "0.31.0")
    spec = campaign(SHA, runtimes=[{"kind": "vllm", "version": "0.32.0"}])
    with pytest.raises(PinError) as err:
        verify_pins(
            spec, REPO, harness_versions=HARNESS, environment=collect_environment(gpu=FakeNVML())
        )
    assert "runtime vllm==0.32.0: requested 0.32.0, found 0.31.0" in err.value.message


def test_matching_runtime_version_passes(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(tmp_path / "runtimes"))
    (tmp_path / "runtimes").mkdir()
    _fake_runtime_venv(tmp_path / "runtimes", "0.32.0")
    spec = campaign(SHA, runtimes=[{"kind": "vllm", "version": "0.32.0"}])
    report = verify_pins(
        spec, REPO, harness_versions=HARNESS, environment=collect_environment(gpu=FakeNVML())
    )
    row = next(r for r in report.rows if r.kind == "runtime")
    assert (row.status, row.resolved) == ("ok", "0.32.0")


def test_driver_change_mid_campaign_stops_it_with_both_values() -> None:
    before = GpuIdentity("NVIDIA H100", "550.54.15", "12.4")
    after = GpuIdentity("NVIDIA H100", "555.42.02", "12.5")
    gpu = FakeNVML(identities=[before, before, after])
    baseline = snapshot_versions([], gpu=gpu)
    assert recheck_versions(baseline, gpu=gpu).gpu == before  # unchanged: silent
    with pytest.raises(EnvironmentChangedError) as err:
        recheck_versions(baseline, gpu=gpu)
    assert "GPU driver: 550.54.15 -> 555.42.02" in err.value.message
    assert "CUDA version: 12.4 -> 12.5" in err.value.message


def test_environment_fingerprint_is_the_sorted_package_set() -> None:
    assert env_fingerprint(("b==2", "a==1")) == env_fingerprint(("a==1", "b==2"))
    assert env_fingerprint(("a==1",)) != env_fingerprint(("a==1.0.1",))
    env = collect_environment(gpu=FakeNVML())
    assert len(env.fingerprint) == 64 and any(p.startswith("torch==") for p in env.packages)
    assert env.lab_commit == "unknown" or len(env.lab_commit.removesuffix("-dirty")) == 40
