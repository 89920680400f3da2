"""One failure matrix, two drivers: every failure gives the same rows under `evallab run` and Prefect.

Each case runs the same two-benchmark campaign once through the CLI's driver (the engine with the
local executor, as `evallab run` does) and once through the Prefect flow (a real Prefect API from
the test harness), injects the same failure, and compares what the database holds: each run's
benchmark, status and reason, and the campaign's status and reason. Both must equal the case's
expected rows. SIGKILL of either driver is covered by tests/flows/test_kill_resume.py.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evallab.campaign import CampaignEngine
from evallab.errors import (
    CanaryDriftError,
    EnvironmentChangedError,
    LabError,
    ModelError,
    PortInUseError,
    RuntimeLaunchError,
    SpecError,
)
from evallab.runtimes import get_runtime
from evallab.store.campaigns import CampaignQueries
from evallab.store.embedded import EmbeddedPostgres
from evallab.telemetry.guard import CampaignGuard
from tests.helpers import REPO, campaign_yaml, fetch, run_campaign_here

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

TWO = """  - {name: mc, tasks: [demo_mc], limit: 3}
  - {name: gen, tasks: [demo_gen], limit: 3}
"""
BROKEN_FIRST = """  - {name: bad, tasks: [broken_mc], limit: 3}
  - {name: gen, tasks: [demo_gen], limit: 3}
