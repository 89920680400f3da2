"""llama-cpp-python's OpenAI-compatible server for GGUF quants (generation tasks only).

Its ``/v1/completions`` with ``echo`` returns prompt logprobs shifted by one position, so
loglikelihood and multiple-choice scores would come out silently wrong: its capabilities say so,
and harnesses refuse those tasks before the run. The GGUF file's sha256 and quant type (read
from its header) are recorded.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

from evallab.errors import ModelError
from evallab.models import ModelArtifact, sha256_file
from evallab.runtimes.base import Capabilities, ClientSettings, expect_spec
from evallab.runtimes.process import check_port_free
from evallab.runtimes.server import ServerLaunch, ServerSession
from evallab.runtimes.venvs import InstallRecipe, find_installed
from evallab.spec import BenchmarkSpec, LlamaCppRuntimeSpec, RuntimeSpec

__all__ = [
    "DEFAULT_CMAKE_ARGS",
    "GENERATION_OVERRIDES",
    "GGUF_FILE_TYPES",
    "LOGLIKELIHOOD_REFUSAL",
    "LlamaCppRuntime",
    "gguf_file_type",
    "gguf_path",
    "llamacpp_command",
]

_PACKAGE = "llama-cpp-python"
#: CMake flags of the lab's default llama.cpp build: portable x86-64 (AVX2/FMA, not -march=native,
#: so a cached wheel runs on any recent CPU), text models only (no multimodal library, tools,
#: tests or examples: they double the compile time and the lab never calls them).
DEFAULT_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
    "-DLLAMA_BUILD_TOOLS=OFF"
)
# Build facts the compiled library reports about itself, recorded with the runtime.
_BUILD_INFO = (
    "import json, llama_cpp\n"
    "print(json.dumps({'system_info': llama_cpp.llama_print_system_info().decode().strip(),"
    " 'gpu_offload': bool(llama_cpp.llama_supports_gpu_offload())}))"
)
LOGLIKELIHOOD_REFUSAL = (
    "llama.cpp's server returns prompt logprobs shifted by one position, so loglikelihood and "
    "multiple-choice tasks would be scored wrong; the lab refuses them on this runtime"
)
# Generation settings llama-cpp-python's server defaults differently from every other runtime
# (repeat_penalty 1.1); harnesses send these with each request so greedy means greedy.
GENERATION_OVERRIDES: dict[str, float] = {"repeat_penalty": 1.0}

#: llama.cpp's ``general.file_type`` enum (llama_ftype) -> quant label.
GGUF_FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE",
}  # fmt: skip

# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


def _read(fh: BinaryIO, fmt: str) -> int | float | bool:
    size = struct.calcsize("<" + fmt)
    data = fh.read(size)
    if len(data) != size:
        raise EOFError("truncated GGUF header")
    value: int | float | bool = struct.unpack("<" + fmt, data)[0]
    return value


def _read_str(fh: BinaryIO) -> str:
    n = int(_read(fh, "Q"))
    return fh.read(n).decode("utf-8", errors="replace")


def _skip_value(fh: BinaryIO, vtype: int) -> None:
    if vtype in _SCALARS:
        fh.seek(struct.calcsize("<" + _SCALARS[vtype]), os.SEEK_CUR)
    elif vtype == 8:
        fh.seek(int(_read(fh, "Q")), os.SEEK_CUR)
    elif vtype == 9:
        item_type = int(_read(fh, "I"))
        count = int(_read(fh, "Q"))
        if item_type in _SCALARS:
            fh.seek(count * struct.calcsize("<" + _SCALARS[item_type]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(fh, item_type)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_file_type(path: Path) -> str:
    """The quant type a GGUF file declares (``general.file_type``), e.g. ``Q4_K_M``.

    Raises:
        ModelError: the file isn't GGUF or its header is damaged.
    """
    try:
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelError("not a GGUF file", value=path, fix="point gguf_file at a .gguf")
            version = int(_read(fh, "I"))
            if version < 2:
                raise ModelError(f"GGUF version {version} is too old", value=path)
            _read(fh, "Q")  # tensor count
            n_kv = int(_read(fh, "Q"))
            for _ in range(n_kv):
                key = _read_str(fh)
                vtype = int(_read(fh, "I"))
                if key == "general.file_type" and vtype in _SCALARS:
                    code = int(_read(fh, _SCALARS[vtype]))
                    return GGUF_FILE_TYPES.get(code, f"ftype_{code}")
                _skip_value(fh, vtype)
    except (EOFError, ValueError, struct.error) as exc:
        raise ModelError(
            f"GGUF header can't be read: {exc}", value=path, fix="re-download the file"
        ) from exc
    return "unknown"


def gguf_path(model: ModelArtifact) -> Path:
    """The GGUF file to serve: the model's ``gguf_file``, or the only ``.gguf`` in its folder.

    Raises:
        ModelError: none, or several without ``gguf_file`` choosing one.
    """
    if model.gguf_path is not None:
        return model.gguf_path
    found = sorted(model.path.glob("*.gguf")) if model.path.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise ModelError(
        f"model {model.name!r} has {'no' if not found else 'several'} .gguf files for llama.cpp",
        value=model.path,
        fix="set gguf_file on the model, or a GGUF quant (f16, q8_0, q4_k_m...) on a Hugging "
        "Face Llama folder for the lab to convert it",
    )


def llamacpp_command(
    spec: LlamaCppRuntimeSpec, model: ModelArtifact, python: str | Path, port: int
) -> list[str]:
    """The exact ``llama_cpp.server`` command line for ``spec`` serving ``model``."""
    cmd = [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf_path(model)),
        "--model_alias",
        model.name,
        "--host",
        spec.host,
        "--port",
        str(port),
        "--n_ctx",
        str(spec.max_model_len),
        "--n_gpu_layers",
        str(spec.n_gpu_layers),
        "--seed",
        str(spec.seed),
    ]
    cmd += list(spec.extra_args)
    return cmd


class LlamaCppRuntime:
    """llama-cpp-python's server from ``<runtimes dir>/llama-cpp-python-<version>``."""

    kind = "llamacpp"

    @staticmethod
    def install_recipe(version: str, package: str | None = None) -> InstallRecipe:
        """How to install ``llama-cpp-python[server]==version``.

        It is compiled from source (about 15 minutes on two cores the first time; the wheel is
        cached by its build flags, so later installs take seconds). ``CMAKE_ARGS`` defaults to
        :data:`DEFAULT_CMAKE_ARGS`; pass ``--build-env CMAKE_ARGS=-DGGML_CUDA=on`` for a GPU.
        """
        pkg = package or _PACKAGE
        return InstallRecipe(
            package=pkg,
            version=version,
            requirements=(f"{pkg}[server]=={version}",),
            import_name="llama_cpp.server",
            build_env={"CMAKE_ARGS": DEFAULT_CMAKE_ARGS},
            info_code=_BUILD_INFO,
        )

    def capabilities(self, spec: RuntimeSpec, model: ModelArtifact) -> Capabilities:
        """Generation only: prompt logprobs come back shifted, and prompts go as text."""
        return Capabilities(
            prompt_logprobs=False,
            prompt_logprobs_caveat=LOGLIKELIHOOD_REFUSAL,
            local_tokenizer=False,
        )

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        """Refuse non-GGUF models, a missing venv, a taken port.

        Raises:
            SpecError: the spec is of another kind.
            ModelError: no GGUF file, or one whose quant type isn't the model's label.
            RuntimeLaunchError: the runtime virtualenv isn't installed.
            PortInUseError: the fixed port is taken.
        """
        spec = expect_spec(spec, LlamaCppRuntimeSpec, self.kind)
        path = gguf_path(model)
        declared = gguf_file_type(path)
        if model.quant not in ("none", "") and model.quant.upper() != declared.upper():
            raise ModelError(
                f"model {model.name!r} is labelled quant {model.quant} but its GGUF file "
                f"declares {declared}",
                value=path,
                fix=f"set quant: {declared} on the model (or point gguf_file at the right file)",
            )
        find_installed(self.kind, spec.version, _PACKAGE)
        if spec.port:
            check_port_free(spec.host, spec.port)

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> ServerSession:
        """Start the server and wait for ``/v1/models``.

        Raises:
            RuntimeLaunchError: not installed, crashed while starting, or never healthy.
        """
        self.check(spec, model, ())
        spec = expect_spec(spec, LlamaCppRuntimeSpec, self.kind)
        venv = find_installed(self.kind, spec.version, _PACKAGE)
        path = gguf_path(model)

        def build(port: int) -> list[str]:
            return llamacpp_command(spec, model, venv.python, port)

        launch = ServerLaunch(
            kind=self.kind,
            label=spec.display,
            build_command=build,
            env=venv.server_env(),
            host=spec.host,
            port=spec.port,
            health_path="/v1/models",
            version_paths=(),
            served_model=model.name,
            startup_timeout_s=spec.startup_timeout_s,
            log_path=workdir / f"llamacpp-{spec.version}-{model.name}.log",
            version=spec.version,
            commit=venv.commit,
            settings=ClientSettings(
                # Its server takes text prompts only.
                tokenized_requests=False,
                num_concurrent=spec.concurrency,
                max_length=spec.max_model_len,
                tokenizer=None,
                seed=spec.seed,
            ),
            capabilities=self.capabilities(spec, model),
            extra={
                "venv": venv.path,
                "venv_freeze_sha256": venv.freeze_sha256,
                "build": dict(venv.extra),
                "gguf_file": str(path),
                "gguf_sha256": model.weights_sha256
                if model.gguf_path is not None
                else sha256_file(path),
                "gguf_quant_type": gguf_file_type(path),
                "n_ctx": spec.max_model_len,
                "n_gpu_layers": spec.n_gpu_layers,
                "seed": spec.seed,
                "extra_args": list(spec.extra_args),
                "generation_overrides": GENERATION_OVERRIDES,
            },
        )
        return ServerSession.start(launch, model)
