"""The campaign flow: one flow run per campaign, wiring the steps of :mod:`evallab.runner`.

Per (model, runtime) group the DAG is::

    verify pins → fetch model @sha → start runtime → canary → benchmark x N → stop runtime

(each benchmark task runs the harness, writes raw outputs and ingests them in one transaction).
The runtime starts once per group and its benchmarks share it. Retries, timeouts and cache keys
live on the ``@task`` declarations below. Cache keys are scoped to the flow run: a retried flow
run reuses what already finished, while a *new* run of the same campaign is resumed from the
database (runs whose ``run_key`` already succeeded are skipped), which also survives a killed
worker. Nothing here decides anything a plain ``evallab run`` wouldn't: the logic is in the
library.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from blocks.lab import apply_worker_settings, results_database
from evallab.checks import CampaignGuard
from evallab.errors import EnvironmentChangedError, LabError
from evallab.models import ModelArtifact, resolve_model
from evallab.paths import REPO_ROOT
from evallab.pins import PinReport, verify_pins
from evallab.runner import (
    PreparedCampaign,
    RunOutcome,
    begin_campaign,
    end_campaign,
    execute_benchmark,
    prepare_campaign,
    record_failed_run,
    run_key,
    skipped_outcome,
    start_session,
    succeeded_run_keys,
)
from evallab.runtimes.base import RuntimeSession
from evallab.spec import BenchmarkSpec, CampaignSpec, ModelSpec, RuntimeSpec, load_campaign
from evallab.store.records import CampaignRecord
from evallab.watch import release_campaign

__all__ = ["CampaignFailed", "CampaignSummary", "campaign", "submit_campaign"]

T = TypeVar("T")

DEPLOYMENT = "campaign/campaign"


# ------------------------------------------------------------------------------ cache keys


def _scoped(context: TaskRunContext, *parts: object) -> str:
    """A cache key valid inside one flow run (its retries reuse finished work)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"{context.task_run.flow_run_id}-{context.task.name}-{digest[:32]}"


def _pins_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    return _scoped(context, params["spec"].model_dump(mode="json"), str(params["base_dir"]))


def _model_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    return _scoped(context, params["model"].model_dump(mode="json"), str(params["base_dir"]))


def _run_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    return _scoped(context, params["key"])


def _campaign_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    return _scoped(context, str(params["prepared"].spec_path), params["prepared"].spec.name)


def _q(value: T) -> T:
    """Pass ``value`` to a task as is (Prefect doesn't walk it looking for futures)."""
    return cast(T, quote(value))


def _slug(*parts: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:200]


# ----------------------------------------------------------------------------------- tasks


@task(
    name="verify-pins",
    retries=2,
    retry_delay_seconds=30,
    timeout_seconds=900,
    cache_key_fn=_pins_key,
)
def verify_pins_task(spec: CampaignSpec, base_dir: Path) -> PinReport:
    """Resolve every pin (hub revisions, dataset revisions, runtime versions); refuse bad ones."""
    return verify_pins(spec, base_dir)


@task(
    name="fetch-model",
    retries=3,
    retry_delay_seconds=[60, 300, 900],
    timeout_seconds=6 * 3600,
    cache_key_fn=_model_key,
)
def fetch_model_task(model: ModelSpec, base_dir: Path, allow_unpinned: bool) -> ModelArtifact:
    """Fetch (or build) one model at its exact revision and checksum it."""
    return resolve_model(model, base_dir, allow_unpinned=allow_unpinned)


@task(name="plan", timeout_seconds=900, cache_policy=NO_CACHE, persist_result=False)
def plan_task(
    spec: CampaignSpec,
    base_dir: Path,
    spec_path: Path,
    pins: PinReport,
    models: dict[str, ModelArtifact],
) -> PreparedCampaign:
    """Check every (model, runtime, benchmark) combination before anything starts."""
    return prepare_campaign(spec, base_dir, spec_path, pins=pins, models=models)


@task(
    name="open-campaign",
    retries=3,
    retry_delay_seconds=10,
    timeout_seconds=300,
    cache_key_fn=_campaign_key,
)
def open_campaign_task(prepared: PreparedCampaign, dsn: str) -> CampaignRecord:
    """Insert the campaign's row (migrating the database first)."""
    return begin_campaign(prepared, dsn)


