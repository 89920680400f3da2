"""GGUF models: conversion, llama.cpp quantization, caching, packaged GGUF files.

The parts: :mod:`.formats` (the quant types), :mod:`.export` (HF Llama folder -> F32/F16 GGUF),
:mod:`.quantize` (llama.cpp's quantizer in the runtime virtualenv), :mod:`.cache` (files cached
by source hash, quant type and tool versions), :mod:`.prepare` (what a campaign does before a
llama.cpp runtime starts), :mod:`.package` (packaged GGUF sources), :mod:`.dequant` (a Hugging
Face folder dequantized from a GGUF).
"""

from __future__ import annotations

from evallab.quant.cache import GGUFBuild, build_gguf, gguf_cache_dir
from evallab.quant.export import EXPORTER_VERSION, export_gguf
from evallab.quant.formats import EXPORT_TYPES, QUANT_TYPES, is_gguf_quant, normalize_quant
from evallab.quant.prepare import needs_gguf, prepare_gguf
from evallab.quant.quantize import LlamaCppQuantizer

__all__ = [
    "EXPORTER_VERSION",
    "EXPORT_TYPES",
    "QUANT_TYPES",
    "GGUFBuild",
    "LlamaCppQuantizer",
    "build_gguf",
    "export_gguf",
    "gguf_cache_dir",
    "is_gguf_quant",
    "needs_gguf",
    "normalize_quant",
    "prepare_gguf",
]
