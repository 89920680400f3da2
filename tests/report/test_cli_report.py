"""The commands as a user runs them: `evallab compare|diff|matrix|report build`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from seedlab import Seeded


def evallab(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVALLAB_DATABASE_URL": dsn, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "evallab.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_compare_table_and_json(seeded: Seeded) -> None:
    proc = evallab(seeded.dsn, "compare", "model=tiny-base,campaign=demo", "model=tiny-ft")
    assert proc.returncode == 0, proc.stderr
    assert "demo_gen" in proc.stdout and "B better" in proc.stdout
    assert "mcnemar-exact" in proc.stdout
    assert "Say word0 2 times:" in proc.stdout  # a flipped document's prompt
    proc = evallab(seeded.dsn, "compare", str(seeded.runs["base"])[:8], "model=tiny-ft", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    gen = next(c for c in data["comparisons"] if c["task"] == "demo_gen")
    assert gen["significant"] and gen["ci_low"] > 0 and gen["verdict"] == "B better"
    assert gen["flips"][0]["output_b"] == "tiny-ft wrong answer 0"


def test_bad_input_exits_non_zero_with_a_message(seeded: Seeded, migrated_dsn: str) -> None:
    proc = evallab(seeded.dsn, "compare", "0000dead", "model=tiny-ft")
    assert proc.returncode == 2
    assert "no run has an id starting with this prefix" in proc.stderr
    proc = evallab(seeded.dsn, "compare", "model=llama-8b", "model=tiny-ft")
    assert proc.returncode == 2 and "different configurations" in proc.stderr
    proc = evallab(seeded.dsn, "compare", "model=tiny-base", "model=coder")
    assert proc.returncode == 2 and "share no scored task" in proc.stderr
    proc = evallab(migrated_dsn, "matrix", "demo")
    assert proc.returncode == 2 and "holds no runs" in proc.stderr
    proc = evallab(migrated_dsn, "report", "build", "--out", "/tmp/never-written")
    assert proc.returncode == 2 and "holds no runs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_diff_and_matrix(seeded: Seeded, tmp_path: Path) -> None:
    proc = evallab(
        seeded.dsn,
        "diff",
        str(seeded.runs["nightly3-none-transformers"]),
        str(seeded.runs["drift"]),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    fields = {d["field"]: (d["a"], d["b"]) for d in json.loads(proc.stdout)["differences"]}
    assert fields["generation_config.temperature"] == ("0.0", "0.7")
    proc = evallab(
        seeded.dsn,
        "diff",
        str(seeded.runs["nightly3-none-transformers"]),
        str(seeded.runs["nightly3-none-vllm-0.32"]),
    )
    assert proc.returncode == 0 and "runtime_version" in proc.stdout and "0.32.0" in proc.stdout
    proc = evallab(seeded.dsn, "matrix", "nightly", "--reference", "awq")
    assert proc.returncode == 0, proc.stderr
    assert "llama-8b@awq / transformers (ref)" in proc.stdout
    assert "Δ +0.1375*" in proc.stdout  # full precision beats awq on arc_easy
    proc = evallab(seeded.dsn, "report", "build", "--out", str(tmp_path / "site"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "index.html").exists() and "17 runs" in proc.stdout
