"""GGUF quant types the lab can produce, by the label a campaign file uses."""

from __future__ import annotations

from evallab.errors import SpecError

__all__ = ["EXPORT_TYPES", "QUANT_TYPES", "is_gguf_quant", "llama_ftype_name", "normalize_quant"]

#: Types the lab's exporter writes itself (no llama.cpp needed): label -> gguf.LlamaFileType name.
EXPORT_TYPES: dict[str, str] = {"f32": "ALL_F32", "f16": "MOSTLY_F16"}

#: Types llama.cpp's quantizer makes from an F16 GGUF: label -> ``LLAMA_FTYPE_<name>``.
QUANT_TYPES: dict[str, str] = {
    "q8_0": "MOSTLY_Q8_0",
    "q6_k": "MOSTLY_Q6_K",
    "q5_0": "MOSTLY_Q5_0",
    "q5_1": "MOSTLY_Q5_1",
    "q5_k_s": "MOSTLY_Q5_K_S",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q4_0": "MOSTLY_Q4_0",
    "q4_1": "MOSTLY_Q4_1",
    "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_k_m": "MOSTLY_Q4_K_M",
    "q3_k_s": "MOSTLY_Q3_K_S",
    "q3_k_m": "MOSTLY_Q3_K_M",
    "q3_k_l": "MOSTLY_Q3_K_L",
    "q2_k": "MOSTLY_Q2_K",
}


def is_gguf_quant(label: str) -> bool:
    """Whether ``label`` (any case) names a GGUF type the lab can export or quantize to."""
    return label.lower() in EXPORT_TYPES or label.lower() in QUANT_TYPES


def normalize_quant(label: str) -> str:
    """The lower-case label of a GGUF type (``Q4_K_M`` -> ``q4_k_m``).

    Raises:
        SpecError: not a type the lab makes.
    """
    key = label.lower()
    if not is_gguf_quant(key):
        known = ", ".join([*EXPORT_TYPES, *QUANT_TYPES])
        raise SpecError("unknown GGUF quant type", value=label, fix=f"use one of: {known}")
    return key


def llama_ftype_name(label: str) -> str:
    """llama.cpp's ``llama_ftype`` name for ``label``, e.g. ``MOSTLY_Q4_K_M``."""
    key = normalize_quant(label)
    return EXPORT_TYPES.get(key) or QUANT_TYPES[key]
