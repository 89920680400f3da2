"""Every campaign under ``deployments/`` stays runnable: pinned, known tasks, servable, sized.

Offline and fast: the files go through the lab's own loader, harness checks, task catalog
(lm-eval's local task index) and pin rules — nothing is downloaded and no server starts — so an
example that would be refused on the GPU box (a branch revision, a task lm-eval no longer has,
a GGUF quant on vLLM, tensor parallelism over more GPUs than its folder declares) fails CI
instead.

GPU campaigns live in ``deployments/gpu-box/<N>x<gpu>/``: the folder declares the GPUs a
campaign of it uses (``2x3090``: two), which is what its runtimes' ``tensor_parallel_size``
must match.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evallab.errors import UnknownTaskError
from evallab.harnesses import get_harness
from evallab.models import ModelArtifact
from evallab.pins import dataset_pins
from evallab.quant import is_gguf_quant
from evallab.runtimes import get_runtime
from evallab.spec import (
    BenchmarkSpec,
    CampaignSpec,
    HubModelSpec,
    LlamaCppRuntimeSpec,
    SGLangRuntimeSpec,
    TransformersRuntimeSpec,
    VLLMRuntimeSpec,
    load_campaign,
)
from evallab.spec.models import ModelSpec, PackageModelSpec

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = REPO / "deployments"
GPU_BOX = DEPLOYMENTS / "gpu-box"
FILES = sorted(DEPLOYMENTS.rglob("*.y*ml"))
BOX_FOLDER = re.compile(r"^(?P<gpus>[1-9][0-9]*)x[a-z0-9]+$")
EXACT_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)+([a-z]+[0-9]+)?(\+[0-9a-z.]+)?$")
GGUF_QUANT = re.compile(
    r"(?i)(?:^|[-_.])(i?q[0-9]_[0-9a-z_]+?|f16|bf16|f32)(?:-[0-9]{5}-of-|\.gguf$)"
)
# GGUF files whose sha256 no one has verified yet; each is still pinned by its hub commit (the
# hub stores a file under its sha256). Adding a GGUF model without gguf_sha256 fails this test
# unless it is listed here, with the reason.
UNVERIFIED_GGUF = {
    "qwen2.5-7b-q8_0": "sha256 of the official Q8_0 parts not published where it could be checked",
}


def _load(path: Path) -> tuple[CampaignSpec, Path]:
    return load_campaign(path)


def _declared_gpus(path: Path) -> int | None:
    """GPUs a campaign's folder declares (``gpu-box/2x3090`` -> 2); None outside gpu-box."""
    if GPU_BOX not in path.parents:
        return None
    m = BOX_FOLDER.match(path.parent.name)
    assert m, f"{path}: GPU campaigns live in deployments/gpu-box/<N>x<gpu>/"
    return int(m["gpus"])


def _artifact(model: ModelSpec) -> ModelArtifact:
    """The model as runtimes see it, without fetching it (for their offline checks)."""
    gguf = Path(model.gguf_file) if model.gguf_file else None
    return ModelArtifact(
        name=model.name,
        source=model.source,
        model_id=getattr(model, "repo", model.name),
        revision=getattr(model, "revision", ""),
        sha256="",
        path=Path("."),
        quant=model.quant,
        chat=model.chat,
        gguf_path=gguf,
    )


def _offline(*args: object, **kwargs: object) -> tuple[str, str]:
    raise AssertionError(f"a pin needed the hub: {args}")


def test_the_gpu_box_examples_are_there() -> None:
    names = {p.relative_to(DEPLOYMENTS).as_posix() for p in FILES}
    assert {
        "demo.yaml",
        "gpu-box/1x4090/qwen2.5-7b-vllm.yaml",
        "gpu-box/1x4090/qwen2.5-7b-gguf.yaml",
        "gpu-box/2x3090/llama3.1-70b-awq.yaml",
    } <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(DEPLOYMENTS).as_posix())
