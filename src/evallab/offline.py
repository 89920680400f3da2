"""Offline runs: what a campaign needs locally, a check of it up front, and ``prefetch``.

A campaign run offline (``evallab run --offline``) may only use what is already on this machine:
hub model snapshots at their pinned commits (the Hugging Face cache), the hub datasets its tasks
load, and the runtimes' virtualenvs. :func:`campaign_needs` lists each of them with whether it
is present, looking only at local caches (never the network); :func:`require_offline_ready`
refuses a campaign with everything missing named in one message; :func:`prefetch` downloads or
installs what is missing, at the campaign's pins, on a machine with network access.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evallab.errors import HarnessError, LabError, SpecError
from evallab.spec import CampaignSpec, HubModelSpec, LocalModelSpec
from evallab.spec.base import FULL_SHA

__all__ = [
    "OFFLINE_ENV",
    "Need",
    "campaign_needs",
    "go_offline",
    "prefetch",
    "require_offline_ready",
]

#: The variables that keep huggingface_hub, datasets and transformers off the network.
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")

# `datasets` builders that read local files: nothing to fetch for such tasks.
_LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas", "generator"})

NeedKind = Literal["model", "dataset", "runtime"]


@dataclass(frozen=True)
class Need:
    """One thing a campaign needs on this machine.

    Attributes:
        kind: "model", "dataset" or "runtime".
        name: The campaign's label for it (model name, task name, runtime label).
        what: What exactly: ``repo@sha``, a folder, ``kind==version``.
        present: Whether it is available locally now.
        fetch: How :func:`prefetch` gets it; None when there is nothing to fetch (a local folder
            is the user's to provide).
    """

    kind: NeedKind
    name: str
    what: str
    present: bool
    fetch: Callable[[], None] | None = None

    def describe(self) -> str:
        """``model m (org/model@sha)``."""
        return f"{self.kind} {self.name} ({self.what})"


def go_offline() -> None:
    """Set the variables that keep the Hugging Face libraries off the network, for this process.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import; its constants are updated too so a
    library already imported honours it.
    """
    for var in OFFLINE_ENV:
        os.environ[var] = "1"
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of the lab
        return
    constants.HF_HUB_OFFLINE = True


# ------------------------------------------------------------------------------------ models


def _model_needs(spec: CampaignSpec, base_dir: Path) -> list[Need]:
    from evallab.models import cached_snapshot, hub_snapshot

    needs = []
    for m in spec.models:
        if isinstance(m, HubModelSpec):
            present = cached_snapshot(m.repo, m.revision) is not None

            def fetch(m: HubModelSpec = m) -> None:
                hub_snapshot(m, spec.allow_unpinned)

            needs.append(Need("model", m.name, f"{m.repo}@{m.revision}", present, fetch))
        elif isinstance(m, LocalModelSpec):
            folder = m.path if m.path.is_absolute() else base_dir / m.path
            needs.append(Need("model", m.name, str(folder), folder.exists()))
        # Tiny models are built locally from their seed: nothing to have beforehand.
    return needs


# ---------------------------------------------------------------------------------- datasets


def _hub_dataset_present(repo: str, revision: str) -> bool:
    """Whether the Hugging Face cache holds ``repo`` at ``revision`` (a sha, or a cached ref)."""
    from huggingface_hub import constants

    from evallab.hub import cached_ref

    sha = revision if FULL_SHA.match(revision) else cached_ref("dataset", repo, revision)
    if not sha:
        return False
    folder = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}" / "snapshots"
    return (folder / sha).is_dir()


def _dataset_need(name: str, repo: str, config: str | None, revision: str) -> Need:
    what = f"dataset {repo}" + (f"/{config}" if config else "") + f"@{revision or 'main'}"

    def fetch() -> None:
        from evallab.hub import bound_hub_library_timeouts, call_hub, hub_endpoint

        bound_hub_library_timeouts()

        def load() -> None:
            import datasets

            datasets.load_dataset(repo, config, revision=revision or None)

        try:
            call_hub(
                load,
                endpoint=hub_endpoint(),
                doing="download",
                repo=repo,
                revision=revision,
                repo_type="dataset",
            )
        except LabError:
            raise
        except Exception as exc:
            # datasets' own errors (no such configuration, a broken loading script).
            raise HarnessError(
                f"could not download {what}: {type(exc).__name__}: {str(exc)[:300]}",
                value=what,
                fix="check dataset_path, dataset_name and dataset_kwargs.revision in the task",
            ) from exc

    return Need("dataset", name, what, _hub_dataset_present(repo, revision or "main"), fetch)


def _task_configs(spec: CampaignSpec, tasks_dir: Path) -> list[tuple[str, Mapping[str, Any]]]:
    """(leaf task name, config) of every lm-eval task the campaign runs.

    A self-contained custom task is read from its YAML; only other names (lm-eval's own tasks,
    groups, custom tasks that ``include`` one) need lm-eval's task index, which takes seconds to
    build.
    """
    from evallab.harnesses.custom_tasks import discover
    from evallab.harnesses.lm_eval.tasks import task_catalog

    custom = discover(tasks_dir)
    found: list[tuple[str, Mapping[str, Any]]] = []
    for bench in spec.benchmarks:
        if bench.harness != "lm_eval":
            continue
        for task in bench.tasks:
            own = custom.get(task)
            if own is not None and "include" not in own.config:
                found.append((task, own.config))
            else:
                leaves = task_catalog([tasks_dir]).leaves(task)
                found.extend((leaf.name, leaf.config) for leaf in leaves)
    return found


def _lm_eval_datasets(spec: CampaignSpec, tasks_dir: Path, base_dir: Path) -> list[Need]:
    needs: list[Need] = []
    for leaf_name, cfg in _task_configs(spec, tasks_dir):
        path = str(cfg.get("dataset_path") or "")
        kwargs: Any = cfg.get("dataset_kwargs") or {}
        if not isinstance(kwargs, dict):
            kwargs = {}
        local = path in _LOCAL_BUILDERS or "data_files" in kwargs
        if not path or local or Path(path).is_absolute() or (base_dir / path).exists():
            continue  # local data: covered by the tasks folder
        name = cfg.get("dataset_name")
        revision = str(kwargs.get("revision") or "")
        needs.append(_dataset_need(leaf_name, path, str(name) if name else None, revision))
    return needs


def _code_datasets(spec: CampaignSpec, base_dir: Path) -> list[Need]:
    from evallab.harnesses.code.datasets import TASKS

    needs: list[Need] = []
    for bench in spec.benchmarks:
        if bench.harness != "code":
            continue
        for task in bench.tasks:
            file = bench.dataset_files.get(task)
            if file is not None:
                full = file if file.is_absolute() else base_dir / file
                needs.append(Need("dataset", task, str(full), full.is_file()))
                continue
            tdef = TASKS.get(task)
            if tdef is not None:
                revision = bench.dataset_revisions.get(task, "")
                needs.append(_dataset_need(task, tdef.hub_repo, tdef.hub_config, revision))
    return needs


# ---------------------------------------------------------------------------------- runtimes


def _runtime_needs(spec: CampaignSpec) -> list[Need]:
    from evallab.pins.versions import installed_runtime_version

    needs = []
    for r in spec.runtimes:
        version = getattr(r, "version", None)
        if not version:
            continue  # in-process (transformers) or an external endpoint: nothing to install
        package = getattr(r, "package", None)
        found = installed_runtime_version(r)

        def fetch(kind: str = r.kind, version: str = str(version), pkg: Any = package) -> None:
            from evallab.runtimes import get_runtime
            from evallab.runtimes.venvs import install_runtime

            recipe = get_runtime(kind).install_recipe(version, pkg)
            if recipe is not None:
                install_runtime(kind, recipe)

        needs.append(Need("runtime", r.display, f"{r.kind}=={version}", found is not None, fetch))
    return needs


# ----------------------------------------------------------------------------------- the API


def campaign_needs(spec: CampaignSpec, base_dir: Path) -> list[Need]:
    """Every model snapshot, hub dataset and runtime the campaign needs, and whether each is here.

    Looks only at local caches and folders; never at the network.
    """
    tasks_dir = spec.tasks_dir if spec.tasks_dir.is_absolute() else base_dir / spec.tasks_dir
    return [
        *_model_needs(spec, base_dir),
        *_lm_eval_datasets(spec, tasks_dir, base_dir),
        *_code_datasets(spec, base_dir),
        *_runtime_needs(spec),
    ]


def require_offline_ready(spec: CampaignSpec, base_dir: Path, campaign: Path) -> list[Need]:
    """Refuse an offline run up front when anything it needs is missing locally.

    Returns:
        The needs (all present).

    Raises:
        SpecError: one message listing everything missing and the prefetch command.
    """
    needs = campaign_needs(spec, base_dir)
    missing = [n for n in needs if not n.present]
    if missing:
        fetchable = any(n.fetch is not None for n in missing)
        local = [n for n in missing if n.fetch is None]
        fix = (
            f"on a machine with network access and the same HF_HOME and lab home, run "
            f"`evallab prefetch {campaign}`, then run offline again"
            if fetchable
            else ""
        )
        if local:
            fix += ("; " if fix else "") + "create the local folders/files listed"
        raise SpecError(
            f"{len(missing)} thing(s) this offline run needs are not on this machine: "
            + "; ".join(n.describe() for n in missing),
            value=campaign,
            fix=fix,
        )
    return needs


def prefetch(
    spec: CampaignSpec, base_dir: Path, *, on_need: Callable[[Need, str], None] | None = None
) -> list[Need]:
    """Fetch what the campaign needs and this machine lacks, at the campaign's pins.

    Args:
        spec: The campaign.
        base_dir: Folder the campaign's relative paths resolve against.
        on_need: Called with each need and what happened ("present", "fetched", "missing").

    Returns:
        The needs that are still missing (local folders the user must provide).

    Raises:
        LabError: a download or install failed (hub unreachable, unknown revision...).
    """
    left = []
    for need in campaign_needs(spec, base_dir):
        if need.present:
            outcome = "present"
        elif need.fetch is None:
            outcome = "missing"
            left.append(need)
        else:
            need.fetch()
            outcome = "fetched"
        if on_need is not None:
            on_need(need, outcome)
    return left
