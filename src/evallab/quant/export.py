"""Export a Hugging Face Llama folder (safetensors + tokenizer.json) to an F32 or F16 GGUF file.

Follows what llama.cpp's ``convert_hf_to_gguf.py`` does for Llama models: the same metadata
keys, Q/K projections permuted from Hugging Face's rotary layout to llama.cpp's (interleaved
pairs), 1-D tensors kept in F32. Tensors are streamed one at a time, so the model is never held
in memory whole. Only GPT-2 style byte-level BPE tokenizers are written (llama.cpp's ``gpt-2``
pre-tokenizer); any other tokenizer or architecture is refused rather than converted wrongly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evallab.errors import ModelError
from evallab.quant.formats import EXPORT_TYPES, normalize_quant

__all__ = ["EXPORTER_VERSION", "ExportSource", "export_gguf", "read_export_source"]

#: Bumped whenever the exporter's output changes for the same input: cached files are keyed by it.
EXPORTER_VERSION = "1"

_ARCHITECTURES = ("LlamaForCausalLM",)
# Metadata keys of the lab's own, next to llama.cpp's.
KEY_SOURCE_SHA = "evallab.source_sha256"
KEY_EXPORTER = "evallab.exporter_version"


@dataclass(frozen=True)
class _Tensor:
    gguf_name: str
    hf_name: str
    file: Path
    shape: tuple[int, ...]
    f16: bool


@dataclass(frozen=True)
class ExportSource:
    """A Hugging Face folder checked to be exportable: its config and tokenizer description."""

    folder: Path
    config: dict[str, Any]
    tokenizer: dict[str, Any]


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(
            f"{path.name} is missing, so the model can't be converted to GGUF",
            value=path.parent,
            fix="point the model at a Hugging Face folder (config.json, tokenizer.json, "
            "*.safetensors)",
        ) from exc
    return data


def read_export_source(folder: Path) -> ExportSource:
    """Check that ``folder`` holds a Llama model with a GPT-2 style tokenizer.

    Raises:
        ModelError: another architecture, another tokenizer, or missing files.
    """
    config = _load_json(folder / "config.json")
    archs = config.get("architectures") or []
    if config.get("model_type") != "llama" or not any(a in _ARCHITECTURES for a in archs):
        raise ModelError(
            "only Llama models (LlamaForCausalLM) can be converted to GGUF by the lab",
            value=f"{folder} (model_type {config.get('model_type')!r}, architectures {archs})",
            fix="convert it with llama.cpp's convert_hf_to_gguf.py and point gguf_file at the "
            "result",
        )
    tokenizer = _load_json(folder / "tokenizer.json")
    model = tokenizer.get("model") or {}
    pre = tokenizer.get("pre_tokenizer") or {}
    byte_level = (
        pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
    )
    if model.get("type") != "BPE" or not byte_level or tokenizer.get("normalizer"):
        raise ModelError(
            "only byte-level BPE tokenizers with GPT-2 pre-tokenization can be converted to GGUF "
            "by the lab (llama.cpp would tokenize any other one differently)",
            value=f"{folder / 'tokenizer.json'} (model {model.get('type')!r}, pre-tokenizer "
            f"{pre.get('type')!r}, normalizer {bool(tokenizer.get('normalizer'))})",
            fix="convert it with llama.cpp's convert_hf_to_gguf.py and point gguf_file at the "
            "result",
        )
    if not sorted(folder.glob("*.safetensors")):
        raise ModelError(
            "no *.safetensors weights to convert to GGUF",
            value=folder,
            fix="save the model with save_pretrained(safe_serialization=True)",
        )
    return ExportSource(folder=folder, config=config, tokenizer=tokenizer)


def _vocab(src: ExportSource, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens in id order and their llama.cpp token types (normal, control, user-defined)."""
    import gguf

    by_id: dict[int, tuple[str, int]] = {
        int(i): (tok, int(gguf.TokenType.NORMAL))
        for tok, i in src.tokenizer["model"]["vocab"].items()
    }
    for added in src.tokenizer.get("added_tokens") or []:
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[int(added["id"])] = (added["content"], int(kind))
    if by_id and max(by_id) >= vocab_size:
        raise ModelError(
            "the tokenizer has more tokens than the model's vocab_size",
            value=f"{max(by_id) + 1} > {vocab_size}",
            fix="check config.json's vocab_size",
        )
    tokens, types = [], []
    for i in range(vocab_size):
        tok, token_type = by_id.get(i, (f"[PAD{i}]", int(gguf.TokenType.UNUSED)))
        tokens.append(tok)
        types.append(token_type)
    return tokens, types