def test_campaign_is_pinned_known_and_servable(path: Path) -> None:
    spec, base = _load(path)
    tasks_dir = spec.tasks_dir if spec.tasks_dir.is_absolute() else base / spec.tasks_dir

    assert not spec.allow_unpinned, f"{path}: examples never run unpinned"
    for model in spec.models:
        if isinstance(model, HubModelSpec):
            assert model.is_pinned, f"{model.name}: revision {model.revision!r} is not a commit"
        if model.gguf_file:
            assert model.gguf_sha256 or model.name in UNVERIFIED_GGUF, (
                f"{model.name}: set gguf_sha256 to the sha256 of {model.gguf_file}"
            )
            found = GGUF_QUANT.search(model.gguf_file)
            assert found and found[1].upper() == model.quant.upper(), (
                f"{model.name}: quant {model.quant!r} but the file is {model.gguf_file!r}"
            )

    for runtime in spec.runtimes:
        version = getattr(runtime, "version", None)
        if isinstance(runtime, TransformersRuntimeSpec):
            continue  # the lab's own environment, pinned by requirements.lock
        assert version and EXACT_VERSION.match(version), f"{runtime.display}: pin an exact version"

    # Tasks exist (lm-eval's local index + tasks_custom/, the code harness's datasets) and every
    # hub dataset is pinned to a commit: the resolver is never asked.
    for bench in spec.benchmarks:
        get_harness(bench.harness).check(bench, tasks_dir, base)
        for row in dataset_pins(bench, tasks_dir, base, _offline, allow_unpinned=False):
            assert row.status in ("ok", "info"), f"{bench.name}: {row}"

    # Every (model, runtime) pair the campaign runs can be served, and each runtime can run
    # every benchmark (llama.cpp refuses multiple-choice tasks).
    for model, runtime in spec.pairs():
        served = get_runtime(runtime.kind)
        artifact = _artifact(model)
        if isinstance(runtime, LlamaCppRuntimeSpec):
            # A GGUF file of its own, one shipped in a package, or one the lab makes (quant: q4_k_m).
            assert (
                model.gguf_file or isinstance(model, PackageModelSpec) or is_gguf_quant(model.quant)
            ), f"{model.name} has no GGUF for llama.cpp (gguf_file, or a GGUF quant to make)"
        elif isinstance(runtime, VLLMRuntimeSpec | SGLangRuntimeSpec):
            assert not model.gguf_file, f"{model.name}: GGUF files are llama.cpp's"
            served.check_quantization(runtime, artifact)  # type: ignore[attr-defined]
        capabilities = served.capabilities(runtime, artifact)
        for bench in spec.benchmarks:
            get_harness(bench.harness).check_runtime(bench, capabilities, tasks_dir)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(DEPLOYMENTS).as_posix())
def test_gpu_settings_match_the_gpus_declared(path: Path) -> None:
    spec, _ = _load(path)
    gpus = _declared_gpus(path)
    for runtime in spec.runtimes:
        if isinstance(runtime, VLLMRuntimeSpec | SGLangRuntimeSpec):
            assert runtime.tensor_parallel_size == (gpus or 1), (
                f"{runtime.display}: tensor_parallel_size {runtime.tensor_parallel_size}, "
                f"{path.parent.name} declares {gpus or 1} GPU(s)"
            )
        if gpus is None:
            continue
        if isinstance(runtime, VLLMRuntimeSpec):
            assert not runtime.package.endswith("-cpu"), "GPU campaigns use vLLM's CUDA build"
        if isinstance(runtime, LlamaCppRuntimeSpec):
            # The llama.cpp runtime has no multi-GPU setting: its campaigns use one GPU.
            assert gpus == 1 and runtime.n_gpu_layers == -1, "llama.cpp: one GPU, every layer"
        if isinstance(runtime, TransformersRuntimeSpec):
            assert runtime.device.startswith("cuda"), "a GPU campaign runs on the GPU"
    if gpus is not None:
        # The telemetry thresholds are chosen for the box, not left at the defaults.
        assert {"max_temperature_c", "temperature_window_s"} <= spec.checks.model_fields_set
        assert spec.checks.canary == "fail"


def test_a_custom_group_pinning_a_standard_task_is_known_and_a_typo_is_not() -> None:
    tasks_dir = REPO / "tasks_custom"
    harness = get_harness("lm_eval")
    pinned = BenchmarkSpec(name="b", tasks=("gsm8k_pinned", "demo_gen"))
    harness.check(pinned, tasks_dir, REPO)
    rows = dataset_pins(pinned, tasks_dir, REPO, _offline, allow_unpinned=False)
    assert {(r.name, r.resolved, r.status) for r in rows} >= {
        ("gsm8k", "740312add88f781978c0658806c59bc2815b9866", "ok")
    }
    with pytest.raises(UnknownTaskError, match="unknown task") as err:
        harness.check(BenchmarkSpec(name="b", tasks=("gsm8k_pined",)), tasks_dir, REPO)
    assert "gsm8k_pinned" in err.value.fix
