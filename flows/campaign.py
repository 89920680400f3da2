"""The campaign flow: the lab's campaign engine (:mod:`evallab.campaign`) run as a Prefect DAG.

Wiring only. The engine decides the order of steps and what every failure leads to; this module
says how a step runs under Prefect: as a task named for the step (``verify-pins``,
``fetch-model``, ``plan``, ``open-campaign``, ``start-runtime``, ``canary``, ``evaluate``,
``ingest``, ``stop-runtime``, ``close-campaign``), with the policy's retries declared on it (only
transient errors are retried, and each retry logs why), and with the GPU held — through a Prefect
global concurrency limit per GPU — only around a group's runtime start, canary and evaluations.
Pin checks, downloads, and waiting for their retries hold no GPU.
"""

from __future__ import annotations

import os
import socket
import uuid
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from blocks.lab import apply_worker_settings, results_database
from evallab.campaign import (
    DEFAULT_POLICY,
    CampaignEngine,
    DriverInfo,
    Step,
    run_campaign,
)
from evallab.campaign.publish import publish_report, report_dir
from evallab.errors import LabError
from evallab.spec import CampaignSpec, load_campaign
from evallab.store import Store
from evallab.watch import release_campaign
from flows.artifacts import FlowLogReporter, slug, summary_markdown
from flows.executor import PrefectExecutor, gpu_limit_names
from flows.submit import REPO_ROOT, campaign_choices

__all__ = [
    "CampaignFailed",
    "CampaignFile",
    "CampaignSummary",
    "campaign",
    "campaign_id_for",
]

T = TypeVar("T")

# lm-eval's tqdm bars would flood the worker's log (one line per refresh); the flow logs one line
# per step instead. Set before lm-eval is imported by a step.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

_CAMPAIGN_NS = uuid.UUID("6d1f0c52-8a53-4c1e-9a41-0c7a3e2b5d10")
#: The campaigns in ``deployments/``: the UI's form offers them as a list.
CampaignFile = Enum("CampaignFile", campaign_choices(), type=str)  # type: ignore[misc]


_DEFAULT_CAMPAIGN = next(iter(CampaignFile))


def campaign_id_for(flow_run_id: str | uuid.UUID) -> uuid.UUID:
    """The campaign id of a flow run (retries of the flow run keep their campaign and runs)."""
    return uuid.uuid5(_CAMPAIGN_NS, str(flow_run_id))


# ------------------------------------------------------------------------------------ hooks


def _close_row(flow_run_obj: FlowRun, status: str, reason: str) -> None:
    """Close this flow run's campaign row if the flow couldn't (crash, cancel after grace)."""
    try:
        with results_database() as dsn, Store(dsn) as store:
            store.close_if_running(campaign_id_for(flow_run_obj.id), status, reason)
    except LabError:
        return  # the database is unreachable: the next campaign on this host closes the row


