"""HF Llama folder -> GGUF: what llama.cpp reads back from the file the lab writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from evallab.errors import ModelError
from evallab.quant import EXPORTER_VERSION, export_gguf


def _fields(reader: GGUFReader) -> dict[str, object]:
    return {key: field.contents() for key, field in reader.fields.items()}


def _hf_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def f16_file(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "tiny.f16.gguf"
    return export_gguf(tiny_model, out, quant="f16", source_sha256="ab" * 32, name="tiny")


def test_metadata_is_what_llama_cpp_needs(f16_file: Path, tiny_model: Path) -> None:
    meta = _fields(GGUFReader(f16_file))
    config = json.loads((tiny_model / "config.json").read_text())
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == 1  # MOSTLY_F16
    assert meta["llama.block_count"] == 2
    assert meta["llama.context_length"] == 2048
    assert meta["llama.embedding_length"] == 256
    assert meta["llama.feed_forward_length"] == 512
    assert meta["llama.attention.head_count"] == 4
    assert meta["llama.attention.head_count_kv"] == 4
    assert meta["llama.rope.freq_base"] == 10000.0
    assert meta["llama.rope.dimension_count"] == 64
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert meta["llama.vocab_size"] == config["vocab_size"] == 1024
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "gpt-2"
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (0, 1)
    assert meta["tokenizer.ggml.padding_token_id"] == 2
    # The tiny tokenizer adds no BOS: llama.cpp must not either, or prompts would differ.
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert "<|assistant|>" in str(meta["tokenizer.chat_template"])
    assert meta["evallab.source_sha256"] == "ab" * 32
    assert meta["evallab.exporter_version"] == EXPORTER_VERSION


def test_vocabulary_and_merges_match_the_tokenizer(f16_file: Path, tiny_model: Path) -> None:
    meta = _fields(GGUFReader(f16_file))
    tok = json.loads((tiny_model / "tokenizer.json").read_text())
    tokens = meta["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == 1024
    for text, i in list(tok["model"]["vocab"].items())[:50]:
        assert tokens[i] == text
    assert tokens[:3] == ["<s>", "</s>", "<pad>"]
    types = meta["tokenizer.ggml.token_type"]
    assert isinstance(types, list) and types[:4] == [3, 3, 3, 1]  # control x3, then normal
    merges = meta["tokenizer.ggml.merges"]
    assert isinstance(merges, list) and len(merges) == len(tok["model"]["merges"])


def test_tensors_have_llama_cpp_names_shapes_and_types(f16_file: Path, tiny_model: Path) -> None:
    reader = GGUFReader(f16_file)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 2 * 9 + 1
    assert tensors["token_embd.weight"].data.shape == (1024, 256)
    assert tensors["output.weight"].data.shape == (1024, 256)
    assert tensors["blk.1.ffn_down.weight"].data.shape == (256, 512)
    assert tensors["blk.0.ffn_gate.weight"].data.shape == (512, 256)
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"  # 1-D stays F32
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"

    hf = _hf_weights(tiny_model)
    embd = hf["model.embed_tokens.weight"]
    assert np.array_equal(tensors["token_embd.weight"].data, embd.astype(np.float16))
    v = hf["model.layers.0.self_attn.v_proj.weight"]
    assert np.array_equal(tensors["blk.0.attn_v.weight"].data, v.astype(np.float16))
    # Q is permuted per head from HF's rotary halves to llama.cpp's interleaved pairs: row
    # 2*j of a head is HF row j, row 2*j+1 is HF row j + head_dim/2.
    q_hf = hf["model.layers.0.self_attn.q_proj.weight"].astype(np.float16)
    q = tensors["blk.0.attn_q.weight"].data
    assert not np.array_equal(q, q_hf)
    head = 64
    for h in range(4):
        base = h * head
        assert np.array_equal(q[base + 2 * 3], q_hf[base + 3])
        assert np.array_equal(q[base + 2 * 3 + 1], q_hf[base + 3 + head // 2])


def test_f32_export_keeps_every_weight_exactly(tiny_model: Path, tmp_path: Path) -> None:
    out = export_gguf(tiny_model, tmp_path / "t.gguf", quant="f32", source_sha256="cd" * 32)
    reader = GGUFReader(out)
    assert _fields(reader)["general.file_type"] == 0
    tensors = {t.name: t for t in reader.tensors}
    hf = _hf_weights(tiny_model)
    assert np.array_equal(
        tensors["blk.1.ffn_up.weight"].data, hf["model.layers.1.mlp.up_proj.weight"]
    )
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def _copy_with(tiny_model: Path, dst: Path, name: str, edit: dict[str, object]) -> Path:
    shutil.copytree(tiny_model, dst)
    data = json.loads((dst / name).read_text())
    data.update(edit)
    (dst / name).write_text(json.dumps(data))
    return dst


def test_other_architectures_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy_with(
        tiny_model,
        tmp_path / "m",
        "config.json",
        {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
    )
    with pytest.raises(ModelError, match="only Llama models") as err:
        export_gguf(folder, tmp_path / "x.gguf", source_sha256="0" * 64)
    assert "Qwen2ForCausalLM" in str(err.value)
    assert not (tmp_path / "x.gguf").exists()


def test_other_tokenizers_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy_with(
        tiny_model, tmp_path / "m", "tokenizer.json", {"normalizer": {"type": "NFC"}}
    )
    with pytest.raises(ModelError, match="GPT-2 pre-tokenization"):
        export_gguf(folder, tmp_path / "x.gguf", source_sha256="0" * 64)


def test_quant_types_are_not_the_exporters(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="quantize the F16 export"):
        export_gguf(tiny_model, tmp_path / "x.gguf", quant="q4_k_m", source_sha256="0" * 64)
