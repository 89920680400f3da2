"""Run a campaign: plan, verify, serve, evaluate, store. No Prefect here (see ``flows/``).

Each step is a plain function so the Prefect flow can wire the same steps as tasks:

* :func:`prepare_campaign` — validate every benchmark, resolve every model, check every runtime.
* :func:`run_group` — one (model, runtime) group: start the runtime once, run its benchmarks.
* :func:`execute_benchmark` — one run: harness → raw outputs on disk → ingest.

:class:`CampaignRunner` strings them together for ``evallab run``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from evallab import __version__
from evallab.checks import CampaignGuard
from evallab.diskfull import describe_space, is_disk_full
from evallab.environment import EnvironmentInfo, collect_environment
from evallab.errors import (
    CampaignInterrupted,
    CanaryDriftError,
    DatabaseError,
    HarnessError,
    LabError,
    RuntimeLaunchError,
    SpecError,
    StorageError,
)
from evallab.harnesses import get_harness
from evallab.harnesses.base import (
    Harness,
    HarnessRequest,
    HarnessResult,
    SampleOutcome,
    ScoreRow,
)
from evallab.harnesses.custom_tasks import tasks_commit, tasks_sha256
from evallab.models import ModelArtifact, resolve_model, sha256_file
from evallab.paths import runs_dir
from evallab.pins import PinReport, verify_pins
from evallab.runtimes import get_runtime
from evallab.runtimes.base import RuntimeSession
from evallab.spec import BenchmarkSpec, CampaignSpec, RuntimeSpec, spec_sha256
from evallab.store.db import connect, run_sync
from evallab.store.ingest import finish_campaign, ingest_run, insert_campaign, outcomes_table
from evallab.store.migrate import migrate
from evallab.store.records import CampaignRecord, RunRecord

__all__ = [
    "CampaignResult",
    "CampaignRunner",
    "PreparedCampaign",
    "Reporter",
    "RunOutcome",
    "begin_campaign",
    "end_campaign",
    "execute_benchmark",
    "ingest_run_dir",
    "prepare_campaign",
    "record_failed_run",
    "run_key",
    "skipped_outcome",
    "start_session",
    "succeeded_run_keys",
]


class Reporter(Protocol):
    """Progress callbacks (the CLI draws a rich progress bar from them)."""

    def run_started(self, label: str, index: int, total: int) -> None: ...

    def run_finished(self, outcome: RunOutcome) -> None: ...

    def message(self, text: str) -> None: ...


class _SilentReporter:
    def run_started(self, label: str, index: int, total: int) -> None:
        return None

    def run_finished(self, outcome: RunOutcome) -> None:
        return None

    def message(self, text: str) -> None:
        return None


@dataclass
class RunOutcome:
    """What happened to one (model, runtime, benchmark) run."""

    run_id: uuid.UUID
    model: str
    runtime: str
    benchmark: str
    status: str
    reason: str = ""
    scores: list[ScoreRow] = field(default_factory=list)
    raw_dir: Path | None = None
    skipped: bool = False
    duration_s: float = 0.0


@dataclass
class CampaignResult:
    """The outcome of a whole campaign."""

    campaign_id: uuid.UUID
    name: str
    status: str
    runs: list[RunOutcome]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [r for r in self.runs if r.status == "failed"]


@dataclass
class PreparedCampaign:
    """A validated campaign with every model resolved and every combination checked."""

    spec: CampaignSpec
    base_dir: Path
    spec_path: Path
    tasks_dir: Path
    models: dict[str, ModelArtifact]
    environment: EnvironmentInfo
    tasks_sha256: str
    tasks_commit: str
    pins: PinReport | None = None

    def groups(self) -> list[tuple[ModelArtifact, RuntimeSpec]]:
        """(model, runtime) groups in campaign order; each group shares one runtime session."""
        return [(self.models[m.name], r) for m in self.spec.models for r in self.spec.runtimes]

    @property
    def total_runs(self) -> int:
        return len(self.spec.models) * len(self.spec.runtimes) * len(self.spec.benchmarks)


def _runtime_version(spec: RuntimeSpec) -> str:
    version = getattr(spec, "version", None)
    if version:
        return str(version)
    if spec.kind == "transformers":
        from importlib import metadata

        return metadata.version("transformers")
    return ""


def run_key(
    prepared: PreparedCampaign, model: ModelArtifact, runtime: RuntimeSpec, bench: BenchmarkSpec
) -> str:
    """Identity of a run: sha256 of its pins and config (equal keys = the same experiment)."""
    harness_version = get_harness(bench.harness).version()
    payload = {
        "model": [model.model_id, model.revision, model.sha256, model.quant, model.chat],
        "runtime": runtime.model_dump(mode="json"),
        "runtime_version": _runtime_version(runtime),
        "benchmark": bench.model_dump(mode="json"),
        "seed": prepared.spec.seed,
        "harness": list(harness_version),
        "tasks_sha256": prepared.tasks_sha256,
        "fingerprint": prepared.environment.fingerprint,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def prepare_campaign(
    spec: CampaignSpec,
    base_dir: Path,
    spec_path: Path,
    *,
    pins: PinReport | None = None,
    models: dict[str, ModelArtifact] | None = None,
) -> PreparedCampaign:
    """Validate benchmarks, resolve models and check runtimes before anything heavy runs.

    An orchestrator that verified the pins and fetched the models as steps of its own passes
    their results as ``pins`` and ``models`` (keyed by model name) so they aren't redone.

    Raises:
        LabError: the first problem found (unknown task, missing model, bad runtime combo...).
    """
    tasks_dir = spec.tasks_dir if spec.tasks_dir.is_absolute() else base_dir / spec.tasks_dir
    for bench in spec.benchmarks:
        get_harness(bench.harness).check(bench, tasks_dir, base_dir)
    # Pins first: a refused revision or a runtime version mismatch stops before any download.
    environment = pins.environment if pins is not None else collect_environment()
    if pins is None:
        pins = verify_pins(spec, base_dir, environment=environment)
    if models is None:
        models = {
            m.name: resolve_model(m, base_dir, allow_unpinned=spec.allow_unpinned)
            for m in spec.models
        }
    for runtime_spec in spec.runtimes:
        runtime = get_runtime(runtime_spec.kind)
        for model in models.values():
            runtime.check(runtime_spec, model, spec.benchmarks)
            if getattr(runtime, "supports_loglikelihood", True):
                continue
            for bench in spec.benchmarks:
                if get_harness(bench.harness).needs_loglikelihood(bench, tasks_dir):
                    raise SpecError(
                        f"runtime {runtime_spec.display!r} can't score loglikelihood tasks, but "
                        f"benchmark {bench.name!r} has one (its scores would be silently wrong)",
                        value=", ".join(bench.tasks),
                        fix="run generation-only tasks on this runtime, or use vllm/transformers "
                        "for multiple-choice tasks",
                    )
    return PreparedCampaign(
        spec=spec,
        base_dir=base_dir,
        spec_path=spec_path,
        tasks_dir=tasks_dir,
        models=models,
        environment=environment,
        tasks_sha256=tasks_sha256(tasks_dir),
        tasks_commit=tasks_commit(tasks_dir),
        pins=pins,
    )


def _now() -> datetime:
    return datetime.now(UTC)


class _RawOutputs(NamedTuple):
    samples: Path
    samples_sha256: str
    results: Path
    results_sha256: str
    outcomes: pa.Table  # what outcomes.parquet holds; ingest reuses it instead of rebuilding


def _write_raw(out_dir: Path, result: HarnessResult) -> _RawOutputs:
    """Write samples and outcomes (Parquet) and results (JSON); return paths and sha256s."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        samples = out_dir / "samples.parquet"
        tmp = samples.with_suffix(".parquet.tmp")
        pq.write_table(result.samples, tmp, compression="zstd")
        tmp.replace(samples)
        outcomes = outcomes_table(result.outcomes)
        pq.write_table(outcomes, out_dir / "outcomes.parquet", compression="zstd")
        results = out_dir / "results.json"
        results.write_text(json.dumps(result.results_json, indent=1, default=str, sort_keys=True))
    except OSError as exc:
        raise StorageError(
            f"could not write raw outputs: {exc.strerror or exc}",
            value=out_dir,
            fix="free disk space or point EVALLAB_RUNS_DIR at a writable folder with room",
        ) from exc
    return _RawOutputs(samples, sha256_file(samples), results, sha256_file(results), outcomes)


