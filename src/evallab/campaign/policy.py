"""The campaign's failure policy, written once as data.

Every step of a campaign can fail. What happens next depends only on the step and on what went
wrong, never on which driver (``evallab run`` or the Prefect flow) runs the campaign:

* ``retry`` — the error is transient (a database hiccup, an unreachable hub): the step is run again
  after the rule's delays; when they are spent, the rule's ``then`` applies.
* ``fail_run`` — the run is stored as ``failed`` with the reason; the campaign goes on.
* ``fail_group`` — every remaining run of the (model, quant, runtime) group is stored as ``failed``
  with the reason; the runtime is stopped; the next group runs.
* ``stop_campaign`` — the campaign is marked ``failed`` and ends; finished runs stay stored.
* ``warn`` — nothing is lost (a runtime that didn't stop cleanly, a report that didn't build): the
  campaign notes it and goes on.
* ``interrupt`` — the user (Ctrl-C) or the orchestrator (cancel, SIGTERM) stopped the campaign: it
  is marked ``interrupted``; the unfinished run is discarded; finished runs stay stored.

The first rule that matches (step, then error) decides. ``docs/failure-policy.md`` shows the same
table; a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from evallab.diskfull import is_disk_full
from evallab.errors import (
    CampaignInterrupted,
    CanaryDriftError,
    DatabaseError,
    EnvironmentChangedError,
    LabError,
    MigrationError,
)

__all__ = [
    "DEFAULT_POLICY",
    "GPU_STEPS",
    "Action",
    "Decision",
    "FailurePolicy",
    "Rule",
    "Step",
    "policy_table",
]


class Step(StrEnum):
    """The steps of a campaign (the Prefect flow shows each as a task run of this name)."""

    VERIFY_PINS = "verify-pins"
    FETCH_MODEL = "fetch-model"
    PLAN = "plan"
    OPEN_CAMPAIGN = "open-campaign"
    START_RUNTIME = "start-runtime"
    CANARY = "canary"
    EVALUATE = "evaluate"
    INGEST = "ingest"
    STOP_RUNTIME = "stop-runtime"
    CLOSE_CAMPAIGN = "close-campaign"
    PUBLISH = "publish"


#: Steps that use the GPU: only these run while the campaign holds its GPU slot.
GPU_STEPS = frozenset({Step.START_RUNTIME, Step.CANARY, Step.EVALUATE, Step.STOP_RUNTIME})


class Action(StrEnum):
    """What a failure leads to."""

    RETRY = "retry"
    FAIL_RUN = "fail_run"
    FAIL_GROUP = "fail_group"
    STOP_CAMPAIGN = "stop_campaign"
    INTERRUPT = "interrupt"
    WARN = "warn"


def _is_interrupt(exc: BaseException) -> bool:
    # Prefect turns a cancel (SIGTERM to the flow process) into its own TerminationSignal; the
    # library can't import Prefect, so it is recognised by name.
    return isinstance(exc, KeyboardInterrupt | CampaignInterrupted) or (
        type(exc).__name__ in {"TerminationSignal", "CancelledRun", "Abort"}
    )


def _disk_full(exc: BaseException) -> bool:
    # DiskFullError lives with the run folder code, which imports this module's users.
    return type(exc).__name__ == "DiskFullError" or is_disk_full(exc)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, MigrationError):
        return False  # an edited migration doesn't heal by waiting
    return isinstance(exc, DatabaseError) or bool(getattr(exc, "transient", False))


@dataclass(frozen=True)
class Rule:
    """One line of the policy.

    Attributes:
        steps: The steps it covers (empty: every step).
        when: Which errors it covers (a predicate, so a rule can look at the cause chain).
        error: A name for ``when`` shown in the docs.
        action: What happens.
        delays_s: For ``retry``: seconds before each new attempt (their count is the retries).
        then: For ``retry``: what happens once the retries are spent.
    """

    steps: frozenset[Step]
    when: Callable[[BaseException], bool]
    error: str
    action: Action
    delays_s: tuple[float, ...] = ()
    then: Action | None = None

    def matches(self, step: Step, exc: BaseException) -> bool:
        return (not self.steps or step in self.steps) and self.when(exc)


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one failure."""

    action: Action
    retries: int
    delays_s: tuple[float, ...]
    then: Action
    rule: Rule

    def after_retries(self) -> Action:
        """The action once every retry was spent (or at once when there are none)."""
        return self.then if self.action is Action.RETRY else self.action


