"""The campaign engine's steps: each is one method, each does one thing.

:mod:`evallab.campaign.loop` strings them together in one order under one failure policy; a
driver (the CLI, the Prefect flow) only says how a step is run (directly, or as a task with
retries). Nothing here knows which driver runs it.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from evallab import __version__
from evallab.campaign.leftovers import adopt_interrupted, sweep_leftovers, write_attempt
from evallab.campaign.plan import (
    Group,
    PlannedRun,
    PreparedCampaign,
    RunOutcome,
    fetch_model,
    prepare_campaign,
    runtime_version,
)
from evallab.campaign.raw import (
    MANIFEST,
    full_disk_stops_campaign,
    read_run_dir,
    stored_later,
    write_manifest,
    write_raw,
)
from evallab.campaign.runs import (
    DriverInfo,
    GroupPlan,
    Reporter,
    SilentReporter,
    skipped_outcome,
    stored_outcome,
    unstored_folders,
)
from evallab.errors import DatabaseError, HarnessError, RuntimeLaunchError
from evallab.harnesses import get_harness
from evallab.harnesses.base import Harness, HarnessRequest, HarnessResult
from evallab.models import ModelArtifact
from evallab.paths import runs_dir
from evallab.pins import PinReport, verify_pins
from evallab.runtimes import get_runtime
from evallab.runtimes.base import RuntimeSession
from evallab.spec import CampaignSpec, ModelSpec, spec_sha256
from evallab.store import Store
from evallab.store.records import CampaignRecord, RunRecord
from evallab.telemetry.guard import CampaignGuard

__all__ = ["CampaignEngine"]


def _now() -> datetime:
    return datetime.now(UTC)


class CampaignEngine:
    """The steps of one campaign.

    Args:
        spec: The campaign.
        base_dir: Folder the campaign's relative paths resolve against.
        spec_path: The campaign file.
        store: The results database (one connection for the whole campaign).
        driver: Who runs it.
        reporter: Progress callbacks.
        resume: Skip runs whose run key already succeeded.
        allow_unsafe_code: Let code benchmarks run generated code without bubblewrap when it is
            missing (``evallab run --allow-unsafe-code``).
    """

    def __init__(
        self,
        spec: CampaignSpec,
        base_dir: Path,
        spec_path: Path,
        store: Store,
        driver: DriverInfo,
        *,
        reporter: Reporter | None = None,
        resume: bool = False,
        allow_unsafe_code: bool = False,
    ) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.spec_path = spec_path
        self.store = store
        self.driver = driver
        self.reporter: Reporter = reporter or SilentReporter()
        self.resume = resume
        self.allow_unsafe_code = allow_unsafe_code
        self.prepared: PreparedCampaign | None = None
        self.record: CampaignRecord | None = None
        self.guard: CampaignGuard | None = None
        self.outcomes: list[RunOutcome] = []
        self.notes: list[str] = []
        self._index = 0
        self.total_runs = 0

    # ------------------------------------------------------------------ without the GPU

    def verify_pins(self) -> PinReport:
        """Resolve every pin (hub revisions, dataset revisions, runtime versions)."""
        return verify_pins(self.spec, self.base_dir)

    def fetch_model(self, model: ModelSpec) -> ModelArtifact:
        """Fetch (or build) one model at its exact revision and checksum it.

        A model whose quant label asks for a GGUF file on a llama.cpp runtime is converted here.
        """
        return fetch_model(self.spec, model, self.base_dir)

    def plan(self, pins: PinReport, models: dict[str, ModelArtifact]) -> PreparedCampaign:
        """Check every (model, runtime, benchmark) combination before anything starts."""
        self.prepared = prepare_campaign(
            self.spec, self.base_dir, self.spec_path, pins=pins, models=models
        )
        return self.prepared

    def open_campaign(self) -> list[GroupPlan]:
        """Migrate, close rows of dead drivers, insert this campaign's row; plan every group."""
        p = self._prepared()
        if self.record is None:
            self.record = CampaignRecord(
                campaign_id=self.driver.campaign_id or uuid.uuid4(),
                name=p.spec.name,
                spec=p.spec.model_dump(mode="json"),
                spec_sha256=spec_sha256(p.spec),
                spec_path=str(p.spec_path),
                lab_version=__version__,
                lab_commit=p.environment.lab_commit,
                started_at=_now(),
                driver=self.driver.name,
                driver_host=self.driver.host,
                driver_pid=self.driver.pid,
                driver_started_at=self.driver.started_at,
                flow_run_id=self.driver.flow_run_id,
            )
        self.store.open_campaign(self.record)
        # Rows and unfinished folders of campaigns killed on this host are closed and moved
        # aside before planning, so a resume sees only finished folders.
        self.notes.extend(sweep_leftovers(self.store))
        if self.guard is None:
            self.guard = CampaignGuard(
                p.spec, self.store, self.record.campaign_id, gpu_name=p.environment.gpu_name
            )
        return self._plan_groups()

    def _plan_groups(self) -> list[GroupPlan]:
        p, rec = self._prepared(), self._record()
        groups = [(g, p.runs(g, rec.campaign_id)) for g in p.groups()]
        keys = [r.key for _, runs in groups for r in runs]
        stored = self.store.stored_results(keys, rec.campaign_id, self.resume)
        # Evaluations that finished but were never stored (the database was down, the driver
        # was killed between the two steps) are stored from disk instead of evaluated again.
        unstored = unstored_folders(keys, stored.run_ids) if self.resume else {}
        plans = []
        for group, runs in groups:
            plan = GroupPlan(group, [], [], [])
            for run in runs:
                own = runs_dir() / str(run.run_id)
                if run.key in stored.keys:
                    plan.skipped.append(skipped_outcome(run))
                elif run.run_id not in stored.run_ids and (own / MANIFEST).is_file():
                    plan.recovered.append(own)
                elif run.key in unstored:
                    plan.recovered.append(unstored[run.key])
                else:
                    plan.todo.append(run)
            plans.append(plan)
        return plans

    # ------------------------------------------------------------------------ with the GPU

    def start_runtime(self, group: Group) -> RuntimeSession:
        """Start the group's runtime; the caller stops it (:meth:`stop_runtime`)."""
        workdir = runs_dir() / "_runtimes"
        workdir.mkdir(parents=True, exist_ok=True)
        session = get_runtime(group.runtime.kind).start(group.runtime, group.model, workdir)
        return session.__enter__()

    def canary(self, group: Group, session: RuntimeSession) -> None:
        """Fixed greedy prompts vs the recorded baseline; snapshot the runtime's version."""
        self._guard().start_session(session, group.model)

    def evaluate(self, run: PlannedRun, session: RuntimeSession) -> Path:
        """Run one benchmark; write its raw outputs and manifest; return the run's folder.

        A runtime that crashes mid-benchmark is restarted and the benchmark retried once (the
        harness's request cache keeps finished requests). Nothing is written to the database.
        """
        p, guard = self._prepared(), self._guard()
        out_dir = runs_dir() / str(run.run_id)
        # An earlier attempt at this run may have left partial files (never a manifest), here or
        # moved aside after its driver was killed: its caches save work.
        adopt_interrupted(out_dir)
        (out_dir / MANIFEST).unlink(missing_ok=True)
        record = self._base_record(run, session)
        harness: Harness = guard.wrap(get_harness(run.bench.harness))
        request = HarnessRequest(
            benchmark=run.bench,
            model=run.group.model,
            session=session,
            seed=p.spec.seed,
            out_dir=out_dir,
            tasks_dir=p.tasks_dir,
            base_dir=p.base_dir,
            allow_unsafe_code=self.allow_unsafe_code,
        )
        t0 = time.monotonic()
        with full_disk_stops_campaign(out_dir, run.label):
            write_attempt(out_dir, record.campaign_id, run.run_id)
            guard.before_benchmark(session)  # a driver/runtime version change stops here
            try:
                result = _run_harness(harness, request, session, run)
            except BaseException:
                # An unfinished run leaves nothing behind (a retry starts from an empty folder).
                shutil.rmtree(out_dir, ignore_errors=True)
                raise
            duration = time.monotonic() - t0
            invalid_reason, tags = guard.judge()
            telemetry = guard.telemetry_records()
            raw = write_raw(out_dir, result, telemetry)
            record.status = "succeeded"
            record.finished_at = _now()
            record.duration_s = duration
            record.n_samples = result.n_samples
            record.samples_per_min = result.n_samples / (duration / 60) if duration > 0 else None
            record.raw_path, record.raw_sha256 = str(raw.samples), raw.samples_sha256
            record.results_path, record.results_sha256 = str(raw.results), raw.results_sha256
            record.dataset_revisions = result.dataset_revisions
            record.task_hashes = result.task_hashes
            record.tags += [t for t in tags if t not in record.tags]
            if invalid_reason:
                record.status, record.status_reason = "invalid", invalid_reason
            write_manifest(out_dir, record, result.scores)
        return out_dir

    def record_failure(self, run: PlannedRun, reason: str, session: RuntimeSession | None) -> Path:
        """Write a ``failed`` manifest for ``run`` with ``reason``; return its folder."""
        out_dir = runs_dir() / str(run.run_id)
        record = self._base_record(run, session)
        record.status, record.status_reason, record.finished_at = "failed", reason, _now()
        with full_disk_stops_campaign(out_dir, run.label):
            write_manifest(out_dir, record, [])
        return out_dir

    def stop_runtime(self, session: RuntimeSession) -> None:
        """Stop the group's runtime and every process it started."""
        session.stop()

    # ------------------------------------------------------------------ without the GPU

    def ingest(self, folder: Path) -> RunOutcome:
        """Store a run folder (verified against its checksums) in one transaction.

        Idempotent: the same folder stored twice leaves one row. A run recovered from another
        attempt is stored as part of this campaign.
        """
        stored = read_run_dir(folder)
        rec = self._record()
        if stored.record.campaign_id != rec.campaign_id:
            stored.record.campaign_id = rec.campaign_id
            if "recovered" not in stored.record.tags:
                stored.record.tags.append("recovered")
        # The engine re-stores a run it evaluated again (one stored as failed, same run id).
        try:
            self.store.store_run(stored, replace=True)
        except DatabaseError as exc:
            raise stored_later(exc, folder) from exc
        self.notes.extend(stored.warnings)
        if self.guard is not None:
            self.notes.extend(self.guard.after_ingest(stored.record.run_id, stored.record.status))
        return stored_outcome(stored)

    def close_campaign(self, status: str, reason: str = "") -> CampaignRecord:
        """Mark the campaign row finished with ``status``; release NVML."""
        rec = self._record()
        rec.status, rec.finished_at, rec.status_reason = status, _now(), reason[:2000]
        try:
            self.store.close_campaign(rec)
        finally:
            if self.guard is not None:
                self.guard.close()
        return rec

    # ---------------------------------------------------------------------------- helpers

    def next_index(self) -> int:
        """1-based position of the next run in the campaign (for progress)."""
        self._index += 1
        return self._index

    def finished(self, outcome: RunOutcome) -> None:
        """Record a run's outcome and report it."""
        self.outcomes.append(outcome)
        self.reporter.run_finished(outcome)

    def _prepared(self) -> PreparedCampaign:
        if self.prepared is None:
            raise RuntimeError("plan() must run before this step")
        return self.prepared

    def _record(self) -> CampaignRecord:
        if self.record is None:
            raise RuntimeError("open_campaign() must run before this step")
        return self.record

    def _guard(self) -> CampaignGuard:
        if self.guard is None:
            raise RuntimeError("open_campaign() must run before this step")
        return self.guard

    def _base_record(self, run: PlannedRun, session: RuntimeSession | None) -> RunRecord:
        p, rec = self._prepared(), self._record()
        env, model, runtime_spec, bench = (
            p.environment,
            run.group.model,
            run.group.runtime,
            run.bench,
        )
        harness_version, harness_commit = get_harness(bench.harness).version()
        info = session.info if session is not None else None
        return RunRecord(
            run_id=run.run_id,
            campaign_id=rec.campaign_id,
            run_key=run.key,
            benchmark=bench.name,
            model_name=model.name,
            model_source=model.source,
            model_id=model.model_id,
            model_revision=model.revision,
            model_sha256=model.sha256,
            pinned=model.pinned,
            quant=model.quant,
            weights_sha256=model.weights_sha256,
            model_provenance=dict(model.provenance),
            runtime=runtime_spec.kind,
            runtime_label=runtime_spec.display,
            runtime_version=info.version if info else runtime_version(runtime_spec),
            runtime_commit=info.commit if info else "",
            runtime_command=info.command if info else "",
            # JSON-safe (paths become strings): the session's own report of what it serves.
            runtime_extra=json.loads(json.dumps(info.extra, default=str)) if info else {},
            harness=bench.harness,
            harness_version=harness_version,
            harness_commit=harness_commit,
            tasks=list(bench.tasks),
            tasks_commit=p.tasks_commit,
            tasks_sha256=p.tasks_sha256,
            seed=p.spec.seed,
            num_fewshot=bench.num_fewshot,
            sample_limit=bench.limit,
            generation_config=bench.generation.model_dump(mode="json"),
            lab_version=env.lab_version,
            lab_commit=env.lab_commit,
            env_fingerprint=env.fingerprint,
            python_version=env.python_version,
            torch_version=env.torch_version,
            hostname=env.hostname,
            gpu_name=env.gpu_name,
            gpu_driver=env.gpu_driver,
            cuda_version=env.cuda_version,
            status="running",
            started_at=_now(),
            tags=[] if model.pinned else ["unpinned"],
        )


def _run_harness(
    harness: Harness, request: HarnessRequest, session: RuntimeSession, run: PlannedRun
) -> HarnessResult:
    """Run the harness; a runtime that crashed under it is restarted and the run retried once."""
    try:
        return harness.run(request)
    except (HarnessError, RuntimeLaunchError) as first:
        if session.health():
            raise
        session.restart()
        try:
            return harness.run(request)
        except (HarnessError, RuntimeLaunchError) as second:
            tail = session.log_tail()
            raise HarnessError(
                f"benchmark {run.bench.name!r} failed twice; the runtime crashed each time "
                f"({first.what}; then {second.what})"
                + (f". Last lines of the runtime log:\n{tail}" if tail else ""),
                value=session.info.log_path or session.info.label,
                fix="read the runtime log named here; lower max_model_len/concurrency",
            ) from second