def _manifest(out_dir: Path, record: RunRecord, scores: list[ScoreRow]) -> None:
    data = {
        "run": {
            k: (str(v) if isinstance(v, uuid.UUID | datetime) else v)
            for k, v in asdict(record).items()
        },
        "scores": [asdict(s) for s in scores],
    }
    (out_dir / "run.json").write_text(json.dumps(data, indent=1, default=str))


def ingest_run_dir(dsn: str, out_dir: Path) -> RunRecord:
    """Re-ingest a run from its folder (``run.json`` + ``outcomes.parquet``). Idempotent.

    Used after the database was unreachable when the run finished: nothing computed is lost.
    """
    manifest = out_dir / "run.json"
    if not manifest.is_file():
        raise StorageError(
            "run folder has no run.json", value=out_dir, fix="pass a folder under runs/"
        )
    data = json.loads(manifest.read_text())
    run = dict(data["run"])
    for key in ("run_id", "campaign_id"):
        run[key] = uuid.UUID(run[key])
    for key in ("started_at", "finished_at"):
        if run.get(key):
            run[key] = datetime.fromisoformat(run[key])
    record = RunRecord(**run)
    if record.raw_path and sha256_file(Path(record.raw_path)) != record.raw_sha256:
        raise StorageError(
            "raw samples file does not match its recorded sha256",
            value=record.raw_path,
            fix="the file was modified; restore it from a backup",
        )
    scores = [ScoreRow(**s) for s in data["scores"]]
    parquet = out_dir / "outcomes.parquet"
    outcomes = pq.read_table(parquet) if parquet.exists() else outcomes_table([])
    run_sync(_ingest(dsn, record, scores, outcomes))
    return record


