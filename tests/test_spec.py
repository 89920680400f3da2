from __future__ import annotations

from pathlib import Path

import pytest

from evallab.errors import SpecError
from evallab.spec import CampaignSpec, HubModelSpec, TinyModelSpec, load_campaign, spec_sha256

GOOD = """
name: t
models:
  - {name: m, source: tiny}
benchmarks:
  - {name: b, tasks: [demo_mc]}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_valid_campaign_defaults(tmp_path: Path) -> None:
    spec, base = load_campaign(write(tmp_path, GOOD))
    assert spec.name == "t"
    assert isinstance(spec.models[0], TinyModelSpec)
    assert spec.runtimes[0].kind == "transformers"
    assert spec.benchmarks[0].harness == "lm_eval"
    assert spec.seed == 1234
    assert base == tmp_path.resolve()


def test_unknown_key_is_refused_with_its_location(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("name: t", "name: t\nsede: 3"))
    with pytest.raises(SpecError) as exc:
        load_campaign(p)
    assert "sede" in exc.value.message
    assert "unknown key" in exc.value.message
    assert str(p) in exc.value.message


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "name: t\nmodels: [\n  - x: : :\n")
    with pytest.raises(SpecError) as exc:
        load_campaign(p)
    assert "not valid YAML at line" in exc.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_campaign(tmp_path / "nope.yaml")


def test_duplicate_names_and_bad_values(tmp_path: Path) -> None:
    dup = GOOD.replace(
        "  - {name: m, source: tiny}", "  - {name: m, source: tiny}\n  - {name: m, source: tiny}"
    )
    with pytest.raises(SpecError, match=r"repeated: \['m'\]"):
        load_campaign(write(tmp_path, dup))
    bad_repo = GOOD.replace(
        "{name: m, source: tiny}", "{name: m, source: hf, repo: noslash, revision: main}"
    )
    with pytest.raises(SpecError, match="noslash"):
        load_campaign(write(tmp_path, bad_repo))
    bad_kind = GOOD + "runtimes:\n  - {kind: tgi}\n"
    with pytest.raises(SpecError, match=r"tgi|kind"):
        load_campaign(write(tmp_path, bad_kind))


def test_hub_pinning_and_spec_hash_is_stable() -> None:
    sha = "a" * 40
    assert HubModelSpec(name="m", source="hf", repo="o/n", revision=sha).is_pinned
    assert not HubModelSpec(name="m", source="hf", repo="o/n", revision="main").is_pinned
    a = CampaignSpec.model_validate(
        {
            "name": "x",
            "models": [{"name": "m", "source": "tiny"}],
            "benchmarks": [{"name": "b", "tasks": ["t"]}],
        }
    )
    b = CampaignSpec.model_validate(
        {
            "benchmarks": [{"tasks": ["t"], "name": "b"}],
            "name": "x",
            "models": [{"source": "tiny", "name": "m"}],
        }
    )
    assert spec_sha256(a) == spec_sha256(b)


def test_models_can_name_the_runtimes_they_run_on() -> None:
    spec = CampaignSpec.model_validate(
        {
            "name": "q",
            "models": [
                {"name": "ref", "source": "tiny", "runtimes": ["transformers"]},
                {"name": "q4", "source": "tiny", "quant": "q4_k_m", "runtimes": ["gguf"]},
                {"name": "both", "source": "tiny"},
            ],
            "runtimes": [
                {"kind": "transformers"},
                {"kind": "llamacpp", "version": "0.3.36", "label": "gguf"},
            ],
            "benchmarks": [{"name": "b", "tasks": ["demo_gen"]}],
        }
    )
    assert [(m.name, r.display) for m, r in spec.pairs()] == [
        ("ref", "transformers"),
        ("q4", "gguf"),
        ("both", "transformers"),
        ("both", "gguf"),
    ]
    with pytest.raises(ValueError, match=r"model 'ref' names runtimes \['vllm'\]"):
        CampaignSpec.model_validate(
            {
                "name": "q",
                "models": [{"name": "ref", "source": "tiny", "runtimes": ["vllm"]}],
                "benchmarks": [{"name": "b", "tasks": ["demo_gen"]}],
            }
        )
