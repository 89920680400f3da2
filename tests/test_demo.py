"""The quick start's demo campaign, end to end, and the fine-tune story it tells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_campaign_and_finetune_gain_is_significant(pg_dsn: str, lab_home: Path) -> None:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "evallab.cli", "run", "deployments/demo.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Campaign demo — succeeded" in run.stdout
    for needle in ("tiny-base", "tiny-ft", "demo_mc", "demo_gen", "exact_match"):
        assert needle in run.stdout

    cmp = subprocess.run(
        [
            sys.executable,
            "-m",
            "evallab.cli",
            "compare",
            "model=tiny-base,campaign=demo",
            "model=tiny-ft,campaign=demo",
            "--json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    report = json.loads(cmp.stdout)
    gen = next(c for c in report["comparisons"] if c["task"] == "demo_gen")
    assert gen["n"] == 100 and gen["test"] == "mcnemar-exact"
    assert gen["mean_b"] > gen["mean_a"] + 0.5
    assert gen["ci_low"] > 0.3 and gen["p_value"] < 1e-6 and gen["significant"]
    flip = gen["flips"][0]
    assert flip["direction"] == "gained" and flip["prompt"].startswith("Say ")