"""


@dataclass(frozen=True)
class Outcome:
    """What a driver left in the database for one campaign."""

    runs: list[tuple[str, str, str]]
    campaign: tuple[str, str]
    raised: str


def run_cli(path: Path, dsn: str) -> str:
    try:
        run_campaign_here(path, dsn)
    except BaseException as exc:
        return type(exc).__name__
    return ""


def run_prefect(path: Path, dsn: str) -> str:
    from flows.campaign import CampaignFailed, campaign

    try:
        campaign(campaign_path=str(path), resume=False)
    except CampaignFailed:
        return ""  # the flow's own way of saying "some runs failed"; the CLI returns exit 1
    except BaseException as exc:
        return type(exc).__name__
    return ""


DRIVERS: dict[str, Callable[[Path, str], str]] = {"cli": run_cli, "prefect": run_prefect}


def outcome(dsn: str, name: str, raised: str) -> Outcome:
    runs = fetch(
        dsn,
        "SELECT r.benchmark, r.status, r.status_reason FROM runs r JOIN campaigns c "
        "USING (campaign_id) WHERE c.name = $1 ORDER BY r.benchmark",
        name,
    )
    [camp] = fetch(dsn, "SELECT status, status_reason FROM campaigns WHERE name = $1", name)
    return Outcome(
        [(r["benchmark"], r["status"], r["status_reason"]) for r in runs],
        (camp["status"], camp["status_reason"]),
        raised,
    )


def both_drivers(tmp_path: Path, dsn: str, case: str, benchmarks: str, **kw: Any) -> list[Outcome]:
    """Run the campaign under each driver (its own campaign name); return both outcomes."""
    found = []
    for driver, run in DRIVERS.items():
        path = campaign_yaml(tmp_path, f"{case}-{driver}", benchmarks, **kw)
        found.append(outcome(dsn, f"{case}-{driver}", run(path, dsn)))
    return found


def same(outcomes: list[Outcome]) -> Outcome:
    """Both drivers left the same rows; return them."""
    cli, prefect = outcomes
    assert cli == prefect, f"drivers differ:\ncli:     {cli}\nprefect: {prefect}"
    return cli


START_ERRORS = [
    RuntimeLaunchError("server exited during startup", value="vllm", fix="read its log"),
    PortInUseError("port 8000 is taken", value="127.0.0.1:8000", fix="pick another port"),
    SpecError("max_model_len exceeds the model's context", value=4096, fix="lower it"),
    ModelError("weights file is missing", value="model.safetensors", fix="fetch again"),
]


@pytest.mark.parametrize("error", START_ERRORS, ids=lambda e: type(e).__name__)
def test_runtime_that_fails_to_start_fails_its_group(
    pg_dsn: str, lab_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: LabError
) -> None:
    runtime = get_runtime("transformers")

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(type(runtime), "start", fail)
    got = same(both_drivers(tmp_path, pg_dsn, f"start-{type(error).__name__}", TWO))
    reason = f"runtime did not start: {error.message}"
    assert got.runs == [("gen", "failed", reason), ("mc", "failed", reason)]
    assert got.campaign == ("failed", "") and got.raised == ""


def test_canary_drift_fails_its_group(
    pg_dsn: str, lab_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drift = CanaryDriftError("canary output differs from its baseline", value="p1", fix="check")

    def drifted(self: CampaignGuard, session: object, model: object) -> None:
        raise drift

    monkeypatch.setattr(CampaignGuard, "start_session", drifted)
    got = same(both_drivers(tmp_path, pg_dsn, "drift", TWO))
    reason = f"canary failed: {drift.message}"
    assert got.runs == [("gen", "failed", reason), ("mc", "failed", reason)]
    assert got.campaign == ("failed", "")


def test_environment_change_mid_campaign_stops_it(
    pg_dsn: str, lab_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = EnvironmentChangedError(
        "GPU driver version changed mid-campaign", value="550.54 -> 555.42", fix="re-run"
    )
    calls: list[int] = []

    def recheck(self: CampaignGuard, session: object) -> None:
        calls.append(1)
        if len(calls) % 2 == 0:  # the second benchmark of each driver's campaign
            raise changed

    monkeypatch.setattr(CampaignGuard, "before_benchmark", recheck)
    got = same(both_drivers(tmp_path, pg_dsn, "envchange", TWO))
    assert [(b, s) for b, s, _ in got.runs] == [("mc", "succeeded")]
    assert got.campaign == ("failed", changed.message)
    assert got.raised == "EnvironmentChangedError"


def test_harness_crash_fails_only_its_run(pg_dsn: str, lab_home: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    shutil.copytree(REPO / "tasks_custom", tasks)
    broken = (tasks / "demo_mc.yaml").read_text().replace("task: demo_mc", "task: broken_mc")
    (tasks / "broken_mc.yaml").write_text(broken.replace("data/demo_mc.jsonl", "data/broken.jsonl"))
    (tasks / "data" / "broken.jsonl").write_text('{"question": "1+1?", "choices": ["2", "3"]\n')
    got = same(both_drivers(tmp_path, pg_dsn, "crash", BROKEN_FIRST, tasks_dir=tasks))
    [(bad, bad_status, bad_reason), (gen, gen_status, _)] = got.runs
    assert (bad, bad_status, gen, gen_status) == ("bad", "failed", "gen", "succeeded")
    assert "broken_mc" in bad_reason or "broken.jsonl" in bad_reason, bad_reason
    assert got.campaign == ("failed", "")


def test_database_down_at_ingest_retries_the_store_never_the_evaluation(
    pg_dsn: str,
    pg_server: EmbeddedPostgres,
    lab_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evaluations: list[str] = []
    real_evaluate = CampaignEngine.evaluate
    real_store = CampaignQueries.store_run
    outages: list[object] = []

    def counting(self: CampaignEngine, run: Any, session: Any) -> Path:
        evaluations.append(run.bench.name)
        return real_evaluate(self, run, session)

    def store_during_outage(store: CampaignQueries, stored: Any, **kw: Any) -> str:
        if stored.record.benchmark == "mc" and stored.record.campaign_id not in outages:
            outages.append(stored.record.campaign_id)
            # The database goes away just as the run is stored, and is back a second later.
            pg_server.stop(force=True)
            threading.Timer(1.0, pg_server.start).start()
        return real_store(store, stored, **kw)

    monkeypatch.setattr(CampaignEngine, "evaluate", counting)
    monkeypatch.setattr(CampaignQueries, "store_run", store_during_outage)
    got = same(both_drivers(tmp_path, pg_dsn, "dbdown", TWO))
    assert [(b, s) for b, s, _ in got.runs] == [("gen", "succeeded"), ("mc", "succeeded")]
    assert got.campaign == ("succeeded", "")
    assert len(outages) == 2, "one outage per driver"
    # Each benchmark was evaluated exactly once per driver: the retry re-read the folder.
    assert evaluations == ["mc", "gen", "mc", "gen"]


def test_interrupt_keeps_finished_runs_and_marks_the_campaign(
    pg_dsn: str, lab_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_evaluate = CampaignEngine.evaluate

    def interrupted(self: CampaignEngine, run: Any, session: Any) -> Path:
        if run.bench.name == "gen":
            raise KeyboardInterrupt  # Ctrl-C, or Prefect's cancel, mid-benchmark
        return real_evaluate(self, run, session)

    monkeypatch.setattr(CampaignEngine, "evaluate", interrupted)
    got = same(both_drivers(tmp_path, pg_dsn, "interrupt", TWO))
    assert [(b, s) for b, s, _ in got.runs] == [("mc", "succeeded")]
    assert got.campaign == ("interrupted", "KeyboardInterrupt: ")
    assert got.raised in {"CampaignInterrupted", "KeyboardInterrupt"}
