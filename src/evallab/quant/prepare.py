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
from evallab.quant.cache import build_gguf, requantize_gguf
from evallab.quant.formats import EXPORT_TYPES, QUANT_TYPES, is_gguf_quant, normalize_quant
from evallab.quant.quantize import LlamaCppQuantizer
from evallab.spec import LlamaCppRuntimeSpec, RuntimeSpec

__all__ = ["needs_gguf", "needs_requantize", "prepare_gguf"]


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


def needs_requantize(model: ModelArtifact, runtimes: Sequence[RuntimeSpec]) -> bool:
    """Whether ``model`` serves a GGUF file of another type than its ``quant`` label asks for.

    A packaged or downloaded model that ships one quant (SmolLM2's Q4_1) labelled with a lower
    llama.cpp type (``quant: q2_k``) is re-quantized from that file.
    """
    if model.gguf_path is None or not any(isinstance(r, LlamaCppRuntimeSpec) for r in runtimes):
        return False
    label = model.quant.lower()
    if label not in QUANT_TYPES:
        return False
    from evallab.runtimes.llamacpp import gguf_file_type

    return gguf_file_type(model.gguf_path).lower() != label


def _quantizer(runtimes: Sequence[RuntimeSpec]) -> LlamaCppQuantizer:
    from evallab.runtimes.llamacpp import LlamaCppRuntime
    from evallab.runtimes.venvs import find_installed

    # The first llama.cpp runtime of the campaign quantizes; its version is recorded.
    spec = next(r for r in runtimes if isinstance(r, LlamaCppRuntimeSpec))
    package = LlamaCppRuntime.install_recipe(spec.version).package
    return LlamaCppQuantizer.from_runtime(
        find_installed(LlamaCppRuntime.kind, spec.version, package)
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
    if needs_requantize(model, runtimes):
        from evallab.runtimes.llamacpp import gguf_file_type

        assert model.gguf_path is not None  # checked by needs_requantize
        shipped = gguf_file_type(model.gguf_path)
        build = requantize_gguf(
            model.gguf_path, model.weights_sha256, shipped, model.quant, _quantizer(runtimes)
        )
        return dataclasses.replace(
            model,
            quant=build.quant,
            gguf_path=build.path,
            weights_sha256=build.sha256,
            provenance=(*model.provenance, *build.provenance()),
        )
    if not needs_gguf(model, runtimes):
        return model
    label = normalize_quant(model.quant)
    quantizer = _quantizer(runtimes) if label not in EXPORT_TYPES else None
    build = build_gguf(model.path, model.sha256, label, quantizer=quantizer, name=model.name)
    return dataclasses.replace(
        model,
        quant=label,
        gguf_path=build.path,
        weights_sha256=build.sha256,
        provenance=build.provenance(),
    )
