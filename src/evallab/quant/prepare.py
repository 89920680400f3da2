"""Make the GGUF file a campaign's llama.cpp runtime serves from a Hugging Face model folder.

A model labelled with a GGUF type (``quant: q4_k_m``) whose source is a Hugging Face Llama
folder, in a campaign with a ``llamacpp`` runtime, is converted before any runtime starts: F16
by the lab's exporter, other types by llama.cpp's quantizer from the campaign's (first)
``llamacpp`` runtime virtualenv. The model then serves the cached file, pinned by its sha256,
and every run records how it was made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from evallab.models import ModelArtifact
from evallab.quant.cache import build_gguf
from evallab.quant.formats import EXPORT_TYPES, is_gguf_quant, normalize_quant
from evallab.quant.quantize import LlamaCppQuantizer
from evallab.spec import LlamaCppRuntimeSpec, RuntimeSpec

__all__ = ["needs_gguf", "prepare_gguf"]


def needs_gguf(model: ModelArtifact, runtimes: Sequence[RuntimeSpec]) -> bool:
    """Whether ``model`` must be converted to GGUF for ``runtimes``."""
    return (
        model.gguf_path is None
        and is_gguf_quant(model.quant)
        and (model.path / "config.json").is_file()
        # A folder that already ships a GGUF file serves it, as it always did.
        and not any(model.path.glob("*.gguf"))
        and any(isinstance(r, LlamaCppRuntimeSpec) for r in runtimes)
    )


def prepare_gguf(model: ModelArtifact, runtimes: Sequence[RuntimeSpec]) -> ModelArtifact:
    """``model`` served from its cached GGUF conversion when the campaign needs one.

    Other models are returned unchanged (a user's own GGUF, a label like ``awq``, a campaign
    without a llama.cpp runtime).

    Raises:
        ModelError: the folder can't be converted (not Llama, unsupported tokenizer), or
            quantization failed.
        RuntimeLaunchError: the llama.cpp runtime that quantizes isn't installed.
    """
    if not needs_gguf(model, runtimes):
        return model
    label = normalize_quant(model.quant)
    quantizer = None
    if label not in EXPORT_TYPES:
        from evallab.runtimes.llamacpp import LlamaCppRuntime
        from evallab.runtimes.venvs import find_installed

        # The first llama.cpp runtime of the campaign quantizes; its version is recorded.
        spec = next(r for r in runtimes if isinstance(r, LlamaCppRuntimeSpec))
        package = LlamaCppRuntime.install_recipe(spec.version).package
        quantizer = LlamaCppQuantizer.from_runtime(
            find_installed(LlamaCppRuntime.kind, spec.version, package)
        )
    build = build_gguf(model.path, model.sha256, label, quantizer=quantizer, name=model.name)
    return dataclasses.replace(
        model,
        quant=label,
        gguf_path=build.path,
        weights_sha256=build.sha256,
        provenance=build.provenance(),
    )