def _permute(weights: Any, n_head: int) -> Any:
    """Hugging Face's rotary layout (halves) -> llama.cpp's (interleaved pairs), per head."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _plan_tensors(src: ExportSource, n_blocks: int, f16: bool) -> list[_Tensor]:
    import gguf
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    out = []
    for file in sorted(src.folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for hf_name in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if hf_name.endswith(".rotary_emb.inv_freq"):
                    continue  # recomputed by llama.cpp from the rope settings
                new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if new is None:
                    raise ModelError(
                        "the model holds a tensor llama.cpp's Llama doesn't know",
                        value=f"{hf_name} in {file}",
                        fix="convert it with llama.cpp's convert_hf_to_gguf.py",
                    )
                shape = tuple(fh.get_slice(hf_name).get_shape())
                # As llama.cpp's converter: 1-D tensors (norms) stay F32.
                out.append(_Tensor(new, hf_name, file, shape, f16 and len(shape) > 1))
    return out


def _write_metadata(
    writer: Any, src: ExportSource, ftype: int, source_sha256: str, name: str
) -> None:
    import gguf

    cfg = src.config
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // n_head)
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ("default", "linear"):
        raise ModelError(
            f"rope type {rope_type!r} isn't supported by the lab's GGUF exporter",
            value=src.folder,
            fix="convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    writer.add_name(name)
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_context_length(int(cfg["max_position_embeddings"]))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(rope.get("rope_theta") or cfg.get("rope_theta") or 10000.0))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    writer.add_rope_dimension_count(head_dim)
    if cfg.get("head_dim"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_string(KEY_SOURCE_SHA, source_sha256)
    writer.add_string(KEY_EXPORTER, EXPORTER_VERSION)

    tokens, types = _vocab(src, int(cfg["vocab_size"]))
    writer.add_tokenizer_model("gpt2")
    # llama.cpp knows GPT-2's pre-tokenizer as "gpt-2" ("gpt2" is refused as unknown).
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # Merges, bos/eos/pad ids, add_bos/add_eos and the chat template, read the way llama.cpp's
    # converter reads them (tokenizer.json, tokenizer_config.json, chat_template.jinja).
    special = gguf.SpecialVocab(src.folder, load_merges=True, n_vocab=len(tokens))
    # Whether prompts start with BOS (end with EOS) is what the tokenizer itself does, so
    # llama.cpp tokenizes prompts exactly as transformers does.
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(src.folder / "tokenizer.json")).encode("a").ids
    for kind, at in (("bos", ids[:1]), ("eos", ids[-1:])):
        tok_id = special.special_token_ids.get(kind)
        special.add_special_token[kind] = tok_id is not None and at == [tok_id]
    special.add_to_gguf(writer, quiet=True)


def export_gguf(
    folder: Path, out: Path, *, quant: str = "f16", source_sha256: str, name: str = ""
) -> Path:
    """Write ``folder``'s Llama model to ``out`` as an F32 or F16 GGUF file (atomically).

    Args:
        folder: Hugging Face folder (config.json, tokenizer.json, *.safetensors).
        out: Destination ``.gguf``; written to a temporary file next to it, then renamed.
        quant: ``f16`` or ``f32``.
        source_sha256: The folder's content hash, recorded in the file's metadata.
        name: ``general.name`` (defaults to the folder's name).

    Raises:
        ModelError: not a Llama model, an unsupported tokenizer or rope type, missing files.
    """
    import gguf
    from safetensors import safe_open

    label = normalize_quant(quant)
    if label not in EXPORT_TYPES:
        raise ModelError(
            f"the exporter writes {' or '.join(EXPORT_TYPES)}, not {quant}",
            value=quant,
            fix="quantize the F16 export with llama.cpp",
        )
    src = read_export_source(folder)
    f16 = label == "f16"
    n_head = int(src.config["num_attention_heads"])
    n_kv = int(src.config.get("num_key_value_heads") or n_head)
    tensors = _plan_tensors(src, int(src.config["num_hidden_layers"]), f16)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        ftype = gguf.LlamaFileType[EXPORT_TYPES[label]]
        _write_metadata(writer, src, int(ftype), source_sha256, name or folder.name)
        import numpy as np

        for t in tensors:
            dtype = np.dtype(np.float16 if t.f16 else np.float32)
            nbytes = int(np.prod(t.shape, dtype=np.int64)) * dtype.itemsize
            writer.add_tensor_info(t.gguf_name, t.shape, dtype, nbytes)
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        handles: dict[Path, Any] = {}
        try:
            for t in tensors:
                if t.file not in handles:
                    handles[t.file] = safe_open(str(t.file), framework="pt")
                data = handles[t.file].get_tensor(t.hf_name).float().numpy()
                if t.hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                    data = _permute(data, n_head)
                elif t.hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                    data = _permute(data, n_kv)
                writer.write_tensor_data(data.astype(np.float16 if t.f16 else np.float32))
        finally:
            handles.clear()
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out
