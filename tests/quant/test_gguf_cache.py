"""GGUF builds cached by source hash and quant type; llama.cpp quantization; campaign prep."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
from gguf import GGUFReader

import evallab.quant.cache as cache_mod
from evallab.errors import SpecError
from evallab.models import ModelArtifact, resolve_model, sha256_file
from evallab.quant import EXPORTER_VERSION, LlamaCppQuantizer, build_gguf, prepare_gguf
from evallab.runtimes.llamacpp import gguf_file_type
from evallab.spec import LlamaCppRuntimeSpec, LocalModelSpec, TransformersRuntimeSpec


def _no_rebuild(*args: object, **kwargs: object) -> None:
    raise AssertionError("the cached file should have been reused")


def test_f16_build_is_cached_and_reused(
    gguf_home: Path, tiny_model: Path, tiny_sha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_gguf(tiny_model, tiny_sha, "F16", name="tiny")
    assert first.path == gguf_home / "gguf" / tiny_sha / f"f16.x{EXPORTER_VERSION}.gguf"
    assert first.sha256 == sha256_file(first.path)
    assert (first.quant, first.source_sha256, first.quantizer) == ("f16", tiny_sha, "")
    assert gguf_file_type(first.path) == "F16"

    monkeypatch.setattr(cache_mod, "export_gguf", _no_rebuild)
    again = build_gguf(tiny_model, tiny_sha, "f16", name="tiny")
    assert again == first


def test_a_damaged_cached_file_is_made_again(
    gguf_home: Path, tiny_model: Path, tiny_sha: str
) -> None:
    first = build_gguf(tiny_model, tiny_sha, "f16")
    with first.path.open("r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\xff\xff\xff\xff")
    again = build_gguf(tiny_model, tiny_sha, "f16")
    assert again.sha256 == first.sha256 == sha256_file(again.path)


def test_quant_types_need_llama_cpp(gguf_home: Path, tiny_model: Path, tiny_sha: str) -> None:
    with pytest.raises(SpecError, match=re.escape("needs a llama.cpp runtime")):
        build_gguf(tiny_model, tiny_sha, "q4_k_m")
    with pytest.raises(SpecError, match="unknown GGUF quant type"):
        build_gguf(tiny_model, tiny_sha, "q9_z")


def _artifact(tiny_model: Path, quant: str) -> ModelArtifact:
    spec = LocalModelSpec(source="local", name="tiny", path=tiny_model, quant=quant)
    return resolve_model(spec, tiny_model.parent)


LLAMACPP = LlamaCppRuntimeSpec(kind="llamacpp", version="0.3.36")


def test_campaign_prep_serves_the_f16_export_on_llama_cpp(
    gguf_home: Path, tiny_model: Path
) -> None:
    model = _artifact(tiny_model, "f16")
    served = prepare_gguf(model, [TransformersRuntimeSpec(kind="transformers"), LLAMACPP])
    assert served.gguf_path is not None and served.gguf_path.is_file()
    assert served.weights_sha256 == sha256_file(served.gguf_path)
    assert served.sha256 == model.sha256  # the source's pin is unchanged
    prov = dict(served.provenance)
    assert prov["gguf_sha256"] == served.weights_sha256
    assert prov["gguf_quant"] == "f16"
    assert prov["gguf_source_sha256"] == model.sha256
    assert prov["gguf_exporter_version"] == EXPORTER_VERSION


def test_campaign_prep_leaves_other_models_alone(
    gguf_home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    f16 = _artifact(tiny_model, "f16")
    assert prepare_gguf(f16, [TransformersRuntimeSpec(kind="transformers")]) == f16
    awq = _artifact(tiny_model, "awq")
    assert prepare_gguf(awq, [LLAMACPP]) == awq
    own = dataclasses.replace(f16, gguf_path=tiny_model / "own.gguf")
    assert prepare_gguf(own, [LLAMACPP]) == own
    shipped = tmp_path / "shipped"
    shutil.copytree(tiny_model, shipped)
    (shipped / "model.F16.gguf").write_bytes(b"GGUF")
    ships_gguf = dataclasses.replace(f16, path=shipped)
    assert prepare_gguf(ships_gguf, [LLAMACPP]) == ships_gguf
    assert not (gguf_home / "gguf").exists()


@pytest.mark.llamacpp
@pytest.mark.parametrize(("quant", "declared"), [("q8_0", "Q8_0"), ("q4_k_m", "Q4_K_M")])
def test_llama_cpp_quantizes_and_the_result_is_cached(
    gguf_home: Path,
    tiny_model: Path,
    tiny_sha: str,
    llamacpp_quantizer: LlamaCppQuantizer,
    monkeypatch: pytest.MonkeyPatch,
    quant: str,
    declared: str,
) -> None:
    built = build_gguf(tiny_model, tiny_sha, quant, quantizer=llamacpp_quantizer)
    assert gguf_file_type(built.path) == declared
    assert built.quantizer == llamacpp_quantizer.label
    assert llamacpp_quantizer.version in built.path.name
    f16 = build_gguf(tiny_model, tiny_sha, "f16")
    assert built.path.stat().st_size < f16.path.stat().st_size
    reader = GGUFReader(built.path)
    assert reader.fields["evallab.source_sha256"].contents() == tiny_sha
    assert {t.name for t in reader.tensors} == {t.name for t in GGUFReader(f16.path).tensors}

    monkeypatch.setattr(LlamaCppQuantizer, "quantize", _no_rebuild)
    assert build_gguf(tiny_model, tiny_sha, quant, quantizer=llamacpp_quantizer) == built


def test_a_campaign_fetches_the_tiny_model_as_its_gguf(gguf_home: Path) -> None:
    from evallab.campaign.plan import fetch_model
    from evallab.spec import CampaignSpec

    spec = CampaignSpec.model_validate(
        {
            "name": "gguf",
            "models": [{"name": "tiny-f16", "source": "tiny", "quant": "f16"}],
            "runtimes": [{"kind": "llamacpp", "version": "0.3.36"}],
            "benchmarks": [{"name": "b", "harness": "lm_eval", "tasks": ["demo_gen"]}],
        }
    )
    model = fetch_model(spec, spec.models[0], gguf_home)
    assert model.gguf_path is not None
    assert model.gguf_path.parent == gguf_home / "gguf" / model.sha256
    assert gguf_file_type(model.gguf_path) == "F16"
    assert dict(model.provenance)["gguf_sha256"] == model.weights_sha256


@pytest.mark.llamacpp
def test_a_shipped_quant_is_requantized_lower_for_llama_cpp(
    gguf_home: Path,
    tiny_model: Path,
    tiny_sha: str,
    llamacpp_quantizer: LlamaCppQuantizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A GGUF someone shipped at Q8_0, served as q2_k: re-quantized from that file, recorded so.
    shipped = build_gguf(tiny_model, tiny_sha, "q8_0", quantizer=llamacpp_quantizer)
    folder = gguf_home / "shipped"
    folder.mkdir()
    shutil.copy(shipped.path, folder / "model.gguf")
    model = resolve_model(
        LocalModelSpec(
            source="local", name="shipped", path=folder, gguf_file="model.gguf", quant="q2_k"
        ),
        gguf_home,
    )
    llama = LlamaCppRuntimeSpec(kind="llamacpp", version=llamacpp_quantizer.version)
    served = prepare_gguf(model, [llama])
    assert served.gguf_path is not None and gguf_file_type(served.gguf_path) == "Q2_K"
    made = dict(served.provenance)
    assert made["gguf_requantized_from"] == "Q8_0" and made["gguf_source_sha256"] == shipped.sha256
    assert served.weights_sha256 == sha256_file(served.gguf_path) != shipped.sha256
    # The shipped type itself is served as it is; the next run reuses the cached re-quantization.
    same = dataclasses.replace(model, quant="Q8_0")
    assert prepare_gguf(same, [llama]) == same
    monkeypatch.setattr(LlamaCppQuantizer, "quantize", _no_rebuild)
    assert prepare_gguf(model, [llama]).gguf_path == served.gguf_path