def _on_crashed(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    _close_row(flow_run, "crashed", f"the flow run crashed: {state.message or state.name}")


def _on_cancelled(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    _close_row(
        flow_run, "interrupted", f"the flow run was cancelled: {state.message or state.name}"
    )


# ------------------------------------------------------------------------------------ flow


class CampaignSummary(dict[str, Any]):
    """What the flow returns: campaign id, status and one entry per run (JSON-friendly)."""


def _campaign_path(campaign: Any, campaign_path: str | None) -> Path:
    raw = campaign_path or (campaign.value if isinstance(campaign, Enum) else str(campaign))
    path = Path(raw)
    if path.is_absolute():
        return path
    # Relative paths are the worker's checkout (deployments/...), whatever its cwd.
    return (REPO_ROOT / path) if (REPO_ROOT / path).exists() else (Path.cwd() / path)


def _crashed_parameters(resubmit_of: str) -> dict[str, Any] | None:
    """The parameters of the crashed flow run to resubmit, or None if it was a resubmission."""
    from prefect.client.orchestration import get_client

    run_id = uuid.UUID(resubmit_of.removeprefix("prefect.flow-run."))
    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        crashed = client.read_flow_run(run_id)
        params = dict(crashed.parameters)
        if params.get("resubmit_of"):
            logger.warning(
                "flow run %s crashed and was itself a resubmission (of %s): not resubmitting "
                "it again; resume the campaign by hand (evallab submit FILE)",
                crashed.name,
                params["resubmit_of"],
            )
            return None
        ctx = FlowRunContext.get()
        if ctx and ctx.flow_run:
            client.update_flow_run(ctx.flow_run.id, name=f"{crashed.name}-resubmitted")
    logger.info("resubmitting crashed flow run %s (resuming its campaign)", crashed.name)
    return params


def _run_name() -> str:
    params = flow_run.parameters or {}
    if params.get("resubmit_of"):
        return f"resubmit-{str(params['resubmit_of']).rsplit('.', 1)[-1][:8]}"
    raw = params.get("campaign_path") or params.get("campaign") or "campaign"
    stem = Path(str(getattr(raw, "value", raw))).stem
    repo = params.get("model_repo")
    return f"{stem}-{repo.split('/')[-1]}" if repo else stem


def _load(
    path: Path, model_repo: str | None, revision: str | None, chat: bool, quant: str
) -> tuple[CampaignSpec, Path]:
    spec, base_dir = load_campaign(path)
    if model_repo is not None:
        spec = release_campaign(spec, model_repo, revision or "", chat=chat, quant=quant)
    return spec, base_dir


@flow(
    name="campaign",
    flow_run_name=_run_name,
    log_prints=True,
    on_crashed=[_on_crashed],
    on_cancellation=[_on_cancelled],
    description="Evaluate every (model, runtime, benchmark) of a campaign file and store results.",
)
def campaign(
    campaign: CampaignFile = _DEFAULT_CAMPAIGN,  # type: ignore[valid-type]
    campaign_path: str | None = None,
    model_repo: str | None = None,
    revision: str | None = None,
    chat: bool = False,
    quant: str = "none",
    resume: bool = True,
    resubmit_of: str | None = None,
) -> CampaignSummary:
    """Run a campaign file (optionally as a release campaign for one hub model).

    Args:
        campaign: One of the campaigns in the worker's ``deployments/`` folder.
        campaign_path: A campaign file elsewhere on the worker (overrides ``campaign``).
        model_repo: For ``hf.model.released``: replace the campaign's models by this repo...
        revision: ...at this commit sha.
        chat: Whether the released model is a chat model.
        quant: Quantisation label of the released model.
        resume: Skip runs that already succeeded with the same pins (run key).
        resubmit_of: Set by the crash automation: the id of a crashed campaign flow run to run
            again (its parameters, resuming). A run that was itself a resubmission is not
            resubmitted again: at most once per campaign run.
    """
    if resubmit_of:
        original = _crashed_parameters(resubmit_of)
        if original is None:
            return CampaignSummary(status="not-resubmitted", resubmit_of=resubmit_of, runs=[])
        campaign = original.get("campaign", campaign)
        campaign_path = original.get("campaign_path")
        model_repo, revision = original.get("model_repo"), original.get("revision")
        chat, quant, resume = bool(original.get("chat")), original.get("quant") or "none", True
    path = _campaign_path(campaign, campaign_path)
    spec, base_dir = _load(path, model_repo, revision, chat, quant)
    apply_worker_settings()
    ctx = FlowRunContext.get()
    run_id = ctx.flow_run.id if ctx and ctx.flow_run else uuid.uuid4()
    run_name = ctx.flow_run.name if ctx and ctx.flow_run else spec.name
    driver = DriverInfo("prefect", campaign_id=campaign_id_for(run_id), flow_run_id=str(run_id))
    executor = PrefectExecutor(DEFAULT_POLICY, gpu_limit_names())
    # One connection for the whole flow run (reopened by the store if the server went away).
    with results_database() as dsn, Store(dsn) as store:
        engine = CampaignEngine(
            spec, base_dir, path.resolve(), store, driver, reporter=FlowLogReporter(), resume=resume
        )
        result = run_campaign(engine, executor)
        site = executor.run(Step.PUBLISH, spec.name, publish_report, store, report_dir())
    create_markdown_artifact(
        markdown=summary_markdown(result, run_name),
        key=slug("campaign", spec.name),
        description=f"Campaign {spec.name}: {result.status}",
    )
    if site is not None:
        create_link_artifact(
            key=slug("leaderboard", spec.name),
            link=site.as_uri(),
            link_text=f"Leaderboard after {run_name}",
            description=f"Static leaderboard rebuilt by {run_name} on {socket.gethostname()}",
        )
    failed = [o for o in result.runs if o.status == "failed"]
    for o in failed:
        get_run_logger().error("%s · %s · %s failed: %s", o.model, o.runtime, o.benchmark, o.reason)
    summary = CampaignSummary(
        campaign_id=str(result.campaign_id),
        name=spec.name,
        status=result.status,
        runs=[
            {
                "model": o.model,
                "runtime": o.runtime,
                "benchmark": o.benchmark,
                "status": o.status,
                "skipped": o.skipped,
                "run_id": str(o.run_id),
                "reason": o.reason,
            }
            for o in result.runs
        ],
    )
    if failed:
        raise CampaignFailed(summary)
    return summary


class CampaignFailed(LabError):
    """Some benchmarks of a campaign failed (the others finished)."""

    def __init__(self, summary: CampaignSummary) -> None:
        bad = [r for r in summary["runs"] if r["status"] == "failed"]
        super().__init__(
            f"campaign {summary['name']!r}: {len(bad)} run(s) failed, "
            f"the other {len(summary['runs']) - len(bad)} finished",
            value=", ".join(f"{r['model']}/{r['benchmark']}: {r['reason'][:200]}" for r in bad),
            fix="read each failed run's reason (runs.status_reason, or the run artifacts); "
            "re-running the campaign skips what succeeded",
        )
        self.summary = summary
