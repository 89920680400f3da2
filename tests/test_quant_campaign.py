"""The quant campaign (deployments/quant.yaml), end to end on real llama.cpp.

The fine-tuned tiny model runs in float32 on transformers (the reference) and as GGUF files the
lab converts and quantizes itself (F16, Q8_0, Q4_K_M, Q2_K) on llama.cpp's server. The deltas
must be real measurements: F16 gives the reference's answers document for document, Q4_K_M
changes at least one, and each run's throughput is stored beside its score.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, evallab, fetch, run_campaign_here

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]

CAMPAIGN = REPO / "deployments" / "quant.yaml"
REFERENCE = "tiny-long / transformers"


@pytest.fixture(scope="module")
def quant_run(pg_dsn: str, lab_home: Path) -> Any:
    from evallab.errors import LabError
    from evallab.runtimes.venvs import find_installed

    try:
        find_installed("llamacpp", "0.3.36", "llama-cpp-python")
    except LabError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}. CI must run the quant campaign.", pytrace=False)
        pytest.skip(str(exc))
    return run_campaign_here(CAMPAIGN, pg_dsn)


def _compare(dsn: str, a: str, b: str) -> dict[str, Any]:
    proc = evallab(
        ["compare", f"model={a},benchmark=quant", f"model={b},benchmark=quant", "--json"], dsn=dsn
    )
    assert proc.returncode == 0, proc.stderr
    [row] = [c for c in json.loads(proc.stdout)["comparisons"] if c["task"] == "demo_long"]
    return dict(row)


def test_every_quant_is_served_and_stored_with_its_provenance(quant_run: Any, pg_dsn: str) -> None:
    assert [r.status for r in quant_run.runs] == ["succeeded"] * 10, [
        (r.model, r.benchmark, r.reason) for r in quant_run.runs if r.status != "succeeded"
    ]
    rows = fetch(
        pg_dsn,
        "SELECT model_name, quant, runtime, samples_per_min, model_provenance, runtime_extra "
        "FROM runs WHERE campaign_id = $1 AND benchmark = 'quant' ORDER BY started_at",
        quant_run.campaign_id,
    )
    assert [(r["model_name"], r["quant"]) for r in rows] == [
        ("tiny-long", "none"),
        ("tiny-long-f16", "f16"),
        ("tiny-long-q8_0", "q8_0"),
        ("tiny-long-q4_k_m", "q4_k_m"),
        ("tiny-long-q2_k", "q2_k"),
    ]
    assert all(r["samples_per_min"] > 0 for r in rows)
    shas = set()
    for r in rows[1:]:
        made, extra = json.loads(r["model_provenance"]), json.loads(r["runtime_extra"])
        assert r["runtime"] == "llamacpp" and made["gguf_quant"] == r["quant"]
        assert made["gguf_sha256"] == extra["gguf_sha256"]
        assert extra["gguf_quant_type"] == r["quant"].upper()
        assert "GGML_NATIVE=OFF" in extra["build"]["build_env"]
        shas.add(made["gguf_sha256"])
    assert len(shas) == 4  # four different files, one per quant


def test_f16_matches_the_reference_and_q4_k_m_changes_answers(quant_run: Any, pg_dsn: str) -> None:
    from evallab.analysis.matrix import campaign_matrix
    from evallab.store import Store

    with Store(pg_dsn) as store:
        matrix = campaign_matrix(store, "quant", reference=REFERENCE)
    [long] = [r for r in matrix.rows if r.task == "demo_long"]
    ref = long.cells[REFERENCE]
    assert ref is not None and 0.2 < ref.value < 0.9  # a model that is right only sometimes
    f16 = long.cells["tiny-long-f16@f16 / llamacpp==0.3.36"]
    q4 = long.cells["tiny-long-q4_k_m@q4_k_m / llamacpp==0.3.36"]
    assert f16 is not None and q4 is not None
    # Measured: F16 on llama.cpp scores exactly the float32 reference, paired test and all.
    assert f16.value == ref.value and f16.delta == 0.0 and f16.p_value == 1.0
    assert q4.p_value is not None and q4.delta_low is not None and q4.delta_high is not None
    assert q4.samples_per_min is not None and q4.samples_per_min > 0

    same = _compare(pg_dsn, "tiny-long", "tiny-long-f16")
    assert same["n"] == 60 and same["n_flipped"] == 0
    # Measured: Q4_K_M loses 2 of 60 documents (it repeats the word once too often).
    changed = _compare(pg_dsn, "tiny-long-f16", "tiny-long-q4_k_m")
    assert changed["n_flipped"] >= 1
    flip = changed["flips"][0]
    assert flip["output_a"] != flip["output_b"] and flip["prompt"].startswith("Say ")