async def _ingest(
    dsn: str,
    record: RunRecord,
    scores: list[ScoreRow],
    outcomes: Sequence[SampleOutcome] | pa.Table,
    telemetry: list[tuple[object, ...]] | None = None,
) -> None:
    conn = await connect(dsn)
    try:
        await ingest_run(conn, record, scores, outcomes, telemetry or ())
    finally:
        await conn.close()


def _base_record(
    prepared: PreparedCampaign,
    campaign_id: uuid.UUID,
    model: ModelArtifact,
    runtime_spec: RuntimeSpec,
    session: RuntimeSession | None,
    bench: BenchmarkSpec,
) -> RunRecord:
    env = prepared.environment
    harness_version, harness_commit = get_harness(bench.harness).version()
    info = session.info if session is not None else None
    return RunRecord(
        run_id=uuid.uuid4(),
        campaign_id=campaign_id,
        run_key=run_key(prepared, model, runtime_spec, bench),
        benchmark=bench.name,
        model_name=model.name,
        model_source=model.source,
        model_id=model.model_id,
        model_revision=model.revision,
        model_sha256=model.sha256,
        pinned=model.pinned,
        quant=model.quant,
        weights_sha256=model.weights_sha256,
        runtime=runtime_spec.kind,
        runtime_label=runtime_spec.display,
        runtime_version=info.version if info else _runtime_version(runtime_spec),
        runtime_commit=info.commit if info else "",
        runtime_command=info.command if info else "",
        harness=bench.harness,
        harness_version=harness_version,
        harness_commit=harness_commit,
        tasks=list(bench.tasks),
        tasks_commit=prepared.tasks_commit,
        tasks_sha256=prepared.tasks_sha256,
        seed=prepared.spec.seed,
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
    harness: Harness, request: HarnessRequest, session: RuntimeSession, bench: BenchmarkSpec
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
            log_tail = getattr(session, "log_tail", None)
            tail = log_tail() if callable(log_tail) else ""
            raise HarnessError(
                f"benchmark {bench.name!r} failed twice; the runtime crashed each time "
                f"({first.what}; then {second.what})"
                + (f". Last lines of the runtime log:\n{tail}" if tail else ""),
                value=session.info.log_path or session.info.label,
                fix="read the runtime log named here; lower max_model_len/concurrency",
            ) from second


@contextlib.contextmanager
def _full_disk_stops_campaign(out_dir: Path, record: RunRecord) -> Iterator[None]:
    """Turn a full disk met while writing a run into one clear error, and drop the partial run.

    A full disk fails every later run as well, so this stops the campaign instead of recording a
    failed run (whose manifest couldn't be written anyway). Finished runs are already stored.
    """
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        shutil.rmtree(out_dir, ignore_errors=True)
        raise StorageError(
            f"the disk holding the runs folder is full ({describe_space(out_dir.parent)}); "
            f"run {record.model_name} · {record.runtime_label} · {record.benchmark} was "
            "discarded, the runs finished before it are stored",
            value=out_dir.parent,
            fix="free space there or point EVALLAB_RUNS_DIR at a disk with room, then re-run "
            "the same command with --resume to skip the runs that already succeeded",
        ) from exc


def execute_benchmark(
    prepared: PreparedCampaign,
    campaign_id: uuid.UUID,
    model: ModelArtifact,
    runtime_spec: RuntimeSpec,
    session: RuntimeSession,
    bench: BenchmarkSpec,
    dsn: str,
    guard: CampaignGuard | None = None,
    *,
    raise_on_failure: bool = False,
) -> RunOutcome:
    """Run one benchmark on a live session, write its raw outputs, ingest it.

    A runtime that crashes mid-benchmark is restarted and the benchmark retried once (the
    harness's request cache keeps finished requests). A harness failure marks the run failed
    (ingested with its reason) and returns; database failures raise (outputs stay on disk).
    With ``raise_on_failure`` a harness failure discards the run's folder and raises instead,
    so an orchestrator can retry it and call :func:`record_failed_run` once retries are spent.
    """
    record = _base_record(prepared, campaign_id, model, runtime_spec, session, bench)
    out_dir = runs_dir() / str(record.run_id)
    harness = get_harness(bench.harness)
    if guard is not None:
        harness = guard.wrap(harness)  # GPU telemetry sampled while the harness runs
    request = HarnessRequest(
        benchmark=bench,
        model=model,
        session=session,
        seed=prepared.spec.seed,
        out_dir=out_dir,
        tasks_dir=prepared.tasks_dir,
        base_dir=prepared.base_dir,
    )
    t0 = time.monotonic()
    result: HarnessResult | None = None
    with _full_disk_stops_campaign(out_dir, record):
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = _run_harness(harness, request, session, bench)
        except KeyboardInterrupt:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        except LabError as exc:
            if raise_on_failure or is_disk_full(exc):
                shutil.rmtree(out_dir, ignore_errors=True)
                raise
            record.duration_s = time.monotonic() - t0
            return _store_failed(record, out_dir, exc.message, dsn)
        raw = _write_raw(out_dir, result)
    duration = time.monotonic() - t0
    record.status = "succeeded"
    record.finished_at = _now()
    record.duration_s = duration
    record.n_samples = result.n_samples
    record.samples_per_min = result.n_samples / (duration / 60) if duration > 0 else None
    record.raw_path, record.raw_sha256 = str(raw.samples), raw.samples_sha256
    record.results_path, record.results_sha256 = str(raw.results), raw.results_sha256
    record.dataset_revisions = result.dataset_revisions
    record.task_hashes = result.task_hashes
    telemetry: list[tuple[object, ...]] = []
    if guard is not None:
        invalid_reason, tags = guard.judge()
        record.tags += [t for t in tags if t not in record.tags]
        if invalid_reason:
            record.status, record.status_reason = "invalid", invalid_reason
        telemetry = guard.telemetry_records()
    with _full_disk_stops_campaign(out_dir, record):
        _manifest(out_dir, record, result.scores)
    run_sync(_ingest(dsn, record, result.scores, raw.outcomes, telemetry))
    return RunOutcome(
        record.run_id,
        model.name,
        runtime_spec.display,
        bench.name,
        record.status,
        record.status_reason,
        scores=result.scores,
        raw_dir=out_dir,
        duration_s=duration,
    )


async def _succeeded_keys(dsn: str, keys: list[str]) -> set[str]:
    conn = await connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT run_key FROM runs WHERE status = 'succeeded' AND run_key = ANY($1)",
            keys,
        )
    finally:
        await conn.close()
    return {r["run_key"] for r in rows}


