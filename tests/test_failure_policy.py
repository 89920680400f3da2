"""The failure policy: its decisions, and the documentation that shows it."""

from __future__ import annotations

from evallab.campaign.policy import DEFAULT_POLICY, Action, Step, policy_table
from evallab.campaign.raw import DiskFullError
from evallab.errors import (
    CanaryDriftError,
    DatabaseError,
    EnvironmentChangedError,
    HarnessError,
    HubUnreachableError,
    MigrationError,
    PortInUseError,
    SpecError,
)
from tests.helpers import REPO


def test_the_docs_show_the_policy_the_engine_uses() -> None:
    doc = (REPO / "docs" / "failure-policy.md").read_text()
    start = doc.index("-->", doc.index("<!-- policy-table:start")) + 3
    end = doc.index("<!-- policy-table:end -->")
    assert doc[start:end].strip() == policy_table()


def decide(step: Step, exc: BaseException) -> tuple[Action, int, Action]:
    d = DEFAULT_POLICY.decide(step, exc)
    return d.action, d.retries, d.after_retries()


def test_decisions_per_step_and_error() -> None:
    db = DatabaseError("connection refused", value="postgresql://x", fix="start it")
    assert decide(Step.INGEST, db) == (Action.RETRY, 3, Action.STOP_CAMPAIGN)
    assert decide(Step.EVALUATE, HarnessError("bad task")) == (Action.FAIL_RUN, 0, Action.FAIL_RUN)
    port = PortInUseError("taken", value=8000)
    assert decide(Step.START_RUNTIME, port)[0] is Action.FAIL_GROUP
    assert decide(Step.START_RUNTIME, SpecError("bad"))[0] is Action.FAIL_GROUP
    assert decide(Step.CANARY, CanaryDriftError("drift"))[0] is Action.FAIL_GROUP
    env = EnvironmentChangedError("driver changed")
    assert decide(Step.EVALUATE, env)[0] is Action.STOP_CAMPAIGN
    assert decide(Step.EVALUATE, KeyboardInterrupt())[0] is Action.INTERRUPT
    assert decide(Step.EVALUATE, DiskFullError("full"))[0] is Action.STOP_CAMPAIGN
    hub = HubUnreachableError("hub down")
    assert decide(Step.FETCH_MODEL, hub) == (Action.RETRY, 3, Action.STOP_CAMPAIGN)
    # Permanent errors are never retried, wherever they happen.
    assert decide(Step.VERIFY_PINS, SpecError("bad revision"))[0] is Action.STOP_CAMPAIGN
    assert decide(Step.OPEN_CAMPAIGN, MigrationError("edited"))[0] is Action.STOP_CAMPAIGN
    assert decide(Step.STOP_RUNTIME, RuntimeError("won't die"))[0] is Action.WARN


def test_retries_stop_after_the_declared_count() -> None:
    db = DatabaseError("gone")
    assert [DEFAULT_POLICY.should_retry(Step.INGEST, db, n) for n in (1, 2, 3, 4)] == [
        True,
        True,
        True,
        False,
    ]
    assert DEFAULT_POLICY.retry_delays(Step.INGEST) == (2.0, 10.0, 30.0)
    assert DEFAULT_POLICY.retry_delays(Step.EVALUATE) == ()
