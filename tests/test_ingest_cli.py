"""`evallab ingest`: idempotent per run, never a second result for a run key in a campaign."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from evallab.campaign.manifest import canonical_sha256
from tests.helpers import campaign_yaml, evallab, fetch, run_campaign_here


def test_ingest_is_idempotent_and_refuses_a_second_result_for_a_run_key(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    path = campaign_yaml(tmp_path, "ingest-twice", "  - {name: mc, tasks: [demo_mc], limit: 3}\n")
    result = run_campaign_here(path, pg_dsn)
    [run] = result.runs
    assert run.status == "succeeded" and run.raw_dir is not None
    sql = (
        "SELECT r.run_id, r.status FROM runs r JOIN campaigns c USING (campaign_id) "
        "WHERE c.name = 'ingest-twice'"
    )

    # The same folder again (the README's advice after an outage): still one row.
    again = evallab(["ingest", str(run.raw_dir)], dsn=pg_dsn)
    assert again.returncode == 0, again.stderr
    assert [(r["run_id"], r["status"]) for r in fetch(pg_dsn, sql)] == [(run.run_id, "succeeded")]

    # A folder left by another attempt at the same run (another id, same run key) is refused.
    other = tmp_path / "other-attempt"
    shutil.copytree(run.raw_dir, other)
    manifest = json.loads((other / "run.json").read_text())
    manifest["run"]["run_id"] = str(uuid.uuid4())
    manifest["sha256"] = canonical_sha256(manifest)  # sealed, as the lab writes every attempt
    (other / "run.json").write_text(json.dumps(manifest))
    refused = evallab(["ingest", str(other)], dsn=pg_dsn)
    assert refused.returncode == 2
    assert "already holds a result for this run" in refused.stderr
    assert str(run.run_id) in refused.stderr
    assert len(fetch(pg_dsn, sql)) == 1

    # A folder whose samples were altered is refused by its checksum.
    (other / "samples.parquet").write_bytes(b"not parquet")
    tampered = evallab(["ingest", str(other)], dsn=pg_dsn)
    assert tampered.returncode == 2
    assert "samples.parquet does not match the sha256 recorded in run.json" in tampered.stderr
