"""The campaign, start to end: the one order of steps and the one place failures are decided.

Both drivers call :func:`run_campaign`; they differ only in their :class:`StepExecutor`:

* the CLI's :class:`LocalExecutor` calls each step directly and retries transient failures with
  the policy's delays;
* the Prefect flow's executor runs each step as a task (named for the step, with the policy's
  retries declared on it) and holds the GPU slot around the GPU steps only.

What a failure leads to is decided here, by :data:`~evallab.campaign.policy.DEFAULT_POLICY`, so
the same failure gives the same rows under both drivers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from evallab.campaign.engine import CampaignEngine
from evallab.campaign.plan import CampaignResult, PlannedRun
from evallab.campaign.policy import DEFAULT_POLICY, Action, FailurePolicy, Step
from evallab.campaign.runs import GroupPlan
from evallab.errors import CampaignInterrupted, LabError
from evallab.runtimes.base import RuntimeSession

__all__ = [
    "LocalExecutor",
    "StepExecutor",
    "failure_reason",
    "retry_message",
    "run_campaign",
    "run_locally",
]

T = TypeVar("T")
_log = logging.getLogger("evallab.campaign")


class StepExecutor(Protocol):
    """How a driver runs one step (and holds the GPU)."""

    policy: FailurePolicy

    def run(
        self, step: Step, label: str, fn: Callable[..., T], *args: Any, retry: bool = True
    ) -> T:
        """Run ``fn(*args)`` as ``step``, retrying what the policy calls transient.

        With ``retry=False`` the first failure is raised at once (the caller defers the retry).
        """
        ...

    def gpu(self, label: str) -> contextlib.AbstractContextManager[None]:
        """Hold the GPU for a group's GPU steps."""
        ...


