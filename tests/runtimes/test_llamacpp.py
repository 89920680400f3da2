"""A real llama.cpp server (llama-cpp-python, compiled from source) on the lab's own GGUF export.

The tiny model is exported to F16 by the lab and served by the lab's llama.cpp runtime; its
greedy continuations are compared with transformers float32 on the same prompts, and the
session's provenance is checked. Needs the llama.cpp runtime virtualenv
(``scripts/install_llamacpp.sh``); in CI a missing runtime fails instead of skipping.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from evallab.errors import LabError
from evallab.models import ModelArtifact, resolve_model, sha256_file
from evallab.quant import EXPORTER_VERSION, prepare_gguf
from evallab.runtimes.llamacpp import DEFAULT_CMAKE_ARGS, GENERATION_OVERRIDES, LlamaCppRuntime
from evallab.runtimes.server import ServerSession
from evallab.spec import LlamaCppRuntimeSpec, LocalModelSpec

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VERSION = os.environ.get("LLAMACPP_VERSION", "0.3.36")
SPEC = LlamaCppRuntimeSpec(kind="llamacpp", version=VERSION, max_model_len=512, seed=0)
PROMPTS = [
    f"Say {json.loads(line)['word']} {json.loads(line)['n']} times:"
    for line in (REPO / "tasks_custom" / "data" / "demo_gen.jsonl").read_text().splitlines()[:40]
]
MAX_TOKENS = 8


def _require_runtime() -> None:
    from evallab.runtimes.venvs import find_installed

    try:
        find_installed("llamacpp", VERSION, "llama-cpp-python")
    except LabError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}. CI must run the llama.cpp tests.", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def f16_model(tiny_model: Path, lab_home: Path) -> ModelArtifact:
    _require_runtime()
    base = resolve_model(LocalModelSpec(source="local", name="tiny", path=tiny_model), REPO)
    return prepare_gguf(dataclasses.replace(base, quant="f16"), [SPEC])


@pytest.fixture(scope="module")
def session(f16_model: ModelArtifact, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    work = tmp_path_factory.mktemp("llamacpp")
    with LlamaCppRuntime().start(SPEC, f16_model, work) as s:
        yield s


def _llamacpp_greedy(session: ServerSession) -> list[str]:
    out = []
    with httpx.Client(base_url=session.base_url, timeout=120) as client:
        for prompt in PROMPTS:
            body = {
                "model": "tiny",
                "prompt": prompt,
                "max_tokens": MAX_TOKENS,
                "temperature": 0.0,
                **GENERATION_OVERRIDES,
            }
            r = client.post("/completions", json=body)
            r.raise_for_status()
            out.append(r.json()["choices"][0]["text"])
    return out


def _transformers_greedy(folder: Path) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False)
        out.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return out


def test_f16_gguf_greedy_matches_transformers_float32(
    session: ServerSession, f16_model: ModelArtifact, tiny_model: Path
) -> None:
    served = _llamacpp_greedy(session)
    reference = _transformers_greedy(tiny_model)
    same = sum(a == b for a, b in zip(served, reference, strict=True))
    # Measured: 40/40 identical (8-token greedy continuations of demo_gen prompts). F16 rounds
    # the weights, so a near-tie between two tokens could flip; none does on these prompts.
    assert same == len(PROMPTS), [
        (p, a, b) for p, a, b in zip(PROMPTS, served, reference, strict=True) if a != b
    ]
    assert any(text.strip() for text in served)  # real text, not empty completions


def test_session_records_the_gguf_and_the_build(
    session: ServerSession, f16_model: ModelArtifact
) -> None:
    info = session.info
    assert info.kind == "llamacpp" and info.version == VERSION
    assert f16_model.gguf_path is not None
    assert info.extra["gguf_file"] == str(f16_model.gguf_path)
    assert info.extra["gguf_sha256"] == sha256_file(f16_model.gguf_path)
    assert info.extra["gguf_quant_type"] == "F16"
    build = info.extra["build"]
    assert json.loads(build["build_env"]) == {"CMAKE_ARGS": DEFAULT_CMAKE_ARGS}
    assert "AVX2 = 1" in build["system_info"] and build["gpu_offload"] == "False"
    made = dict(f16_model.provenance)
    assert made["gguf_sha256"] == info.extra["gguf_sha256"] and made["gguf_quant"] == "f16"
    assert made["gguf_exporter_version"] == str(EXPORTER_VERSION)
    assert made["gguf_source_sha256"] == f16_model.sha256
    assert "llama_cpp.server" in info.command and "--n_ctx 512" in info.command