async def _start_campaign(dsn: str, rec: CampaignRecord) -> None:
    conn = await connect(dsn)
    try:
        await migrate(conn)
        await insert_campaign(conn, rec)
    finally:
        await conn.close()


async def _finish_campaign(dsn: str, rec: CampaignRecord) -> None:
    conn = await connect(dsn)
    try:
        await finish_campaign(conn, rec)
    finally:
        await conn.close()


@contextlib.contextmanager
def open_session(
    prepared: PreparedCampaign, model: ModelArtifact, runtime_spec: RuntimeSpec
) -> Iterator[RuntimeSession]:
    """Start a runtime session for a group and guarantee it stops (even on Ctrl-C)."""
    session = start_session(prepared, model, runtime_spec)
    with contextlib.ExitStack() as stack:
        stack.push(session)
        yield session


# ------------------------------------------------- steps for orchestrators (flows/campaign.py)


def begin_campaign(prepared: PreparedCampaign, dsn: str) -> CampaignRecord:
    """Migrate the database and insert a ``running`` campaign row for ``prepared``."""
    rec = CampaignRecord(
        campaign_id=uuid.uuid4(),
        name=prepared.spec.name,
        spec=prepared.spec.model_dump(mode="json"),
        spec_sha256=spec_sha256(prepared.spec),
        spec_path=str(prepared.spec_path),
        lab_version=__version__,
        lab_commit=prepared.environment.lab_commit,
        started_at=_now(),
    )
    run_sync(_start_campaign(dsn, rec))
    return rec


