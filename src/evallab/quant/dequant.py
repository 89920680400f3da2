"""A Hugging Face folder dequantized from a GGUF file, for transformers and vLLM.

Runtimes that can't read GGUF then evaluate the same weights llama.cpp serves.

Transformers reads the GGUF (weights dequantized to float32, tokenizer and chat template
rebuilt); the folder is saved with the GGUF marker dropped, so it loads as an ordinary float
model. Cached under ``<lab home>/gguf/dequantized/<gguf sha256>.t<transformers version>``: a
new transformers version may dequantize differently, so it makes its own folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from evallab.errors import ModelError
from evallab.paths import lab_home

__all__ = ["dequantized_folder"]

_RECORD = "evallab-dequantized.json"


def dequantized_folder(gguf: Path, gguf_sha256: str) -> tuple[Path, tuple[tuple[str, str], ...]]:
    """The Hugging Face folder made from ``gguf`` (made once, then reused), and its provenance.

    Args:
        gguf: The GGUF file.
        gguf_sha256: Its (already checked) sha256: the cache key.

    Raises:
        ModelError: transformers can't read the file (architecture or quant type unsupported).
    """
    from importlib import metadata

    version = metadata.version("transformers")
    folder = lab_home() / "gguf" / "dequantized" / f"{gguf_sha256}.t{version}"
    provenance = (
        ("gguf_sha256", gguf_sha256),
        ("dequantized_with", f"transformers=={version}"),
    )
    if (folder / _RECORD).is_file():
        return folder, provenance
    from evallab.models import build_lock

    with build_lock(folder):
        if not (folder / _RECORD).is_file():
            _dequantize(gguf, folder)
            (folder / _RECORD).write_text(json.dumps(dict(provenance), indent=1) + "\n")
    return folder, provenance


def _dequantize(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ModelError(
            f"transformers can't dequantize the GGUF file: {exc}",
            value=gguf,
            fix="serve it on a llamacpp runtime only (dequantize: false)",
        ) from exc
    # The loaded model still says it came from GGUF; saved that way it would be read back as
    # a GGUF quantization. Its weights are plain float32 tensors now.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as a submodule by torch)
    setattr(model, "is_quantized", False)  # noqa: B010
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
