"""Pin rows for what a campaign evaluates: its models and the datasets its tasks load."""

from __future__ import annotations

import re
from pathlib import Path

from evallab.harnesses.lm_eval.tasks import task_catalog
from evallab.models import sha256_file
from evallab.pins.report import PinRow, PinStatus, Resolver, resolve_ref
from evallab.spec import (
    BenchmarkSpec,
    CampaignSpec,
    HubModelSpec,
    LocalModelSpec,
    PackageModelSpec,
)

__all__ = ["dataset_pins", "model_pins"]

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
# `datasets` builders that read local files: such tasks are pinned by the tasks' content hash.
_LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas", "generator"})


def model_pins(spec: CampaignSpec, base_dir: Path, resolver: Resolver) -> list[PinRow]:
    """Pin rows for the campaign's models (hub revisions resolved, local folders by content)."""
    rows = []
    for m in spec.models:
        if isinstance(m, HubModelSpec):
            if m.is_pinned:
                rows.append(PinRow("model", m.name, m.revision, m.revision, "ok", m.repo))
                continue
            sha, status, detail = resolve_ref(
                resolver, "model", m.repo, m.revision, spec.allow_unpinned
            )
            rows.append(PinRow("model", m.name, m.revision, sha, status, f"{m.repo}: {detail}"))
        elif isinstance(m, LocalModelSpec):
            folder = m.path if m.path.is_absolute() else base_dir / m.path
            rows.append(
                PinRow("model", m.name, str(m.path), str(folder), "ok", "pinned by content sha256")
            )
        elif isinstance(m, PackageModelSpec):
            pin = f"{m.package}=={m.version}"
            rows.append(
                PinRow(
                    "model",
                    m.name,
                    f"{pin}:{m.file}",
                    f"sha256:{m.sha256[:12]}",
                    "ok",
                    "packaged GGUF, pinned by package version and file sha256",
                )
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
    catalog = task_catalog([tasks_dir])
    for task in bench.tasks:
        for leaf in catalog.leaves(task):
            cfg = leaf.config
            path = str(cfg.get("dataset_path") or "")
            kwargs = cfg.get("dataset_kwargs") or {}
            if not path or path in _LOCAL_BUILDERS or Path(path).exists() or "data_files" in kwargs:
                rows.append(
                    PinRow(
                        "dataset",
                        leaf.name,
                        path or "(none)",
                        "local",
                        "ok",
                        "pinned by the tasks' content hash",
                    )
                )
                continue
            revision = str(kwargs.get("revision") or "")
            if _FULL_SHA.match(revision):
                rows.append(PinRow("dataset", leaf.name, revision, revision, "ok", path))
                continue
            sha, status, detail = resolve_ref(
                resolver, "dataset", path, revision or "main", allow_unpinned
            )
            note = "no revision in the task" if not revision else detail
            rows.append(
                PinRow("dataset", leaf.name, revision or "(none)", sha, status, f"{path}: {note}")
            )
    return rows