def end_campaign(dsn: str, rec: CampaignRecord, status: str) -> None:
    """Mark a campaign row finished with ``status`` (succeeded, failed or interrupted)."""
    rec.status, rec.finished_at = status, _now()
    run_sync(_finish_campaign(dsn, rec))


def succeeded_run_keys(dsn: str, keys: list[str]) -> set[str]:
    """The run keys among ``keys`` that already have a succeeded run (what a resume skips)."""
    return run_sync(_succeeded_keys(dsn, keys))


def skipped_outcome(
    model: ModelArtifact, runtime_spec: RuntimeSpec, bench: BenchmarkSpec
) -> RunOutcome:
    """The outcome reported for a run skipped because it already succeeded with the same pins."""
    return RunOutcome(
        uuid.UUID(int=0),
        model.name,
        runtime_spec.display,
        bench.name,
        "succeeded",
        "already succeeded with the same pins",
        skipped=True,
    )


def start_session(
    prepared: PreparedCampaign, model: ModelArtifact, runtime_spec: RuntimeSpec
) -> RuntimeSession:
    """Start a group's runtime session; the caller must ``stop()`` it (see :func:`open_session`)."""
    workdir = runs_dir() / "_runtimes"
    workdir.mkdir(parents=True, exist_ok=True)
    session = get_runtime(runtime_spec.kind).start(runtime_spec, model, workdir)
    return session.__enter__()


