"""Pins: everything a run's result depends on, resolved to exact values and verified.

:func:`verify_pins` runs before anything heavy (no model is fetched, no server started):

* model revisions resolve to a full commit sha (a branch/tag is resolved, recorded, and refused
  unless the campaign sets ``allow_unpinned``);
* every hub dataset an lm-eval task loads has a commit-sha ``revision`` (same rule);
* each pinned runtime version equals what its virtualenv has installed;
* harness versions and commits, GPU name/driver/CUDA and the environment fingerprint are recorded.

Campaigns run for days, so :func:`snapshot_versions` records the driver, runtime and harness
versions at the start and :func:`recheck_versions` compares them before every benchmark: a
change mid-campaign stops it, naming both values.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evallab.environment import EnvironmentInfo, collect_environment
from evallab.errors import EnvironmentChangedError, HubUnreachableError, LabError, PinError
from evallab.hub import HubClient, RepoType, cached_ref, hub_offline
from evallab.models import sha256_file
from evallab.spec import BenchmarkSpec, CampaignSpec, HubModelSpec, LocalModelSpec, RuntimeSpec
from evallab.telemetry.gpu import GpuIdentity, GpuIdentitySource
from evallab.telemetry.nvml import open_nvml

if TYPE_CHECKING:
    from evallab.runtimes.base import RuntimeSession

__all__ = [
    "PinReport",
    "PinRow",
    "VersionSnapshot",
    "dataset_pins",
    "hub_resolver",
    "installed_runtime_version",
    "recheck_versions",
    "running_runtime",
    "snapshot_versions",
    "verify_pins",
]

PinStatus = Literal["ok", "unpinned", "refused", "mismatch", "info"]
#: (repo_type "model"|"dataset", repo id, revision) -> full commit sha
Resolver = Callable[[str, str, str], str]

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
# `datasets` builders that read local files: such tasks are pinned by the tasks' content hash.
_LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas", "generator"})


@dataclass(frozen=True)
class PinRow:
    """One line of the pins table."""

    kind: str
    name: str
    requested: str
    resolved: str
    status: PinStatus
    detail: str = ""

    @property
    def refused(self) -> bool:
        """Whether this row stops the campaign."""
        return self.status in ("refused", "mismatch")


@dataclass(frozen=True)
class PinReport:
    """The resolved pins of a campaign."""

    rows: tuple[PinRow, ...]
    environment: EnvironmentInfo
    allow_unpinned: bool

    @property
    def refused(self) -> list[PinRow]:
        """Rows that stop the campaign."""
        return [r for r in self.rows if r.refused]

    @property
    def unpinned(self) -> list[PinRow]:
        """Rows accepted only because the campaign allows unpinned revisions."""
        return [r for r in self.rows if r.status == "unpinned"]

    @property
    def dataset_revisions(self) -> dict[str, str]:
        """Task -> resolved dataset revision (for the ``runs.dataset_revisions`` column)."""
        return {r.name: r.resolved for r in self.rows if r.kind == "dataset"}

    def raise_if_refused(self) -> None:
        """Raise the first refusal as a PinError naming every refused pin.

        Raises:
            PinError: at least one pin is refused or mismatched.
        """
        bad = self.refused
        if not bad:
            return
        listed = "; ".join(
            f"{r.kind} {r.name}: requested {r.requested or '(none)'}, found {r.resolved or '?'}"
            + (f" ({r.detail})" if r.detail else "")
            for r in bad
        )
        unpinned_only = all(r.status == "refused" for r in bad)
        raise PinError(
            f"{len(bad)} pin(s) refused: {listed}",
            value=bad[0].resolved or bad[0].requested,
            fix=(
                "pin each revision to the full commit sha shown, or set allow_unpinned: true "
                "in the campaign (runs are then tagged unpinned)"
                if unpinned_only
                else "install the pinned version (`evallab runtime install KIND==VERSION "
                "--force`) or change the campaign's pin to the installed one"
            ),
        )


# ------------------------------------------------------------------------------ resolution


def hub_resolver(repo_type: str, repo: str, revision: str) -> str:
    """Resolve a hub branch/tag to its current commit sha.

    Asks the hub (short timeouts, a few seconds of retries: see :mod:`evallab.hub`). Offline
    (``HF_HUB_OFFLINE=1``), or when the hub can't be reached, falls back to the ref recorded in
    the local Hugging Face cache.

    Raises:
        PinError: the hub refused (unknown repository or revision, gated or private without a
            token), or offline and the cache doesn't know the revision.
        HubUnreachableError: the hub can't be reached and the cache doesn't know the revision
            (``transient``: the same campaign can succeed once the hub is back).
    """
    kind: RepoType = "dataset" if repo_type == "dataset" else "model"
    if hub_offline():
        cached = cached_ref(kind, repo, revision)
        if cached:
            return cached
        raise PinError(
            f"{repo_type} revision {revision!r} of {repo} can't be resolved to a commit "
            "(offline, not in the local cache)",
            value=f"{repo}@{revision}",
            fix="pin the full 40-character commit sha in the campaign, or download that revision "
            f"once with network access (`hf download {repo} --revision {revision}`) so the cache "
            "records the ref",
        )
    try:
        return HubClient().repo_info(kind, repo, revision, error=PinError).sha
    except HubUnreachableError:
        # What the cache recorded is the best answer without the hub; runs made with an
        # unpinned revision are tagged as such either way.
        cached = cached_ref(kind, repo, revision)
        if cached:
            return cached
        raise


def _resolve(
    resolver: Resolver, repo_type: str, repo: str, revision: str, allow: bool
) -> tuple[str, PinStatus, str]:
    try:
        sha = resolver(repo_type, repo, revision)
    except PinError as exc:
        # The refusal's own fix (a token, a revision that exists) matters more than the
        # table's generic one.
        return "", "refused", f"{exc.what}; fix: {exc.fix}" if exc.fix else exc.what
    if allow:
        return sha, "unpinned", f"{revision!r} is a branch/tag; resolved now, tagged unpinned"
    return sha, "refused", f"{revision!r} is a branch/tag, not a commit sha"


def _model_rows(spec: CampaignSpec, base_dir: Path, resolver: Resolver) -> list[PinRow]:
    rows = []
    for m in spec.models:
        if isinstance(m, HubModelSpec):
            if m.is_pinned:
                rows.append(PinRow("model", m.name, m.revision, m.revision, "ok", m.repo))
                continue
            sha, status, detail = _resolve(
                resolver, "model", m.repo, m.revision, spec.allow_unpinned
            )
            rows.append(PinRow("model", m.name, m.revision, sha, status, f"{m.repo}: {detail}"))
        elif isinstance(m, LocalModelSpec):
            folder = m.path if m.path.is_absolute() else base_dir / m.path
            rows.append(
                PinRow("model", m.name, str(m.path), str(folder), "ok", "pinned by content sha256")
            )
        else:
            rows.append(
                PinRow(
                    "model",
                    m.name,
                    f"tiny seed={m.seed}",
                    f"tiny seed={m.seed}",
                    "ok",
                    "built locally, deterministic by seed",
                )
            )
    return rows


@functools.lru_cache(maxsize=4)
def _task_manager(tasks_dir: str) -> Any:
    from lm_eval.tasks import TaskManager

    include = tasks_dir if Path(tasks_dir).is_dir() else None
    return TaskManager(include_path=include)


def _task_configs(name: str, tm: Any, depth: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """(task name, config) of every leaf task behind ``name`` (a task, group or tag)."""
    entry = tm.task_index.get(name)
    if entry is None or depth > 8:
        return []
    kind = getattr(entry.kind, "name", str(entry.kind)).upper()
    cfg = dict(entry.cfg or {})
    if kind == "GROUP":
        out = []
        for sub in cfg.get("task", []):
            sub_name = sub.get("task") if isinstance(sub, dict) else sub
            if isinstance(sub, dict) and "dataset_path" in sub:
                out.append((str(sub_name), sub))
            elif isinstance(sub_name, str):
                out.extend(_task_configs(sub_name, tm, depth + 1))
        return out
    if kind == "TAG":
        members = sorted(n for n, e in tm.task_index.items() if name in (e.tags or ()))
        return [c for member in members for c in _task_configs(member, tm, depth + 1)]
    return [(name, cfg)]


def dataset_pins(
    bench: BenchmarkSpec,
    tasks_dir: Path,
    base_dir: Path,
    resolver: Resolver,
    allow_unpinned: bool,
) -> list[PinRow]:
    """Pin rows for the datasets a benchmark's tasks load.

    lm-eval tasks that load from the hub must name ``dataset_kwargs: {revision: <sha>}`` (a
    custom task YAML can ``include`` a standard task and add it). Local data is pinned by the
    custom tasks' content hash; code benchmarks' ``dataset_files`` by their sha256.
    """
    rows: list[PinRow] = []
    if bench.harness != "lm_eval":
        for task in bench.tasks:
            data_file = bench.dataset_files.get(task)
            if data_file is None:
                rows.append(
                    PinRow("dataset", task, "", "packaged", "info", "data shipped with a package")
                )
                continue
            full = data_file if data_file.is_absolute() else base_dir / data_file
            sha = sha256_file(full) if full.is_file() else ""
            status: PinStatus = "ok" if sha else "refused"
            rows.append(
                PinRow(
                    "dataset",
                    task,
                    str(data_file),
                    f"sha256:{sha[:16]}" if sha else "",
                    status,
                    "local file" if sha else f"file not found: {full}",
                )
            )
        return rows
    tm = _task_manager(str(tasks_dir))
    for task in bench.tasks:
        for leaf, cfg in _task_configs(task, tm):
            path = str(cfg.get("dataset_path") or "")
            kwargs = cfg.get("dataset_kwargs") or {}
            if not path or path in _LOCAL_BUILDERS or Path(path).exists() or "data_files" in kwargs:
                rows.append(
                    PinRow(
                        "dataset",
                        leaf,
                        path or "(none)",
                        "local",
                        "ok",
                        "pinned by the tasks' content hash",
                    )
                )
                continue
            revision = str(kwargs.get("revision") or "")
            if _FULL_SHA.match(revision):
                rows.append(PinRow("dataset", leaf, revision, revision, "ok", path))
                continue
            sha, status, detail = _resolve(
                resolver, "dataset", path, revision or "main", allow_unpinned
            )
            note = "no revision in the task" if not revision else detail
            rows.append(
                PinRow("dataset", leaf, revision or "(none)", sha, status, f"{path}: {note}")
            )
    return rows


# ------------------------------------------------------------------------------ versions


def installed_runtime_version(spec: RuntimeSpec) -> tuple[str, str] | None:
    """(package, version) installed in the runtime's virtualenv, None if it has no venv.

    Reads the venv's package metadata directly (no interpreter is started).
    """
    version = getattr(spec, "version", None)
    if not version:
        return None
    from evallab.runtimes.venvs import find_installed

    package = str(getattr(spec, "package", spec.kind))
    try:
        venv = find_installed(spec.kind, str(version), package)
    except LabError:
        return None
    normal = package.replace("-", "_").lower()
    for site in Path(venv.path).glob("lib/python*/site-packages"):
        for dist in md.distributions(path=[str(site)]):
            name = (dist.metadata["Name"] or "").replace("-", "_").lower()
            if name == normal:
                return package, dist.version
    return package, ""


def _same_version(installed: str, pinned: str) -> bool:
    """Whether ``installed`` satisfies ``==pinned`` (so ``0.32.0`` accepts ``0.32.0+cpu``)."""
    from packaging.version import InvalidVersion, Version

    try:
        have, want = Version(installed), Version(pinned)
    except InvalidVersion:
        return installed == pinned
    return have == want if want.local else Version(have.public) == want


def _runtime_rows(spec: CampaignSpec) -> list[PinRow]:
    rows = []
    for r in spec.runtimes:
        pinned = getattr(r, "version", None)
        if r.kind == "transformers":
            rows.append(
                PinRow(
                    "runtime",
                    r.display,
                    "(lab venv)",
                    md.version("transformers"),
                    "info",
                    "in-process; covered by the environment fingerprint",
                )
            )
            continue
        if r.kind == "openai-endpoint":
            rows.append(
                PinRow(
                    "runtime",
                    r.display,
                    "",
                    "",
                    "info",
                    "external server: version recorded from its /version at start",
                )
            )
            continue
        found = installed_runtime_version(r)
        if found is None:
            rows.append(
                PinRow(
                    "runtime",
                    r.display,
                    str(pinned),
                    "",
                    "mismatch",
                    "not installed (run `evallab runtime install`)",
                )
            )
        elif not _same_version(found[1], str(pinned)):
            rows.append(
                PinRow(
                    "runtime",
                    r.display,
                    str(pinned),
                    found[1],
                    "mismatch",
                    f"virtualenv has {found[0]}=={found[1] or '?'}",
                )
            )
        else:
            rows.append(PinRow("runtime", r.display, str(pinned), found[1], "ok", found[0]))
    return rows


def _harness_versions(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    from evallab.harnesses import get_harness

    return {n: tuple(get_harness(n).version()) for n in sorted(set(names))}  # type: ignore[misc]


def verify_pins(
    spec: CampaignSpec,
    base_dir: Path,
    *,
    environment: EnvironmentInfo | None = None,
    resolver: Resolver = hub_resolver,
    harness_versions: Mapping[str, tuple[str, str]] | None = None,
    raise_on_refusal: bool = True,
) -> PinReport:
    """Resolve and verify every pin of a campaign, before anything heavy runs.

    Args:
        spec: The campaign.
        base_dir: Folder the campaign's relative paths resolve against.
        environment: The environment (collected when None).
        resolver: Resolves hub branches/tags to commits (tests pass an offline one).
        harness_versions: Harness name -> (version, commit) (looked up when None).
        raise_on_refusal: Raise on a refused pin (``evallab pins check`` only prints).

    Returns:
        The pins table.

    Raises:
        PinError: a revision isn't pinned (and unpinned isn't allowed), can't be resolved, or a
            runtime's installed version differs from the campaign's pin.
    """
    env = environment or collect_environment()
    tasks_dir = spec.tasks_dir if spec.tasks_dir.is_absolute() else base_dir / spec.tasks_dir
    rows = _model_rows(spec, base_dir, resolver)
    seen: set[str] = set()
    for bench in spec.benchmarks:
        for row in dataset_pins(bench, tasks_dir, base_dir, resolver, spec.allow_unpinned):
            if row.name not in seen:
                seen.add(row.name)
                rows.append(row)
    rows.extend(_runtime_rows(spec))
    harnesses = harness_versions or _harness_versions(b.harness for b in spec.benchmarks)
    for name, (version, commit) in sorted(harnesses.items()):
        rows.append(PinRow("harness", name, "", f"{version} {commit}".strip(), "info"))
    rows.extend(
        [
            PinRow("gpu", "name", "", env.gpu_name or "(no GPU)", "info"),
            PinRow("gpu", "driver", "", env.gpu_driver or "-", "info"),
            PinRow("gpu", "cuda", "", env.cuda_version or "-", "info"),
            PinRow(
                "environment",
                "fingerprint",
                "",
                env.fingerprint,
                "info",
                f"{len(env.packages)} packages",
            ),
            PinRow("environment", "lab", "", f"{env.lab_version} {env.lab_commit}", "info"),
        ]
    )
    report = PinReport(tuple(rows), env, spec.allow_unpinned)
    if raise_on_refusal:
        report.raise_if_refused()
    return report


# ------------------------------------------------------------------------------ re-checks


@dataclass(frozen=True)
class VersionSnapshot:
    """Versions that must not change while a campaign runs."""

    gpu: GpuIdentity
    harnesses: dict[str, tuple[str, str]] = field(default_factory=dict)
    runtime: tuple[str, str] | None = None

    def items(self) -> dict[str, str]:
        """Flat name -> value view used to compare two snapshots."""
        out = {"GPU driver": self.gpu.driver, "CUDA version": self.gpu.cuda_version}
        for name, (version, commit) in self.harnesses.items():
            out[f"harness {name}"] = f"{version} {commit}".strip()
        if self.runtime is not None:
            out["runtime"] = f"{self.runtime[0]} {self.runtime[1]}".strip()
        return out


def running_runtime(session: RuntimeSession) -> tuple[str, str]:
    """The version a live runtime reports now (servers are asked again, not remembered)."""
    info = session.info
    if info.base_url:
        import httpx

        root = info.base_url.rstrip("/").removesuffix("/v1")
        try:
            resp = httpx.get(root + "/version", timeout=5.0)
            if resp.status_code == 200:
                data = resp.json()
                if isinstance(data, dict) and data.get("version"):
                    return str(data["version"]), str(data.get("commit") or info.commit)
        except (httpx.HTTPError, ValueError):
            # Servers without /version keep the version recorded at start.
            pass
    if info.kind == "transformers":
        return md.version("transformers"), info.commit
    return info.version, info.commit


def snapshot_versions(
    harness_names: Iterable[str],
    session: RuntimeSession | None = None,
    gpu: GpuIdentitySource | None = None,
    gpu_index: int = 0,
) -> VersionSnapshot:
    """Record the driver, CUDA, harness and runtime versions as they are now.

    Args:
        harness_names: Harnesses the campaign uses.
        session: The live runtime session (None before one starts).
        gpu: GPU identity source (the real NVML when None).
        gpu_index: GPU the campaign uses.
    """
    if gpu is not None:
        ident = gpu.gpu_identity(gpu_index)
    else:
        env_gpu = _real_gpu_identity(gpu_index)
        ident = env_gpu
    return VersionSnapshot(
        gpu=ident,
        harnesses=_harness_versions(harness_names),
        runtime=running_runtime(session) if session is not None else None,
    )


def _real_gpu_identity(index: int) -> GpuIdentity:
    backend = open_nvml()
    if backend is None:
        return GpuIdentity()
    try:
        return backend.gpu_identity(index)
    finally:
        backend.close()


def recheck_versions(
    baseline: VersionSnapshot,
    harness_names: Sequence[str] | None = None,
    session: RuntimeSession | None = None,
    gpu: GpuIdentitySource | None = None,
    gpu_index: int = 0,
) -> VersionSnapshot:
    """Compare the versions now with ``baseline``; stop the campaign on any change.

    Call before each benchmark. Only what the baseline recorded is compared (a runtime is
    compared only if both snapshots have one, so a new group's session can start fresh).

    Returns:
        The current snapshot.

    Raises:
        EnvironmentChangedError: the driver, CUDA, a harness or the runtime changed; the message
            names both values.
    """
    names = list(harness_names) if harness_names is not None else list(baseline.harnesses)
    now = snapshot_versions(names, session, gpu, gpu_index)
    before, after = baseline.items(), now.items()
    changed = [
        f"{key}: {before[key] or '(none)'} -> {after[key] or '(none)'}"
        for key in before
        if key in after and before[key] != after[key]
    ]
    if changed:
        raise EnvironmentChangedError(
            "the environment changed while the campaign was running: " + "; ".join(changed),
            value="; ".join(changed),
            fix="finish upgrades before starting a campaign; re-run it with --resume once the "
            "machine is stable (runs already stored keep the versions they ran with)",
        )
    return now
