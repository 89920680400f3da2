"""A campaign end to end: real lm-eval, real PostgreSQL, the tiny model, the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import EVALLAB, REPO, evallab, fetch, run_campaign_here


def campaign_file(tmp_path: Path, name: str, body: str) -> Path:
    # Outside the repo: relative paths and custom tasks must still resolve.
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntasks_dir: {REPO / 'tasks_custom'}\n{body}")
    return path


TINY = """
seed: 7
models:
  - {name: tiny-base, source: tiny, seed: 0}
"""


def test_campaign_lands_in_postgres_with_provenance(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    path = campaign_file(
        tmp_path,
        "e2e",
        TINY
        + """
benchmarks:
  - {name: demo, tasks: [demo_mc, demo_gen], limit: 40}
""",
    )
    proc = evallab(["run", str(path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo_mc" in proc.stdout and "exact_match" in proc.stdout and "succeeded" in proc.stdout
    # One rich bar per run; lm-eval's own tqdm bars (which ignore TQDM_DISABLE) stay quiet.
    assert "Running loglikelihood requests" not in proc.stdout + proc.stderr
    assert "Running generate_until requests" not in proc.stdout + proc.stderr

    [camp] = fetch(pg_dsn, "SELECT * FROM campaigns WHERE name = 'e2e'")
    assert camp["status"] == "succeeded" and camp["finished_at"] is not None
    [run] = fetch(pg_dsn, "SELECT * FROM runs WHERE campaign_id = $1", camp["campaign_id"])
    assert run["status"] == "succeeded"
    assert run["model_id"] == "evallab/tiny-s0-l2-h256"
    assert len(run["model_sha256"]) == 64 and run["model_revision"].startswith("local:")
    assert run["harness"] == "lm_eval" and run["harness_version"] == "0.4.13"
    assert len(run["tasks_sha256"]) == 64 and len(run["env_fingerprint"]) == 64
    assert run["lab_commit"] and run["hostname"] and run["seed"] == 7
    assert run["tasks"] == ["demo_mc", "demo_gen"]
    revisions = json.loads(run["dataset_revisions"])
    assert revisions["demo_mc"].startswith("local:")
    # Raw outputs on disk, checksummed.
    raw = Path(run["raw_path"])
    assert raw.is_file() and raw.suffix == ".parquet"
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == run["raw_sha256"]
    samples = pq.read_table(raw)
    assert samples.num_rows == 80  # 40 docs x 2 tasks
    assert {"task", "doc_id", "doc_hash", "prompt", "response", "target"} <= set(
        samples.column_names
    )
    # Scores agree with lm-eval's own results file, parsed from "metric,filter" keys.
    results = json.loads(Path(run["results_path"]).read_text())
    scores = {
        (r["task"], r["metric"], r["filter"]): r
        for r in fetch(pg_dsn, "SELECT * FROM scores WHERE run_id=$1", run["run_id"])
    }
    assert set(scores) == {
        ("demo_mc", "acc", "none"),
        ("demo_mc", "acc_norm", "none"),
        ("demo_gen", "exact_match", "strip"),
    }
    assert scores[("demo_mc", "acc", "none")]["value"] == pytest.approx(
        results["results"]["demo_mc"]["acc,none"]
    )
    assert scores[("demo_mc", "acc", "none")]["stderr"] == pytest.approx(
        results["results"]["demo_mc"]["acc_stderr,none"]
    )
    assert scores[("demo_mc", "acc", "none")]["n"] == 40
    # Per-sample outcomes: one per (doc, metric); their mean is the aggregate score.
    outcomes = fetch(
        pg_dsn,
        "SELECT task, metric, avg(value) AS mean, count(*) AS n FROM sample_outcomes WHERE run_id=$1 GROUP BY 1, 2",
        run["run_id"],
    )
    by = {(o["task"], o["metric"]): o for o in outcomes}
    assert by[("demo_mc", "acc")]["n"] == 40 and by[("demo_gen", "exact_match")]["n"] == 40
    assert by[("demo_mc", "acc")]["mean"] == pytest.approx(
        scores[("demo_mc", "acc", "none")]["value"]
    )

    listed = evallab(
        ["results", "--json", "--model", "tiny-base", "--campaign", "e2e"], cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {(r["task"], r["metric"]) for r in rows} >= {
        ("demo_mc", "acc"),
        ("demo_gen", "exact_match"),
    }
    assert all(r["run_id"] == str(run["run_id"]) for r in rows)
    assert (
        evallab(["results", "--task", "demo_gen", "--campaign", "e2e"], cwd=tmp_path).stdout.count(
            "exact_match"
        )
        == 1
    )


def test_same_seed_gives_identical_scores_and_outcomes(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    path = campaign_file(
        tmp_path,
        "twice",
        TINY
        + """
benchmarks:
  - {name: demo, tasks: [demo_mc, demo_gen], limit: 30}