def record_failed_run(
    prepared: PreparedCampaign,
    campaign_id: uuid.UUID,
    model: ModelArtifact,
    runtime_spec: RuntimeSpec,
    session: RuntimeSession | None,
    bench: BenchmarkSpec,
    dsn: str,
    reason: str,
) -> RunOutcome:
    """Store one ``failed`` run with its reason (e.g. after an orchestrator's retries ran out)."""
    record = _base_record(prepared, campaign_id, model, runtime_spec, session, bench)
    out_dir = runs_dir() / str(record.run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _store_failed(record, out_dir, reason, dsn)


def _store_failed(record: RunRecord, out_dir: Path, reason: str, dsn: str) -> RunOutcome:
    """Mark ``record`` failed with ``reason``, keep its manifest on disk and ingest it."""
    record.status, record.status_reason, record.finished_at = "failed", reason, _now()
    _manifest(out_dir, record, [])
    run_sync(_ingest(dsn, record, [], []))
    return RunOutcome(
        record.run_id,
        record.model_name,
        record.runtime_label,
        record.benchmark,
        "failed",
        reason,
        raw_dir=out_dir,
        duration_s=record.duration_s or 0.0,
    )


class CampaignRunner:
    """Runs a prepared campaign end to end (the non-Prefect path behind ``evallab run``)."""

    def __init__(
        self,
        prepared: PreparedCampaign,
        dsn: str,
        *,
        reporter: Reporter | None = None,
        resume: bool = False,
        session_hooks: list[Callable[[RuntimeSession, ModelArtifact, RuntimeSpec], None]]
        | None = None,
    ) -> None:
        self.prepared = prepared
        self.dsn = dsn
        self.reporter: Reporter = reporter or _SilentReporter()
        self.resume = resume
        self.session_hooks = session_hooks or []

    def _fail_group(
        self,
        campaign_id: uuid.UUID,
        model: ModelArtifact,
        runtime_spec: RuntimeSpec,
        benchmarks: list[BenchmarkSpec],
        exc: LabError,
        outcomes: list[RunOutcome],
    ) -> None:
        """Record a failed run, with the reason, for each benchmark of a group that can't run."""
        for bench in benchmarks:
            outcome = record_failed_run(
                self.prepared, campaign_id, model, runtime_spec, None, bench, self.dsn, exc.message
            )
            outcomes.append(outcome)
            self.reporter.run_finished(outcome)

    def run(self) -> CampaignResult:
        """Run every (model, runtime, benchmark); raise CampaignInterrupted on Ctrl-C."""
        p = self.prepared
        rec = begin_campaign(p, self.dsn)
        guard = CampaignGuard(p.spec, self.dsn, rec.campaign_id, gpu_name=p.environment.gpu_name)
        outcomes: list[RunOutcome] = []
        total = p.total_runs
        index = 0
        try:
            for model, runtime_spec in p.groups():
                keys = {b.name: run_key(p, model, runtime_spec, b) for b in p.spec.benchmarks}
                done = succeeded_run_keys(self.dsn, list(keys.values())) if self.resume else set()
                todo = [b for b in p.spec.benchmarks if keys[b.name] not in done]
                for b in p.spec.benchmarks:
                    if b not in todo:
                        index += 1
                        skipped = skipped_outcome(model, runtime_spec, b)
                        outcomes.append(skipped)
                        self.reporter.run_finished(skipped)
                if not todo:
                    continue
                try:
                    session = start_session(p, model, runtime_spec)
                except RuntimeLaunchError as exc:
                    # The runtime never came up: this group's runs fail, the others still run.
                    index += len(todo)
                    self._fail_group(rec.campaign_id, model, runtime_spec, todo, exc, outcomes)
                    continue
                with contextlib.ExitStack() as stack:
                    stack.push(session)  # stops the runtime however the group ends
                    try:
                        guard.start_session(session, model)  # canary + runtime version snapshot
                    except CanaryDriftError as exc:
                        index += len(todo)
                        self._fail_group(rec.campaign_id, model, runtime_spec, todo, exc, outcomes)
                        continue
                    for hook in self.session_hooks:
                        hook(session, model, runtime_spec)
                    for bench in todo:
                        index += 1
                        self.reporter.run_started(
                            f"{model.name} · {runtime_spec.display} · {bench.name}", index, total
                        )
                        guard.before_benchmark(session)  # a version change stops here
                        outcome = execute_benchmark(
                            p,
                            rec.campaign_id,
                            model,
                            runtime_spec,
                            session,
                            bench,
                            self.dsn,
                            guard,
                        )
                        guard.after_ingest(outcome.run_id, outcome.status)
                        outcomes.append(outcome)
                        self.reporter.run_finished(outcome)
        except KeyboardInterrupt as exc:
            with contextlib.suppress(DatabaseError):
                end_campaign(self.dsn, rec, "interrupted")
            finished = sum(1 for o in outcomes if not o.skipped)
            raise CampaignInterrupted(
                f"campaign {p.spec.name!r} was interrupted; {finished} finished run(s) are stored "
                "and the unfinished one was discarded",
                value=rec.campaign_id,
                fix="re-run the same command with --resume to skip the runs that already succeeded",
            ) from exc
        except BaseException:
            with contextlib.suppress(DatabaseError):
                end_campaign(self.dsn, rec, "failed")
            raise
        end_campaign(
            self.dsn, rec, "failed" if any(o.status == "failed" for o in outcomes) else "succeeded"
        )
        guard.close()
        return CampaignResult(rec.campaign_id, p.spec.name, rec.status, outcomes, guard.notes)
