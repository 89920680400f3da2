"""The campaign flow under a Prefect test harness: DAG, artifacts, resume, failures."""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import pytest

from tests.helpers import REPO, campaign_yaml, fetch

pytestmark = pytest.mark.usefixtures("prefect_harness")


def artifacts(key: str) -> list[object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        )


def task_run_names(campaign_id: str) -> list[str]:
    """Task names of the flow run whose campaign is ``campaign_id``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter

    from flows.campaign import campaign_id_for

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter())
        [run] = [r for r in runs if str(campaign_id_for(r.id)) == campaign_id]
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [run.id]}), task_run_filter=TaskRunFilter()
        )
    return [t.name.split(" · ")[0] for t in tasks]


TWO = """  - {name: mc, tasks: [demo_mc], limit: 5}
  - {name: gen, tasks: [demo_gen], limit: 5}
"""


def test_campaign_flow_stores_runs_publishes_artifacts_and_resumes(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    from flows.campaign import campaign

    path = campaign_yaml(tmp_path, "flow-two", TWO)
    summary = campaign(campaign_path=str(path))
    assert summary["status"] == "succeeded"
    assert [(r["benchmark"], r["status"], r["skipped"]) for r in summary["runs"]] == [
        ("mc", "succeeded", False),
        ("gen", "succeeded", False),
    ]
    rows = fetch(
        pg_dsn,
        "SELECT r.benchmark, r.status, r.raw_path FROM runs r JOIN campaigns c "
        "USING (campaign_id) WHERE c.name = 'flow-two' ORDER BY 1",
    )
    assert [(r["benchmark"], r["status"]) for r in rows] == [
        ("gen", "succeeded"),
        ("mc", "succeeded"),
    ]
    [camp] = fetch(pg_dsn, "SELECT status FROM campaigns WHERE name = 'flow-two'")
    assert camp["status"] == "succeeded"

    # Each benchmark published its scores and raw-output paths; the flow a summary.
    # Keys are per campaign; the raw files are listed with their sha256 and the host.
    [mc] = artifacts("run-flow-two-tiny-base-transformers-mc")
    assert "| demo_mc | acc | none |" in mc.data and rows[1]["raw_path"] in mc.data
    assert f"host `{socket.gethostname()}`" in mc.data
    raw = Path(rows[1]["raw_path"])
    assert f"| `{raw}` | `{hashlib.sha256(raw.read_bytes()).hexdigest()}` |" in mc.data
    [gen] = artifacts("run-flow-two-tiny-base-transformers-gen")
    assert "exact_match" in gen.data
    [summary_art] = artifacts("campaign-flow-two")
    assert "Campaign flow-two — succeeded" in summary_art.data and "| mc |" in summary_art.data
    [board] = artifacts("leaderboard-flow-two")
    assert board.data.startswith("[Leaderboard after flow-two](file://")
    assert (lab_home / "site" / "index.html").is_file()

    # The DAG: every step is a task run of its own; ingest is separate from evaluate.
    names = task_run_names(summary["campaign_id"])
    assert names.count("evaluate") == 2 and names.count("ingest") == 2
    for step in ("verify-pins", "fetch-model", "plan", "open-campaign", "start-runtime"):
        assert step in names
    assert {"canary", "stop-runtime", "close-campaign", "publish"} <= set(names)

    # The same campaign again: both runs already succeeded with the same pins.
    again = campaign(campaign_path=str(path))
    assert [(r["benchmark"], r["skipped"]) for r in again["runs"]] == [("mc", True), ("gen", True)]
    n = fetch(
        pg_dsn,
        "SELECT count(*) AS n FROM runs r JOIN campaigns c USING (campaign_id) "
        "WHERE c.name = 'flow-two'",
    )[0]["n"]
    assert n == 2


def test_a_permanent_failure_is_recorded_once_and_others_finish(
    pg_dsn: str, lab_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.campaign as module
    from evallab.campaign import CampaignEngine
    from evallab.errors import LabError

    tasks = tmp_path / "tasks"
    shutil.copytree(REPO / "tasks_custom", tasks)
    broken = (tasks / "demo_mc.yaml").read_text().replace("task: demo_mc", "task: broken_mc")
    (tasks / "broken_mc.yaml").write_text(broken.replace("data/demo_mc.jsonl", "data/broken.jsonl"))
    (tasks / "data" / "broken.jsonl").write_text('{"question": "1+1?", "choices": ["2", "3"]\n')
    attempts: list[str] = []
    real = CampaignEngine.evaluate

    def counting(self: CampaignEngine, run: object, session: object) -> object:
        attempts.append(run.bench.name)  # type: ignore[attr-defined]
        return real(self, run, session)  # type: ignore[arg-type]

    monkeypatch.setattr(CampaignEngine, "evaluate", counting)
    path = campaign_yaml(
        tmp_path,
        "flow-fail",
        """  - {name: bad, tasks: [broken_mc], limit: 3}
  - {name: good, tasks: [demo_gen], limit: 3}
""",
        tasks_dir=tasks,
    )
    state = module.campaign(campaign_path=str(path), return_state=True)
    assert state.is_failed()
    with pytest.raises(LabError, match="1 run\\(s\\) failed, the other 1 finished"):
        state.result()
    # A broken task is not transient: no retry re-runs it; the next benchmark runs.
    assert attempts == ["bad", "good"]
    rows = fetch(
        pg_dsn,
        "SELECT r.benchmark, r.status, r.status_reason FROM runs r JOIN campaigns c "
        "USING (campaign_id) WHERE c.name = 'flow-fail' ORDER BY 1",
    )
    assert [(r["benchmark"], r["status"]) for r in rows] == [
        ("bad", "failed"),
        ("good", "succeeded"),
    ]
    assert rows[0]["status_reason"]
    [camp] = fetch(pg_dsn, "SELECT status FROM campaigns WHERE name = 'flow-fail'")
    assert camp["status"] == "failed"
