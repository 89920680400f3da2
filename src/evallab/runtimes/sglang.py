"""SGLang's OpenAI-compatible server, from its own pinned virtualenv (GPU machines).

SGLang has no CPU build that runs here, so what the lab controls — the exact command line, the
environment, health and version endpoints — is unit-tested, and the session itself is the same
:class:`ServerSession` vLLM uses.
"""

from __future__ import annotations

from pathlib import Path

from evallab.errors import SpecError
from evallab.models import ModelArtifact
from evallab.runtimes.process import check_port_free
from evallab.runtimes.server import (
    ClientSettings,
    ServerLaunch,
    ServerSession,
    check_context_length,
)
from evallab.runtimes.venvs import InstalledRuntime, InstallRecipe, find_installed
from evallab.runtimes.vllm import GGUF_QUANTS
from evallab.spec import BenchmarkSpec, RuntimeSpec, SGLangRuntimeSpec

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


class SGLangRuntime:
    """SGLang from ``<runtimes dir>/sglang-<version>``."""

    kind = "sglang"
    supports_loglikelihood = True

    @staticmethod
    def install_recipe(version: str, package: str | None = None) -> InstallRecipe:
        """How to install ``sglang==version``."""
        return InstallRecipe(package=package or "sglang", version=version, import_name="sglang")

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        """Refuse bad combinations before anything starts.

        Raises:
            SpecError: wrong spec kind, unknown quantization, or a GGUF model.
            ModelError: max_model_len beyond the model's positions.
            RuntimeLaunchError: the runtime virtualenv isn't installed.
            PortInUseError: the fixed port is taken.
        """
        if not isinstance(spec, SGLangRuntimeSpec):
            raise SpecError("sglang runtime got a spec of another kind", value=spec.kind)
        if model.quant.upper() in GGUF_QUANTS or model.gguf_path is not None:
            raise SpecError(
                f"model {model.name!r} is a GGUF quant ({model.quant})",
                value=model.quant,
                fix="serve GGUF files with a 'kind: llamacpp' runtime",
            )
        if spec.quantization is not None and spec.quantization not in _SGLANG_QUANTS:
            raise SpecError(
                f"SGLang does not know quantization {spec.quantization!r}",
                value=spec.quantization,
                fix=f"use one of {', '.join(sorted(_SGLANG_QUANTS))}",
            )
        check_context_length(model, spec.max_model_len, "sglang")
        find_installed(self.kind, spec.version, "sglang")
        if spec.port:
            check_port_free(spec.host, spec.port)

    def launch_spec(
        self, spec: SGLangRuntimeSpec, model: ModelArtifact, workdir: Path, venv: InstalledRuntime
    ) -> ServerLaunch:
        """Everything :class:`ServerSession` needs to start (and restart) the server."""

        def build(port: int) -> list[str]:
            return sglang_command(spec, model, venv.python, port)

        return ServerLaunch(
            kind=self.kind,
            label=spec.display,
            build_command=build,
            env=sglang_env(venv),
            host=spec.host,
            port=spec.port,
            health_path=SGLANG_HEALTH,
            version_paths=SGLANG_VERSION_PATHS,
            served_model=model.name,
            startup_timeout_s=spec.startup_timeout_s,
            log_path=workdir / f"sglang-{spec.version}-{model.name}.log",
            version=spec.version,
            commit=venv.commit,
            settings=ClientSettings(
                tokenized_requests=True,
                num_concurrent=spec.concurrency,
                max_length=spec.max_model_len,
                tokenizer=str(model.path),
                seed=spec.seed,
            ),
            extra={
                "venv": venv.path,
                "venv_freeze_sha256": venv.freeze_sha256,
                "dtype": spec.dtype,
                "max_model_len": spec.max_model_len,
                "quantization": spec.quantization,
                "tensor_parallel_size": spec.tensor_parallel_size,
                "mem_fraction_static": spec.mem_fraction_static,
                "seed": spec.seed,
                "extra_args": list(spec.extra_args),
            },
        )

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> ServerSession:
        """Start the server and wait for ``/health``.

        Raises:
            RuntimeLaunchError: not installed, crashed while starting, or never healthy.
        """
        self.check(spec, model, ())
        if not isinstance(spec, SGLangRuntimeSpec):
            raise SpecError("sglang runtime got a spec of another kind", value=spec.kind)
        venv = find_installed(self.kind, spec.version, "sglang")
        return ServerSession.start(self.launch_spec(spec, model, workdir, venv), model)