""",
    )
    first = run_campaign_here(path, pg_dsn)
    second = run_campaign_here(path, pg_dsn)
    a, b = first.runs[0], second.runs[0]
    assert a.run_id != b.run_id
    assert [(s.task, s.metric, s.value, s.stderr) for s in a.scores] == [
        (s.task, s.metric, s.value, s.stderr) for s in b.scores
    ]
    sql = "SELECT task, doc_id, doc_hash, metric, filter, value FROM sample_outcomes WHERE run_id=$1 ORDER BY 1,2,4,5"
    oa, ob = fetch(pg_dsn, sql, a.run_id), fetch(pg_dsn, sql, b.run_id)
    assert len(oa) == 30 * 3 and [tuple(r) for r in oa] == [tuple(r) for r in ob]
    keys = fetch(
        pg_dsn, "SELECT DISTINCT run_key FROM runs WHERE run_id = ANY($1)", [a.run_id, b.run_id]
    )
    assert len(keys) == 1  # same pins, same identity


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (
            "benchmarks:\n  - {name: b, tasks: [demo_mcq]}\n",
            ["unknown task", "demo_mcq", "did you mean demo_mc"],
        ),
        ("benchmarks:\n  - {name: b, tasks: [demo_mc], limitt: 3}\n", ["limitt", "unknown key"]),
    ],
)
def test_bad_campaigns_fail_clearly_without_rows(
    pg_dsn: str, lab_home: Path, tmp_path: Path, body: str, expect: list[str]
) -> None:
    before = fetch(pg_dsn, "SELECT count(*) AS n FROM campaigns")[0]["n"]
    path = campaign_file(tmp_path, "bad", TINY + body)
    proc = evallab(["run", str(path)], cwd=tmp_path)
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    for needle in expect:
        assert needle in text
    assert "Traceback" not in proc.stderr
    assert fetch(pg_dsn, "SELECT count(*) AS n FROM campaigns")[0]["n"] == before
    debug = evallab(["--debug", "run", str(path)], cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_missing_model_folder_and_dead_database(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    path = campaign_file(
        tmp_path,
        "nomodel",
        """
models:
  - {name: gone, source: local, path: /nonexistent/model}
benchmarks:
  - {name: b, tasks: [demo_mc], limit: 2}
""",
    )
    proc = evallab(["run", str(path)], cwd=tmp_path)
    assert proc.returncode == 2
    assert "/nonexistent/model" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr

    ok = campaign_file(
        tmp_path, "deaddb", TINY + "benchmarks:\n  - {name: b, tasks: [demo_mc], limit: 2}\n"
    )
    dead = evallab(
        ["run", str(ok)],
        cwd=tmp_path,
        env={"EVALLAB_DATABASE_URL": "postgresql://x:pw@127.0.0.1:1/none"},
    )
    assert dead.returncode == 2
    msg = " ".join(dead.stderr.split())
    assert (
        "cannot connect to the results database" in msg
        and "127.0.0.1:1" in msg
        and "pw" not in msg.replace("pw@", "")
    )


def test_ctrl_c_keeps_finished_runs_and_leaves_no_partial_rows(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    path = campaign_file(
        tmp_path,
        "interrupt",
        TINY
        + """
benchmarks:
  - {name: quick, tasks: [demo_mc], limit: 10}
  - {name: slow, tasks: [demo_gen]}
""",
    )
    runs_root = lab_home / "runs"
    before = set(runs_root.iterdir()) if runs_root.exists() else set()
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(
        [*EVALLAB, "run", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            rows = fetch(
                pg_dsn,
                "SELECT r.run_id FROM runs r JOIN campaigns c USING (campaign_id) WHERE c.name='interrupt' AND r.benchmark='quick' AND r.status='succeeded'",
            )
            if rows:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.3)
        else:
            pytest.fail("first run never finished")
        time.sleep(1.0)  # inside the slow benchmark now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    runs = fetch(
        pg_dsn,
        "SELECT r.benchmark, r.status, r.raw_path FROM runs r JOIN campaigns c USING (campaign_id) WHERE c.name='interrupt'",
    )
    assert [(r["benchmark"], r["status"]) for r in runs] == [("quick", "succeeded")]
    assert Path(runs[0]["raw_path"]).is_file()
    [camp] = fetch(pg_dsn, "SELECT status FROM campaigns WHERE name='interrupt'")
    assert camp["status"] == "interrupted"
    run_dirs = [d for d in set(runs_root.iterdir()) - before if d.name != "_runtimes"]
    stored = {str(r["run_id"]) for r in fetch(pg_dsn, "SELECT run_id FROM runs")}
    assert all(d.name in stored for d in run_dirs), "an unfinished run left its folder behind"
    # --resume skips the finished run and completes the rest.
    resumed = evallab(["run", "--resume", str(path)], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "skipped" in resumed.stdout
    runs = fetch(
        pg_dsn,
        "SELECT r.benchmark FROM runs r JOIN campaigns c USING (campaign_id) WHERE c.name='interrupt' AND r.status='succeeded' ORDER BY 1",
    )
    assert [r["benchmark"] for r in runs] == ["quick", "slow"]


def test_runtime_that_fails_to_start_fails_its_group_only(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "not a number"}')
    path = campaign_file(
        tmp_path,
        "partial",
        f"""
models:
  - {{name: broken, source: local, path: {broken}}}
  - {{name: tiny-base, source: tiny, seed: 0}}
benchmarks:
  - {{name: b, tasks: [demo_mc], limit: 4}}
""",
    )
    proc = evallab(["run", str(path)], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    runs = fetch(
        pg_dsn,
        "SELECT r.model_name, r.status, r.status_reason FROM runs r JOIN campaigns c USING (campaign_id) WHERE c.name='partial' ORDER BY 1",
    )
    assert [(r["model_name"], r["status"]) for r in runs] == [
        ("broken", "failed"),
        ("tiny-base", "succeeded"),
    ]
    assert (
        "could not load the model" in runs[0]["status_reason"]
        and str(broken) in runs[0]["status_reason"]
    )
    [camp] = fetch(pg_dsn, "SELECT status FROM campaigns WHERE name='partial'")
    assert camp["status"] == "failed"
