"""The campaign engine: one order of steps and one failure policy behind every driver.

* :mod:`~evallab.campaign.plan` — the prepared campaign, its groups and runs, run identity.
* :mod:`~evallab.campaign.engine` — the steps (verify pins, fetch, plan, open, start runtime,
  canary, evaluate, ingest, stop, close).
* :mod:`~evallab.campaign.loop` — the order of the steps and where failures are decided.
* :mod:`~evallab.campaign.policy` — the failure policy, as data.
* :mod:`~evallab.campaign.raw` — a run's folder: raw outputs, manifest, reading it back.
* :mod:`~evallab.campaign.manifest` — a run folder's per-file checksums and run.json's seal.
* :mod:`~evallab.campaign.leftovers` — campaigns whose driver was killed, their partial folders.
* :mod:`~evallab.campaign.runs` — driver info, progress reporting, a group's plan, outcomes.
* :mod:`~evallab.campaign.publish` — the leaderboard rebuilt after a campaign.

Drivers: ``evallab run`` (:class:`LocalExecutor`) and ``flows/campaign.py`` (Prefect tasks).
"""

from evallab.campaign.engine import CampaignEngine
from evallab.campaign.loop import (
    LocalExecutor,
    StepExecutor,
    failure_reason,
    retry_message,
    run_campaign,
    run_locally,
)
from evallab.campaign.plan import (
    CampaignResult,
    Group,
    PlannedRun,
    PreparedCampaign,
    RunOutcome,
    prepare_campaign,
    run_key,
)
from evallab.campaign.policy import DEFAULT_POLICY, Action, FailurePolicy, Step
from evallab.campaign.raw import DiskFullError, read_run_dir
from evallab.campaign.runs import DriverInfo, GroupPlan, Reporter, SilentReporter

__all__ = [
    "DEFAULT_POLICY",
    "Action",
    "CampaignEngine",
    "CampaignResult",
    "DiskFullError",
    "DriverInfo",
    "FailurePolicy",
    "Group",
    "GroupPlan",
    "LocalExecutor",
    "PlannedRun",
    "PreparedCampaign",
    "Reporter",
    "RunOutcome",
    "SilentReporter",
    "Step",
    "StepExecutor",
    "failure_reason",
    "prepare_campaign",
    "read_run_dir",
    "retry_message",
    "run_campaign",
    "run_key",
    "run_locally",
]