class LocalExecutor:
    """Runs steps in this process: what ``evallab run`` uses.

    Args:
        policy: The failure policy (its retry delays are used as given).
        on_retry: Called with a message before each retry (the CLI prints it).
    """

    def __init__(
        self,
        policy: FailurePolicy = DEFAULT_POLICY,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy
        self.on_retry = on_retry or (lambda text: _log.warning("%s", text))

    def run(
        self, step: Step, label: str, fn: Callable[..., T], *args: Any, retry: bool = True
    ) -> T:
        attempt = 1
        while True:
            try:
                return fn(*args)
            except Exception as exc:
                decision = self.policy.decide(step, exc)
                if not retry or not self.policy.should_retry(step, exc, attempt):
                    raise
                delay = decision.delays_s[attempt - 1]
                self.on_retry(retry_message(step, label, exc, attempt, decision.retries, delay))
                time.sleep(delay)
                attempt += 1

    @contextlib.contextmanager
    def gpu(self, label: str) -> Iterator[None]:
        # One process runs one campaign: nothing else of this lab shares its GPU.
        yield


def retry_message(
    step: Step, label: str, exc: BaseException, attempt: int, retries: int, delay: float
) -> str:
    """Why a step is retried (shown by the CLI and carried by Prefect's retry state)."""
    return (
        f"{step} {label} failed ({failure_reason(exc)}); transient, retry {attempt}/{retries} "
        f"in {delay:g} s"
    )


def failure_reason(exc: BaseException) -> str:
    """The text stored as a failed run's reason."""
    if isinstance(exc, LabError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def run_campaign(engine: CampaignEngine, ex: StepExecutor) -> CampaignResult:
    """Run a whole campaign with ``engine``'s steps under ``ex``.

    Raises:
        CampaignInterrupted: Ctrl-C, a cancel or SIGTERM (finished runs are stored).
        LabError: an error the policy says stops the campaign (its row is marked failed).
    """
    spec = engine.spec
    pins = ex.run(Step.VERIFY_PINS, spec.name, engine.verify_pins)
    models = {m.name: ex.run(Step.FETCH_MODEL, m.name, engine.fetch_model, m) for m in spec.models}
    prepared = ex.run(Step.PLAN, spec.name, engine.plan, pins, models)
    plans = ex.run(Step.OPEN_CAMPAIGN, spec.name, engine.open_campaign)
    try:
        for plan in plans:
            _run_group(engine, ex, plan, prepared.total_runs)
    except BaseException as exc:
        action = ex.policy.decide(Step.EVALUATE, exc).action
        status = "interrupted" if action is Action.INTERRUPT else "failed"
        with contextlib.suppress(Exception):
            engine.close_campaign(status, failure_reason(exc))
        if action is Action.INTERRUPT and not isinstance(exc, CampaignInterrupted):
            finished = sum(1 for o in engine.outcomes if not o.skipped)
            raise CampaignInterrupted(
                f"campaign {spec.name!r} was interrupted; {finished} finished run(s) are stored "
                "and the unfinished one was discarded",
                value=engine.record.campaign_id if engine.record else spec.name,
                fix="re-run the same campaign with --resume to skip the runs that already "
                "succeeded",
            ) from exc
        raise
    failed = any(o.status == "failed" for o in engine.outcomes)
    rec = ex.run(
        Step.CLOSE_CAMPAIGN, spec.name, engine.close_campaign, "failed" if failed else "succeeded"
    )
    return CampaignResult(rec.campaign_id, spec.name, rec.status, engine.outcomes, engine.notes)


def _decide(ex: StepExecutor, step: Step, exc: Exception) -> Action:
    """The policy's action once retries are spent; stop/interrupt re-raise ``exc``."""
    action = ex.policy.decide(step, exc).after_retries()
    if action in (Action.STOP_CAMPAIGN, Action.INTERRUPT):
        raise exc
    return action


def _store(
    engine: CampaignEngine, ex: StepExecutor, folder: Path, label: str, pending: list[Path]
) -> None:
    """Ingest a run folder while the group holds the GPU.

    A transient failure is not retried here but after the GPU is released (``pending``), so a
    database outage never holds the GPU.
    """
    try:
        engine.finished(ex.run(Step.INGEST, label, engine.ingest, folder, retry=False))
    except Exception as exc:
        if ex.policy.decide(Step.INGEST, exc).action is not Action.RETRY:
            raise
        engine.reporter.message(f"storing {label} failed ({failure_reason(exc)}); retried later")
        pending.append(folder)


def _fail_runs(
    engine: CampaignEngine,
    ex: StepExecutor,
    runs: list[PlannedRun],
    reason: str,
    session: RuntimeSession | None,
    pending: list[Path],
) -> None:
    for run in runs:
        engine.reporter.run_started(run.label, engine.next_index(), engine.total_runs)
        folder = engine.record_failure(run, reason, session)
        _store(engine, ex, folder, run.label, pending)


def _run_group(engine: CampaignEngine, ex: StepExecutor, plan: GroupPlan, total: int) -> None:
    engine.total_runs = total
    group = plan.group
    for outcome in plan.skipped:
        engine.next_index()
        engine.finished(outcome)
    for folder in plan.recovered:
        engine.next_index()
        engine.finished(ex.run(Step.INGEST, group.label, engine.ingest, folder))
    if not plan.todo:
        return
    pending: list[Path] = []
    with ex.gpu(group.label):
        _run_on_gpu(engine, ex, plan, pending)
    # Runs whose store failed on the GPU are stored now, with the policy's retries.
    for folder in pending:
        engine.finished(ex.run(Step.INGEST, group.label, engine.ingest, folder))


def _run_on_gpu(
    engine: CampaignEngine, ex: StepExecutor, plan: GroupPlan, pending: list[Path]
) -> None:
    group = plan.group
    try:
        session = ex.run(Step.START_RUNTIME, group.label, engine.start_runtime, group)
    except Exception as exc:
        _decide(ex, Step.START_RUNTIME, exc)
        reason = f"runtime did not start: {failure_reason(exc)}"
        _fail_runs(engine, ex, plan.todo, reason, None, pending)
        return
    try:
        _run_benchmarks(engine, ex, plan, session, pending)
    finally:
        try:
            ex.run(Step.STOP_RUNTIME, group.label, engine.stop_runtime, session)
        except Exception as exc:
            _decide(ex, Step.STOP_RUNTIME, exc)
            engine.notes.append(f"runtime of {group.label} did not stop cleanly: {exc}")


def _run_benchmarks(
    engine: CampaignEngine,
    ex: StepExecutor,
    plan: GroupPlan,
    session: RuntimeSession,
    pending: list[Path],
) -> None:
    group = plan.group
    try:
        ex.run(Step.CANARY, group.label, engine.canary, group, session)
    except Exception as exc:
        _decide(ex, Step.CANARY, exc)
        reason = f"canary failed: {failure_reason(exc)}"
        _fail_runs(engine, ex, plan.todo, reason, session, pending)
        return
    for i, run in enumerate(plan.todo):
        engine.reporter.run_started(run.label, engine.next_index(), engine.total_runs)
        try:
            folder = ex.run(Step.EVALUATE, run.label, engine.evaluate, run, session)
        except Exception as exc:
            action = _decide(ex, Step.EVALUATE, exc)
            folder = engine.record_failure(run, failure_reason(exc), session)
            if action is Action.FAIL_GROUP:
                _store(engine, ex, folder, run.label, pending)
                _fail_runs(engine, ex, plan.todo[i + 1 :], failure_reason(exc), session, pending)
                return
        # Its own step: a database hiccup retries the store, never the evaluation.
        _store(engine, ex, folder, run.label, pending)


def run_locally(engine: CampaignEngine, policy: FailurePolicy = DEFAULT_POLICY) -> CampaignResult:
    """Run ``engine``'s campaign in this process (what ``evallab run`` does)."""
    return run_campaign(engine, LocalExecutor(policy, on_retry=engine.reporter.message))
