"""GGUF files made from Hugging Face folders, cached by what they are made from.

``<lab home>/gguf/<source content sha256>/<quant>.x<exporter version>[.<quantizer>].gguf``: the
same folder, quant type, exporter version and quantizer always give the same file, so it is made
once and reused. Each file has a ``.json`` record next to it (written last: its presence means
the file is complete) holding its provenance; the file's sha256 is checked on every reuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from evallab.locks import file_lock
from evallab.models import sha256_file
from evallab.paths import lab_home
from evallab.quant.export import EXPORTER_VERSION, export_gguf
from evallab.quant.formats import EXPORT_TYPES, normalize_quant
from evallab.quant.quantize import LlamaCppQuantizer

__all__ = ["GGUFBuild", "build_gguf", "gguf_cache_dir"]


def gguf_cache_dir() -> Path:
    """Where converted GGUF files live: ``<lab home>/gguf``."""
    return lab_home() / "gguf"


@dataclass(frozen=True)
class GGUFBuild:
    """A cached GGUF file and how it was made.

    Attributes:
        path: The ``.gguf`` file.
        sha256: Its content hash.
        quant: The quant type (``f16``, ``q4_k_m``...).
        source_sha256: Content hash of the Hugging Face folder it was made from.
        exporter_version: The lab's HF -> GGUF exporter version.
        quantizer: ``llama-cpp-python==VERSION`` that quantized it ('' for F16/F32 exports).
        requantized_from: The quant type of the GGUF file it was re-quantized from ('' when
            made from a Hugging Face folder).
    """

    path: Path
    sha256: str
    quant: str
    source_sha256: str
    exporter_version: str
    quantizer: str = ""
    requantized_from: str = ""

    def provenance(self) -> tuple[tuple[str, str], ...]:
        """What a run records about the file, as ordered pairs."""
        return (
            ("gguf_sha256", self.sha256),
            ("gguf_quant", self.quant),
            ("gguf_source_sha256", self.source_sha256),
            ("gguf_exporter_version", self.exporter_version),
            ("gguf_quantizer", self.quantizer),
        ) + ((("gguf_requantized_from", self.requantized_from),) if self.requantized_from else ())


def _file_name(quant: str, quantizer: LlamaCppQuantizer | None) -> str:
    name = f"{quant}.x{EXPORTER_VERSION}"
    if quantizer is not None:
        name += "." + re.sub(r"[^A-Za-z0-9_.\-]+", "_", quantizer.label)
    return name + ".gguf"


def _locked(folder: Path) -> contextlib.AbstractContextManager[None]:
    """This host's lock on ``folder`` (two campaigns converting one model wait for each other)."""
    return file_lock(folder / ".lock")


def _reuse(path: Path) -> GGUFBuild | None:
    record = path.with_name(path.name + ".json")
    if not (path.is_file() and record.is_file()):
        return None
    try:
        data = json.loads(record.read_text())
        build = GGUFBuild(**{**data, "path": path})
    except (json.JSONDecodeError, TypeError):
        return None
    # A damaged or replaced file is made again, never served under the recorded hash.
    return build if sha256_file(path) == build.sha256 else None


def _record(build: GGUFBuild) -> GGUFBuild:
    record = build.path.with_name(build.path.name + ".json")
    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    data = {k: v for k, v in asdict(build).items() if k != "path"}
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, record)
    return build


def build_gguf(
    folder: Path,
    source_sha256: str,
    quant: str,
    *,
    quantizer: LlamaCppQuantizer | None = None,
    name: str = "",
) -> GGUFBuild:
    """The GGUF file of ``folder`` at ``quant``, made (and cached) if it isn't cached yet.

    F16/F32 are written by the lab's exporter; every other type is llama.cpp's quantization of
    the (also cached) F16 export, which needs ``quantizer``.

    Args:
        folder: The Hugging Face folder.
        source_sha256: Its content hash (``models.folder_sha256``): the cache key.
        quant: ``f16``, ``f32``, ``q8_0``, ``q4_k_m``...
        quantizer: llama.cpp's quantizer, for types other than F16/F32.
        name: ``general.name`` written into the file.

    Raises:
        ModelError: the folder can't be exported, or quantization failed.
        SpecError: ``quant`` is unknown, or needs a quantizer and none was given.
    """
    from evallab.errors import SpecError

    label = normalize_quant(quant)
    cache = gguf_cache_dir() / source_sha256
    if label in EXPORT_TYPES:
        path = cache / _file_name(label, None)
        with _locked(cache):
            found = _reuse(path)
            if found is not None:
                return found
            export_gguf(folder, path, quant=label, source_sha256=source_sha256, name=name)
            return _record(
                GGUFBuild(path, sha256_file(path), label, source_sha256, EXPORTER_VERSION)
            )
    if quantizer is None:
        raise SpecError(
            f"quant {label} is made with llama.cpp's quantizer, which needs a llama.cpp runtime",
            value=folder,
            fix="add a runtime of kind llamacpp to the campaign, or use quant f16 / f32",
        )
    path = cache / _file_name(label, quantizer)
    found = _reuse(path)
    if found is not None:
        return found
    f16 = build_gguf(folder, source_sha256, "f16", name=name)
    with _locked(cache):
        found = _reuse(path)
        if found is not None:
            return found
        quantizer.quantize(f16.path, path, label)
        return _record(
            GGUFBuild(
                path, sha256_file(path), label, source_sha256, EXPORTER_VERSION, quantizer.label
            )
        )


def requantize_gguf(
    src: Path, src_sha256: str, src_quant: str, quant: str, quantizer: LlamaCppQuantizer
) -> GGUFBuild:
    """``src`` (an already quantized GGUF, e.g. a model's shipped Q4_1) re-quantized to ``quant``.

    Cached under ``<lab home>/gguf/<src sha256>/`` like conversions; the result records the file
    and type it came from, since its error is the sum of both roundings.
    """
    label = normalize_quant(quant)
    cache = gguf_cache_dir() / src_sha256
    path = cache / ("requant-" + _file_name(label, quantizer))
    with _locked(cache):
        found = _reuse(path)
        if found is not None:
            return found
        quantizer.quantize(src, path, label, requantize=True)
        return _record(
            GGUFBuild(
                path,
                sha256_file(path),
                label,
                src_sha256,
                "",
                quantizer.label,
                requantized_from=src_quant,
            )
        )
