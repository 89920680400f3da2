"""The commands as a user runs them: `evallab compare|diff|matrix|report build`."""

from __future__ import annotations

import json
from pathlib import Path

from seedlab import Seeded

from tests.helpers import evallab


def test_compare_table_and_json(seeded: Seeded) -> None:
    proc = evallab(["compare", "model=tiny-base,campaign=demo", "model=tiny-ft"], dsn=seeded.dsn)
    assert proc.returncode == 0, proc.stderr
    assert "demo_gen" in proc.stdout and "B better" in proc.stdout
    assert "mcnemar-exact" in proc.stdout
    assert "Say word0 2 times:" in proc.stdout  # a flipped document's prompt
    proc = evallab(
        ["compare", str(seeded.runs["base"])[:8], "model=tiny-ft", "--json"], dsn=seeded.dsn
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    gen = next(c for c in data["comparisons"] if c["task"] == "demo_gen")
    assert gen["significant"] and gen["ci_low"] > 0 and gen["verdict"] == "B better"
    assert gen["flips"][0]["output_b"] == "tiny-ft wrong answer 0"


def test_bad_input_exits_non_zero_with_a_message(seeded: Seeded, migrated_dsn: str) -> None:
    proc = evallab(["compare", "0000dead", "model=tiny-ft"], dsn=seeded.dsn)
    assert proc.returncode == 2
    assert "no run has an id starting with this prefix" in proc.stderr
    proc = evallab(["compare", "model=llama-8b", "model=tiny-ft"], dsn=seeded.dsn)
    assert proc.returncode == 2 and "different configurations" in proc.stderr
    proc = evallab(["compare", "model=tiny-base", "model=coder"], dsn=seeded.dsn)
    assert proc.returncode == 2 and "share no scored task" in proc.stderr
    proc = evallab(["matrix", "demo"], dsn=migrated_dsn)
    assert proc.returncode == 2 and "holds no runs" in proc.stderr
    proc = evallab(["report", "build", "--out", "/tmp/never-written"], dsn=migrated_dsn)
    assert proc.returncode == 2 and "holds no runs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_diff_and_matrix(seeded: Seeded, tmp_path: Path) -> None:
    proc = evallab(
        [
            "diff",
            str(seeded.runs["nightly3-none-transformers"]),
            str(seeded.runs["drift"]),
            "--json",
        ],
        dsn=seeded.dsn,
    )
    assert proc.returncode == 0, proc.stderr
    fields = {d["field"]: (d["a"], d["b"]) for d in json.loads(proc.stdout)["differences"]}
    assert fields["generation_config.temperature"] == ("0.0", "0.7")
    proc = evallab(
        [
            "diff",
            str(seeded.runs["nightly3-none-transformers"]),
            str(seeded.runs["nightly3-none-vllm-0.32"]),
        ],
        dsn=seeded.dsn,
    )
    assert proc.returncode == 0 and "runtime_version" in proc.stdout and "0.32.0" in proc.stdout
    proc = evallab(["matrix", "nightly", "--reference", "awq"], dsn=seeded.dsn)
    assert proc.returncode == 0, proc.stderr
    assert "llama-8b@awq / transformers (ref)" in proc.stdout
    assert "Δ +0.1375*" in proc.stdout  # full precision beats awq on arc_easy
    proc = evallab(["report", "build", "--out", str(tmp_path / "site")], dsn=seeded.dsn)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "index.html").exists() and "17 runs" in proc.stdout
