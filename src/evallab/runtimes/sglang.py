"""SGLang's OpenAI-compatible server, from its own pinned virtualenv (GPU machines).

SGLang has no CPU build that runs here, so what the lab controls — the exact command line, the
environment, health and version endpoints — is unit-tested, and the session itself is the same
:class:`~evallab.runtimes.server.ServerSession` vLLM uses
(through :class:`~evallab.runtimes.openai_server.OpenAIServerRuntime`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evallab.models import ModelArtifact
from evallab.runtimes.openai_server import OpenAIServerRuntime
from evallab.runtimes.venvs import InstalledRuntime, InstallRecipe
from evallab.spec import SGLangRuntimeSpec

__all__ = ["SGLANG_HEALTH", "SGLANG_VERSION_PATHS", "SGLangRuntime", "sglang_command", "sglang_env"]

SGLANG_HEALTH = "/health"
#: ``/get_server_info`` carries ``version`` on every release; newer ones also answer ``/version``.
SGLANG_VERSION_PATHS = ("/version", "/server_info", "/get_server_info")

_SGLANG_QUANTS = frozenset(
    {
        "awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "w8a8_int8", "w8a8_fp8",
        "compressed-tensors", "bitsandbytes", "marlin", "modelopt", "modelopt_fp4", "mxfp4",
        "moe_wna16", "qoq", "w4afp8", "gguf",
    }
)  # fmt: skip


def sglang_env(venv: InstalledRuntime) -> dict[str, str]:
    """The server's environment: the lab's minus its Python settings, the venv first on PATH."""
    env = venv.server_env()
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def sglang_command(
    spec: SGLangRuntimeSpec, model: ModelArtifact, python: str | Path, port: int
) -> list[str]:
    """The exact ``sglang.launch_server`` command line for ``spec`` serving ``model``."""
    cmd = [
        str(python),
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(model.path),
        "--served-model-name",
        model.name,
        "--host",
        spec.host,
        "--port",
        str(port),
        "--dtype",
        spec.dtype,
        "--context-length",
        str(spec.max_model_len),
        "--tp-size",
        str(spec.tensor_parallel_size),
        "--mem-fraction-static",
        str(spec.mem_fraction_static),
        "--random-seed",
        str(spec.seed),
    ]
    if spec.quantization:
        cmd += ["--quantization", spec.quantization]
    cmd += list(spec.extra_args)
    return cmd


class SGLangRuntime(OpenAIServerRuntime[SGLangRuntimeSpec]):
    """SGLang from ``<runtimes dir>/sglang-<version>``."""

    kind = "sglang"
    server_name = "SGLang"
    spec_type = SGLangRuntimeSpec
    quantizations = _SGLANG_QUANTS
    health_path = SGLANG_HEALTH
    version_paths = SGLANG_VERSION_PATHS

    @staticmethod
    def install_recipe(version: str, package: str | None = None) -> InstallRecipe:
        """How to install ``sglang==version``."""
        return InstallRecipe(package=package or "sglang", version=version, import_name="sglang")

    def command(
        self, spec: SGLangRuntimeSpec, model: ModelArtifact, python: str | Path, port: int
    ) -> list[str]:
        """See :func:`sglang_command`."""
        return sglang_command(spec, model, python, port)

    def env(self, spec: SGLangRuntimeSpec, venv: InstalledRuntime) -> dict[str, str]:
        """See :func:`sglang_env`."""
        return sglang_env(venv)

    def provenance(self, spec: SGLangRuntimeSpec, venv: InstalledRuntime) -> dict[str, Any]:
        """The shared settings and SGLang's static memory share."""
        return {**super().provenance(spec, venv), "mem_fraction_static": spec.mem_fraction_static}
