from __future__ import annotations

import json
from typing import Any

import pytest
from seedlab import Seeded

from evallab.analysis.matrix import campaign_matrix
from evallab.analysis.paired import compare_runs
from evallab.analysis.provenance import diff_runs
from evallab.analysis.selectors import parse_selector, resolve_run
from evallab.errors import ComparisonError
from evallab.store import Store


def _with(dsn: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    with Store(dsn) as store:
        return fn(store, *args, **kwargs)


def test_finetune_gain_is_significant_with_ci_and_flips(seeded: Seeded) -> None:
    cmp = _with(
        seeded.dsn, compare_runs, "model=tiny-base,campaign=demo", "model=tiny-ft,campaign=demo"
    )
    assert cmp.a.model == "tiny-base" and cmp.b.model == "tiny-ft"
    rows = {(r.task, r.metric): r for r in cmp.rows}
    assert set(rows) == {("demo_mc", "acc"), ("demo_mc", "acc_norm"), ("demo_gen", "exact_match")}
    gen = rows[("demo_gen", "exact_match")]
    res = gen.result
    assert res.n == 100
    assert res.test == "mcnemar-exact"
    assert res.diff == pytest.approx(res.mean_b - res.mean_a)
    assert res.diff > 0.7
    assert res.ci_low > 0.5 and res.ci_low < res.diff < res.ci_high
    assert res.p_value < 1e-10
    assert gen.verdict == "B better"
    # Flips: both directions, counted and shown with prompts and both outputs from the Parquet.
    assert res.a_only == 2 and res.b_only == gen.n_flipped - 2
    lost = [f for f in gen.flips if f.direction == "lost"]
    assert [f.doc_id for f in lost] == [0, 1]
    assert lost[0].prompt == "Say word0 2 times:"
    assert lost[0].target == "word0 word0"
    assert lost[0].output_a == "word0 word0"
    assert lost[0].output_b == "tiny-ft wrong answer 0"
    gained = next(f for f in gen.flips if f.direction == "gained")
    assert gained.output_b == gained.target
    assert gained.output_a.startswith("tiny-base wrong answer")
    # The small demo_mc change is not significant.
    assert rows[("demo_mc", "acc")].verdict == "no significant difference"
    payload = json.loads(json.dumps(cmp.to_json()))
    assert payload["a"]["model"] == "tiny-base"
    assert {c["metric"] for c in payload["comparisons"]} == {"acc", "acc_norm", "exact_match"}


def test_continuous_metric_uses_paired_bootstrap(seeded: Seeded) -> None:
    a, b = seeded.runs["nightly3-none-transformers"], seeded.runs["nightly3-awq-transformers"]
    cmp = _with(seeded.dsn, compare_runs, str(a), str(b)[:13])
    rows = {r.task: r for r in cmp.rows}
    ppl = rows["wikitext"]
    assert ppl.result.test == "paired-bootstrap"
    assert ppl.result.diff == pytest.approx(0.45, abs=0.05)  # 0.15 * 3, seeded
    assert ppl.verdict == "A better"  # higher perplexity is worse
    assert ppl.n_flipped == 0 and ppl.flips == ()
    assert rows["arc_easy"].verdict == "A better"


def test_dataset_revision_mismatch_is_refused(seeded: Seeded) -> None:
    with pytest.raises(ComparisonError) as exc:
        _with(
            seeded.dsn,
            compare_runs,
            str(seeded.runs["nightly3-none-transformers"]),
            str(seeded.runs["drift"]),
            allow_partial=True,
        )
    msg = exc.value.message
    assert "did not score the same documents" in msg
    assert "doc_hash differs on" in msg and "arc_easy" in msg


def test_unknown_ambiguous_and_disjoint_selectors(seeded: Seeded) -> None:
    with pytest.raises(ComparisonError, match="no run has an id starting"):
        _with(seeded.dsn, resolve_run, "deadbeef")
    with pytest.raises(ComparisonError) as exc:
        _with(seeded.dsn, resolve_run, "campaign=demo")
    assert "2 different configurations" in exc.value.message
    assert "tiny-base" in exc.value.message and "tiny-ft" in exc.value.message
    with pytest.raises(ComparisonError, match="no run matches"):
        _with(seeded.dsn, resolve_run, "model=nope")
    with pytest.raises(ComparisonError, match="share no scored task"):
        _with(seeded.dsn, compare_runs, "model=tiny-base", "model=coder")
    with pytest.raises(ComparisonError, match="same run"):
        _with(seeded.dsn, compare_runs, "model=tiny-base", str(seeded.runs["base"]))
    with pytest.raises(ComparisonError, match="no succeeded run"):
        _with(seeded.dsn, resolve_run, "model=llama-8b,quant=gptq")
    # The latest succeeded run of one configuration wins over older nightlies.
    ref = _with(
        seeded.dsn, resolve_run, "model=llama-8b,quant=none,runtime=vllm-0.32,campaign=nightly"
    )
    assert ref.run_id == seeded.runs["nightly3-none-vllm-0.32"]


def test_selector_syntax_errors() -> None:
    assert parse_selector("3F2A").id_prefix == "3f2a"
    assert parse_selector("model=a, benchmark=b").filters == (("model", "a"), ("benchmark", "b"))
    for bad, needle in (
        ("", "empty"),
        ("model", "neither"),
        ("colour=red", "unknown selector key"),
        ("model=", "not key=value"),
    ):
        with pytest.raises(ComparisonError, match=needle):
            parse_selector(bad)


def test_empty_database(migrated_dsn: str) -> None:
    with pytest.raises(ComparisonError, match="holds no runs"):
        _with(migrated_dsn, compare_runs, "abc", "def")
    with pytest.raises(ComparisonError, match="holds no runs"):
        _with(migrated_dsn, campaign_matrix, "demo")


def test_diff_lists_provenance_differences(seeded: Seeded) -> None:
    _, _, diffs, same = _with(
        seeded.dsn,
        diff_runs,
        str(seeded.runs["nightly3-none-transformers"]),
        str(seeded.runs["drift"]),
    )
    fields = {d.field: (d.a, d.b) for d in diffs}
    assert fields["generation_config.temperature"] == ("0.0", "0.7")
    assert fields["dataset_revisions.arc_easy"] == ("r1", "r2")
    assert "dataset_revisions.wikitext" in fields
    assert fields["tasks"] == ("arc_easy, wikitext", "arc_easy")
    assert "model_revision" not in fields and same > 20
    _, _, diffs, _ = _with(
        seeded.dsn,
        diff_runs,
        str(seeded.runs["nightly3-none-transformers"]),
        str(seeded.runs["nightly3-none-vllm-0.32"]),
    )
    fields = {d.field: (d.a, d.b) for d in diffs}
    assert fields["runtime_version"] == ("5.24.0", "0.32.0")
    assert fields["runtime_label"] == ("transformers", "vllm-0.32")


def test_matrix_cells_deltas_and_reference(seeded: Seeded) -> None:
    m = _with(seeded.dsn, campaign_matrix, "nightly")
    assert [c.label for c in m.columns] == [
        "llama-8b / transformers",
        "llama-8b@awq / transformers",
        "llama-8b / vllm-0.32",
        "llama-8b@gptq / transformers",
    ]
    assert m.reference.label == "llama-8b / transformers"
    row = next(r for r in m.rows if r.task == "arc_easy")
    ref = row.cells["llama-8b / transformers"]
    awq = row.cells["llama-8b@awq / transformers"]
    vllm = row.cells["llama-8b / vllm-0.32"]
    assert row.cells["llama-8b@gptq / transformers"] is None  # failed: no scores
    assert ref.value == pytest.approx(
        seeded.values[("nightly3-none-transformers", "arc_easy", "acc")]
    )
    assert ref.run_id == seeded.runs["nightly3-none-transformers"] and ref.delta is None
    assert awq.delta == pytest.approx(awq.value - ref.value)
    assert awq.significant and awq.delta < 0 and awq.delta_high < 0
    assert not vllm.significant
    assert ref.ci_half == pytest.approx(1.96 * ref.stderr)
    m2 = _with(seeded.dsn, campaign_matrix, "nightly", reference="awq")
    assert m2.reference.label == "llama-8b@awq / transformers"
    with pytest.raises(ComparisonError, match="matches no column"):
        _with(seeded.dsn, campaign_matrix, "nightly", reference="mistral")
    with pytest.raises(ComparisonError, match="no campaign has this name"):
        _with(seeded.dsn, campaign_matrix, "nope")
    assert json.loads(json.dumps(m.to_json()))["reference"] == "llama-8b / transformers"
