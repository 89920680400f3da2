"""Property tests: whatever campaign file or command line a user gives, the CLI answers with exit
0 or 2 and a message, never a traceback, and never leaves anything half-written.

Campaign files go through ``evallab run --check`` (the validation ``evallab run`` does before it
opens the database or starts a model); command lines through the whole app, with the database
pointed at a closed port. Profiles: ``HYPOTHESIS_PROFILE=ci`` (derandomized, for CI) or the
default ``dev``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evallab.runtimes.process import free_port
from tests.cli_inproc import cli
from tests.helpers import REPO

_COMMON: dict[str, Any] = {
    "max_examples": 100,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("dev", **_COMMON)
PROFILE = settings.get_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "dev")
    if os.environ.get("HYPOTHESIS_PROFILE") in ("ci", "dev")
    else "dev"
)

DEMO_TEXT = (REPO / "deployments" / "demo.yaml").read_text()
DEMO: dict[str, Any] = yaml.safe_load(DEMO_TEXT)

KEYS = [
    "name", "description", "seed", "allow_unpinned", "models", "runtimes", "benchmarks",
    "checks", "source", "repo", "revision", "path", "quant", "chat", "gguf_file", "layers",
    "hidden", "finetune_task", "kind", "version", "dtype", "device", "batch_size", "harness",
    "tasks", "limit", "num_fewshot", "generation", "pass_k", "dataset_files",
    "dataset_revisions", "canary", "max_gen_toks", "n",
]  # fmt: skip
WORDS = [
    "tiny", "hf", "local", "lm_eval", "code", "demo_mc", "demo_gen", "humaneval", "mbpp",
    "transformers", "vllm", "openai-endpoint", "main", "org/model", "0" * 40, "z" * 40,
    "[/x]", "[bold]", "{{ x }}", "../..", "~", "", " ", "\x00", "💥", "1e309", "-1", "null",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(WORDS),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def mutated_demo(draw: st.DrawFn) -> dict[str, Any]:
    """The demo campaign with a few keys (at any depth) replaced, added or removed."""
    spec: Any = yaml.safe_load(DEMO_TEXT)
    for _ in range(draw(st.integers(1, 3))):
        node = spec
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(
                st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
            )
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        if isinstance(node, dict):
            # An emptied mapping has no keys of its own left to pick from.
            keys = (
                st.sampled_from(sorted(node)) | st.sampled_from(KEYS)
                if node
                else st.sampled_from(KEYS)
            )
            key = draw(keys)
            if draw(st.booleans()) and key in node:
                del node[key]
            else:
                node[key] = draw(values)
        elif isinstance(node, list):
            node.append(draw(values))
    return spec  # type: ignore[no-any-return]


def _dump(spec: Any) -> bytes:
    if isinstance(spec, dict):
        # A campaign's tasks folder is the repository's: a random one ("/") would have the
        # check walk the whole filesystem for task YAMLs.
        spec["tasks_dir"] = str(REPO / "tasks_custom")
    return yaml.safe_dump(spec, allow_unicode=True).encode()


campaign_files = st.one_of(
    mutated_demo().map(_dump),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(_dump),
    values.map(_dump),
    st.binary(max_size=300),
    st.integers(1, len(DEMO_TEXT) - 1).map(lambda n: DEMO_TEXT[:n].encode()),
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private lab home and a results database URL nothing answers on."""
    home = tmp_path_factory.mktemp("fuzz-home")
    names = ("EVALLAB_HOME", "EVALLAB_DATABASE_URL", "EVALLAB_RUNS_DIR", "EVALLAB_DEBUG")
    old = {k: os.environ.get(k) for k in names}
    os.environ["EVALLAB_HOME"] = str(home)
    os.environ["EVALLAB_DATABASE_URL"] = f"postgresql://lab@127.0.0.1:{free_port()}/none"
    os.environ.pop("EVALLAB_RUNS_DIR", None)
    os.environ.pop("EVALLAB_DEBUG", None)
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _assert_nothing_written(home: Path) -> None:
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@PROFILE
@given(content=campaign_files)
@example(content=b"a: " + b"[" * 20_000 + b"]" * 20_000)  # deeper than Python's recursion limit
@example(content=b"&a [*a]")  # a list that contains itself
@example(content=b"\xef\xbb\xbfname: c")  # a UTF-8 byte-order mark
def test_any_campaign_file_is_valid_or_one_message(lab: Path, content: bytes) -> None:
    path = lab / "campaign.yaml"
    path.write_bytes(content)
    rc, out = cli(["run", "--check", str(path)])
    assert rc in (0, 2), out
    assert "Traceback" not in out
    if rc == 2:
        assert out.startswith("error: ") and out.count("\nerror: ") == 0, out
    else:
        assert "is valid" in out
    _assert_nothing_written(lab)


# Commands that start servers, install packages or talk to Prefect are left out: random
# arguments to them could do real, slow work.
_SAFE = [
    ["run"], ["results"], ["ingest"], ["regressions"], ["compare"], ["diff"], ["matrix"],
    ["prefetch"], ["db"], ["db", "status"], ["runtime"], ["runtime", "list"], ["pins"],
    ["pins", "check"], ["canary"], ["canary", "baseline"], ["report"], [],
]  # fmt: skip
_TOKENS = st.one_of(
    st.sampled_from(
        [
            "--help", "--json", "--limit", "--model", "--task", "--resume", "--check",
            "--offline", "--flips", "--seed", "--reference", "--reset", "-x", "--", "-",
            "[/x]", "[bold]", "model=[/x]", "0", "-1", "nan", "deployments/demo.yaml",
        ]
    ),
    st.text(max_size=12).filter(lambda t: "\x00" not in t),
)  # fmt: skip


@PROFILE
@given(command=st.sampled_from(_SAFE), rest=st.lists(_TOKENS, max_size=5))
def test_any_command_line_exits_0_or_2_without_a_traceback(
    lab: Path, command: list[str], rest: list[str]
) -> None:
    args = [*command, *rest]
    if "--check" not in args and args[:1] == ["run"] and "deployments/demo.yaml" in args:
        args.append("--check")  # never evaluate the demo for real here
    rc, out = cli(args)
    assert rc in (0, 2), (args, out)
    assert "Traceback" not in out, (args, out)
    _assert_nothing_written(lab)