def _isa(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, types)


def _any(_: BaseException) -> bool:
    return True


def _steps(*steps: Step) -> frozenset[Step]:
    return frozenset(steps)


_PREPARE = _steps(Step.VERIFY_PINS, Step.FETCH_MODEL, Step.PLAN, Step.OPEN_CAMPAIGN)
_STORE = _steps(Step.INGEST, Step.OPEN_CAMPAIGN, Step.CLOSE_CAMPAIGN)


@dataclass(frozen=True)
class FailurePolicy:
    """An ordered list of rules; the first that matches decides."""

    rules: tuple[Rule, ...]

    def decide(self, step: Step, exc: BaseException) -> Decision:
        """The decision for ``exc`` raised by ``step``."""
        for rule in self.rules:
            if rule.matches(step, exc):
                then = rule.then or rule.action
                return Decision(rule.action, len(rule.delays_s), rule.delays_s, then, rule)
        raise AssertionError("the policy's last rule matches everything")  # pragma: no cover

    def retry_delays(self, step: Step) -> tuple[float, ...]:
        """The longest delay list of any retry rule covering ``step`` (for task declarations)."""
        best: tuple[float, ...] = ()
        for rule in self.rules:
            if rule.action is Action.RETRY and (not rule.steps or step in rule.steps):
                best = max(best, rule.delays_s, key=len)
        return best

    def should_retry(self, step: Step, exc: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based) of ``step`` should be retried."""
        decision = self.decide(step, exc)
        return decision.action is Action.RETRY and attempt <= decision.retries

    def with_delays(self, scale: float) -> FailurePolicy:
        """The same policy with every retry delay multiplied by ``scale`` (tests use 0)."""
        rules = tuple(
            Rule(r.steps, r.when, r.error, r.action, tuple(d * scale for d in r.delays_s), r.then)
            for r in self.rules
        )
        return FailurePolicy(rules)


DEFAULT_POLICY = FailurePolicy(
    rules=(
        Rule(frozenset(), _is_interrupt, "Ctrl-C, cancel, SIGTERM", Action.INTERRUPT),
        Rule(frozenset(), _disk_full, "disk full", Action.STOP_CAMPAIGN),
        Rule(
            frozenset(),
            _isa(EnvironmentChangedError),
            "EnvironmentChangedError (driver, CUDA, runtime or harness version changed)",
            Action.STOP_CAMPAIGN,
        ),
        Rule(
            _STORE | _PREPARE,
            _is_transient,
            "DatabaseError, or a LabError marked transient (hub unreachable)",
            Action.RETRY,
            delays_s=(2.0, 10.0, 30.0),
            then=Action.STOP_CAMPAIGN,
        ),
        Rule(_PREPARE, _any, "any other error", Action.STOP_CAMPAIGN),
        Rule(
            _steps(Step.START_RUNTIME),
            _isa(LabError),
            "RuntimeLaunchError, PortInUseError, SpecError, ModelError, ...",
            Action.FAIL_GROUP,
        ),
        Rule(
            _steps(Step.CANARY),
            _isa(CanaryDriftError, LabError),
            "CanaryDriftError, or the runtime not answering the canary",
            Action.FAIL_GROUP,
        ),
        Rule(
            _steps(Step.EVALUATE),
            _any,
            "HarnessError, a crashed runtime, any error inside the harness",
            Action.FAIL_RUN,
        ),
        Rule(_steps(Step.STOP_RUNTIME, Step.PUBLISH), _any, "any error", Action.WARN),
        Rule(frozenset(), _any, "any other error", Action.STOP_CAMPAIGN),
    )
)


def policy_table(policy: FailurePolicy = DEFAULT_POLICY) -> str:
    """The policy as a Markdown table (``docs/failure-policy.md`` holds this exact text)."""
    lines = [
        "| # | steps | error | action | retries (delays) | then |",
        "|---|---|---|---|---|---|",
    ]
    for i, rule in enumerate(policy.rules, 1):
        steps = ", ".join(sorted(str(s) for s in rule.steps)) if rule.steps else "every step"
        delays = ", ".join(f"{d:g} s" for d in rule.delays_s)
        retries = f"{len(rule.delays_s)} ({delays})" if rule.delays_s else "—"
        then = str(rule.then) if rule.then else "—"
        lines.append(f"| {i} | {steps} | {rule.error} | {rule.action} | {retries} | {then} |")
    return "\n".join(lines)
