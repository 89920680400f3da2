"""The campaign flow under a Prefect test harness: DAG, artifacts, resume, failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.flows.conftest import REPO, campaign_yaml
from tests.helpers import fetch

pytestmark = pytest.mark.usefixtures("prefect_harness")


def artifacts(key: str) -> list[object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        )


TWO = """  - {name: mc, tasks: [demo_mc], limit: 5}
  - {name: gen, tasks: [demo_gen], limit: 5}
"""


def test_campaign_flow_stores_runs_publishes_artifacts_and_resumes(
    pg_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    from flows.campaign import campaign

    path = campaign_yaml(tmp_path, "flow-two", TWO)
    summary = campaign(campaign=str(path))
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
    [mc] = artifacts("run-tiny-base-transformers-mc")
    assert "| demo_mc | acc | none |" in mc.data and rows[1]["raw_path"] in mc.data
    [gen] = artifacts("run-tiny-base-transformers-gen")
    assert "exact_match" in gen.data
    [summary_art] = artifacts("campaign-flow-two")
    assert "Campaign flow-two — succeeded" in summary_art.data and "| mc |" in summary_art.data

    # The same campaign again: both runs already succeeded with the same pins.
    again = campaign(campaign=str(path))
    assert [(r["benchmark"], r["skipped"]) for r in again["runs"]] == [("mc", True), ("gen", True)]
    n = fetch(
        pg_dsn,
        "SELECT count(*) AS n FROM runs r JOIN campaigns c USING (campaign_id) "
        "WHERE c.name = 'flow-two'",
    )[0]["n"]
    assert n == 2


def test_a_benchmark_failing_after_retries_is_recorded_and_others_finish(
    pg_dsn: str, lab_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.campaign as module
    from evallab.errors import LabError

    tasks = tmp_path / "tasks"
    shutil.copytree(REPO / "tasks_custom", tasks)
    broken = (tasks / "demo_mc.yaml").read_text().replace("task: demo_mc", "task: broken_mc")
    (tasks / "broken_mc.yaml").write_text(broken.replace("data/demo_mc.jsonl", "data/broken.jsonl"))
    (tasks / "data" / "broken.jsonl").write_text('{"question": "1+1?", "choices": ["2", "3"]\n')
    attempts: list[str] = []
    real = module.execute_benchmark

    def counting(*args: object, **kwargs: object) -> object:
        attempts.append(args[5].name)  # type: ignore[attr-defined]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "execute_benchmark", counting)
    monkeypatch.setattr(
        module,
        "benchmark_task",
        module.benchmark_task.with_options(retries=1, retry_delay_seconds=0),
    )
    path = campaign_yaml(
        tmp_path,
        "flow-fail",
        """  - {name: bad, tasks: [broken_mc], limit: 3}
  - {name: good, tasks: [demo_gen], limit: 3}
""",
        tasks_dir=tasks,
    )
    state = module.campaign(campaign=str(path), return_state=True)
    assert state.is_failed()
    with pytest.raises(LabError, match="1 run\\(s\\) failed after their retries"):
        state.result()
    assert attempts == ["bad", "bad", "good"]  # one retry, then the next benchmark
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