@task(
    name="start-runtime",
    retries=1,
    retry_delay_seconds=30,
    timeout_seconds=3600,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def start_runtime_task(
    prepared: PreparedCampaign, model: ModelArtifact, runtime: RuntimeSpec
) -> RuntimeSession:
    """Start the group's runtime (a live server or in-process model: never cached)."""
    return start_session(prepared, model, runtime)


@task(name="canary", timeout_seconds=1800, cache_policy=NO_CACHE, persist_result=False)
def canary_task(guard: CampaignGuard, session: RuntimeSession, model: ModelArtifact) -> None:
    """Fixed greedy prompts vs the recorded baseline; snapshot the runtime's version."""
    guard.start_session(session, model)


@task(
    name="benchmark",
    retries=2,
    retry_delay_seconds=60,
    timeout_seconds=24 * 3600,
    cache_key_fn=_run_key,
    cache_expiration=timedelta(days=7),
)
def benchmark_task(
    prepared: PreparedCampaign,
    campaign_id: uuid.UUID,
    group: tuple[ModelArtifact, RuntimeSpec, RuntimeSession],
    bench: BenchmarkSpec,
    dsn: str,
    guard: CampaignGuard,
    key: str,
) -> RunOutcome:
    """Run one benchmark on the group's runtime, write raw outputs, ingest; publish scores."""
    model, runtime, session = group
    guard.before_benchmark(session)
    outcome = execute_benchmark(
        prepared, campaign_id, model, runtime, session, bench, dsn, guard, raise_on_failure=True
    )
    guard.after_ingest(outcome.run_id, outcome.status)
    create_markdown_artifact(
        markdown=outcome_markdown(outcome, key),
        key=_slug("run", outcome.model, outcome.runtime, outcome.benchmark),
        description=f"{outcome.model} · {outcome.runtime} · {outcome.benchmark}: {outcome.status}",
    )
    return outcome


@task(name="record-failure", retries=3, retry_delay_seconds=10, cache_policy=NO_CACHE)
def record_failure_task(
    prepared: PreparedCampaign,
    campaign_id: uuid.UUID,
    group: tuple[ModelArtifact, RuntimeSpec, RuntimeSession | None],
    bench: BenchmarkSpec,
    dsn: str,
    reason: str,
) -> RunOutcome:
    """Store a benchmark that failed after its retries as a failed run with the reason."""
    model, runtime, session = group
    outcome = record_failed_run(prepared, campaign_id, model, runtime, session, bench, dsn, reason)
    create_markdown_artifact(
        markdown=outcome_markdown(outcome, ""),
        key=_slug("run", outcome.model, outcome.runtime, outcome.benchmark),
        description=f"{outcome.model} · {outcome.runtime} · {outcome.benchmark}: failed",
    )
    return outcome


@task(name="stop-runtime", retries=1, timeout_seconds=300, cache_policy=NO_CACHE)
def stop_runtime_task(session: RuntimeSession) -> None:
    """Stop the group's runtime and every process it started."""
    session.stop()


# --------------------------------------------------------------------------------- markdown


def _score_rows(outcome: RunOutcome) -> list[str]:
    rows = []
    for s in outcome.scores:
        err = f" ± {s.stderr:.4f}" if s.stderr is not None else ""
        value = f"{s.value:.4f}{err}" if s.value is not None else "—"
        rows.append(f"| {s.task} | {s.metric} | {s.filter} | {value} | {s.n} |")
    return rows


def outcome_markdown(outcome: RunOutcome, key: str) -> str:
    """A benchmark's artifact: its scores and where its raw outputs are."""
    lines = [
        f"### {outcome.model} · {outcome.runtime} · {outcome.benchmark} — {outcome.status}",
        "",
        f"run `{outcome.run_id}` (run key `{key[:16]}`)" if key else f"run `{outcome.run_id}`",
        "",
    ]
    if outcome.reason:
        lines += [f"**Reason:** {outcome.reason}", ""]
    if outcome.scores:
        lines += ["| task | metric | filter | value ± stderr | n |", "|---|---|---|---:|---:|"]
        lines += _score_rows(outcome)
        lines.append("")
    if outcome.raw_dir is not None:
        files = (
            sorted(p.name for p in outcome.raw_dir.iterdir()) if outcome.raw_dir.is_dir() else []
        )
        lines.append(f"Raw outputs: `{outcome.raw_dir}`")
        lines += [f"- `{outcome.raw_dir / name}`" for name in files]
    return "\n".join(lines)


def summary_markdown(name: str, status: str, outcomes: list[RunOutcome], notes: list[str]) -> str:
    """The campaign's artifact: every run with its status and scores."""
    worker = (
        f"{socket.gethostname()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}"
    )
    lines = [
        f"## Campaign {name} — {status}",
        "",
        f"Worker: {worker}",
        "",
        "| model | runtime | benchmark | status | scores | note |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        scores = ", ".join(
            f"{s.task}/{s.metric}={s.value:.4f}" for s in o.scores if s.value is not None
        )
        note = "skipped: already succeeded with the same pins" if o.skipped else o.reason[:200]
        note = note.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {o.model} | {o.runtime} | {o.benchmark} | {o.status} | {scores} | {note} |"
        )
    if notes:
        lines += ["", "Checks:", *[f"- {n}" for n in notes]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ flow


class CampaignSummary(dict[str, Any]):
    """What the flow returns: campaign id, status and one entry per run (JSON-friendly)."""


def _run_name() -> str:
    params = flow_run.parameters or {}
    stem = Path(str(params.get("campaign", "campaign"))).stem
    repo = params.get("model_repo")
    return f"{stem}-{repo.split('/')[-1]}" if repo else stem


def _load(
    path: Path, model_repo: str | None, revision: str | None, chat: bool, quant: str
) -> CampaignSpec:
    spec, _ = load_campaign(path)
    if model_repo is None:
        return spec
    return release_campaign(spec, model_repo, revision or "", chat=chat, quant=quant)


def _failure_reason(exc: object) -> str:
    if isinstance(exc, LabError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else "failed"


def _group(
    prepared: PreparedCampaign,
    rec: CampaignRecord,
    guard: CampaignGuard,
    dsn: str,
    model: ModelArtifact,
    runtime: RuntimeSpec,
    todo: list[BenchmarkSpec],
) -> list[RunOutcome]:
    """One (model, runtime) group: start → canary → benchmarks → stop (always)."""
    outcomes: list[RunOutcome] = []
    started = start_runtime_task(_q(prepared), model, runtime, return_state=True)
    if started.is_failed():
        reason = "runtime did not start: " + _failure_reason(started.result(raise_on_failure=False))
        for bench in todo:
            outcomes.append(
                record_failure_task(
                    _q(prepared), rec.campaign_id, (model, runtime, None), bench, dsn, reason
                )
            )
        return outcomes
    session: RuntimeSession = started.result()
    try:
        canary = canary_task(_q(guard), _q(session), model, return_state=True)
        if canary.is_failed():
            reason = "canary failed: " + _failure_reason(canary.result(raise_on_failure=False))
            for bench in todo:
                outcomes.append(
                    record_failure_task(
                        _q(prepared),
                        rec.campaign_id,
                        _q((model, runtime, session)),
                        bench,
                        dsn,
                        reason,
                    )
                )
            return outcomes
        for bench in todo:
            key = run_key(prepared, model, runtime, bench)
            state = benchmark_task(
                _q(prepared),
                rec.campaign_id,
                _q((model, runtime, session)),
                bench,
                dsn,
                _q(guard),
                key,
                return_state=True,
            )
            if state.is_completed():
                outcomes.append(state.result())
                continue
            exc = state.result(raise_on_failure=False)
            if isinstance(exc, EnvironmentChangedError):
                raise exc  # a driver/runtime changed mid-campaign: stop, as `evallab run` does
            outcomes.append(
                record_failure_task(
                    _q(prepared),
                    rec.campaign_id,
                    _q((model, runtime, session)),
                    bench,
                    dsn,
                    _failure_reason(exc),
                )
            )
    finally:
        stop_runtime_task(_q(session))
    return outcomes


@flow(
    name="campaign",
    flow_run_name=_run_name,
    log_prints=True,
    description="Evaluate every (model, runtime, benchmark) of a campaign file and store results.",
)
def campaign(
    campaign: str,
    model_repo: str | None = None,
    revision: str | None = None,
    chat: bool = False,
    quant: str = "none",
    resume: bool = True,
) -> CampaignSummary:
    """Run a campaign file (optionally as a release campaign for one hub model).

    Args:
        campaign: Campaign YAML path (relative paths resolve against the worker's working
            directory, the repository root).
        model_repo: For ``hf.model.released``: replace the campaign's models by this repo...
        revision: ...at this commit sha.
        chat: Whether the released model is a chat model.
        quant: Quantisation label of the released model.
        resume: Skip runs that already succeeded with the same pins (run key).
    """
    logger = get_run_logger()
    path = Path(campaign)
    path = path if path.is_absolute() else (Path.cwd() / path)
    spec = _load(path, model_repo, revision, chat, quant)
    base_dir = load_campaign(path)[1]
    apply_worker_settings()
    with results_database() as dsn:
        pins = verify_pins_task(spec, base_dir)
        models = {m.name: fetch_model_task(m, base_dir, spec.allow_unpinned) for m in spec.models}
        prepared = plan_task(spec, base_dir, path.resolve(), _q(pins), _q(models))
        rec = open_campaign_task(_q(prepared), dsn)
        guard = CampaignGuard(spec, dsn, rec.campaign_id, gpu_name=prepared.environment.gpu_name)
        outcomes: list[RunOutcome] = []
        try:
            for model, runtime in prepared.groups():
                keys = {b.name: run_key(prepared, model, runtime, b) for b in spec.benchmarks}
                done = succeeded_run_keys(dsn, list(keys.values())) if resume else set()
                todo = [b for b in spec.benchmarks if keys[b.name] not in done]
                outcomes += [
                    skipped_outcome(model, runtime, b)
                    for b in spec.benchmarks
                    if keys[b.name] in done
                ]
                if todo:
                    outcomes += _group(prepared, rec, guard, dsn, model, runtime, todo)
        except BaseException:
            end_campaign(dsn, rec, "failed")
            raise
        finally:
            guard.close()
        status = "failed" if any(o.status == "failed" for o in outcomes) else "succeeded"
        end_campaign(dsn, rec, status)
    create_markdown_artifact(
        markdown=summary_markdown(spec.name, status, outcomes, guard.notes),
        key=_slug("campaign", spec.name),
        description=f"Campaign {spec.name}: {status}",
    )
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        logger.error("%s · %s · %s failed: %s", o.model, o.runtime, o.benchmark, o.reason)
    summary = CampaignSummary(
        campaign_id=str(rec.campaign_id),
        name=spec.name,
        status=status,
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
            for o in outcomes
        ],
    )
    if failed:
        raise CampaignFailed(summary)
    return summary


class CampaignFailed(LabError):
    """Some benchmarks of a campaign failed after their retries (the others finished)."""

    def __init__(self, summary: CampaignSummary) -> None:
        bad = [r for r in summary["runs"] if r["status"] == "failed"]
        super().__init__(
            f"campaign {summary['name']!r}: {len(bad)} run(s) failed after their retries, "
            f"the other {len(summary['runs']) - len(bad)} finished",
            value=", ".join(f"{r['model']}/{r['benchmark']}: {r['reason'][:200]}" for r in bad),
            fix="read each failed run's reason (runs.status_reason, or the run artifacts); "
            "re-running the campaign skips what succeeded",
        )
        self.summary = summary


# ---------------------------------------------------------------------------------- submit


def campaign_parameter(path: Path) -> str:
    """How a worker finds a campaign file: relative to the repository when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(REPO_ROOT))
    except ValueError:
        return str(resolved)


def submit_campaign(
    path: Path, *, deployment: str = DEPLOYMENT, resume: bool = True, timeout: float | None = 0
) -> Any:
    """Validate a campaign here, then hand it to the campaign deployment; returns the flow run.

    Args:
        path: Campaign YAML.
        deployment: ``flow-name/deployment-name``.
        resume: Passed to the flow.
        timeout: Seconds to wait for the run to finish (0: return once scheduled, None: wait).
    """
    from prefect.deployments import run_deployment

    load_campaign(path)  # fail here, not on the worker, when the file is wrong
    return run_deployment(
        name=deployment,
        parameters={"campaign": campaign_parameter(path), "resume": resume},
        timeout=timeout,
    )
