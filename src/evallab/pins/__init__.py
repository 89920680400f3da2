"""Pins: everything a run's result depends on, resolved to exact values and verified.

:func:`verify_pins` runs before anything heavy (no model is fetched, no server started):

* model revisions resolve to a full commit sha (a branch/tag is resolved, recorded, and refused
  unless the campaign sets ``allow_unpinned``);
* every hub dataset an lm-eval task loads has a commit-sha ``revision`` (same rule);
* each pinned runtime version equals what its virtualenv has installed;
* harness versions and commits, GPU name/driver/CUDA and the environment fingerprint are recorded.

The parts: :mod:`.report` (the table, hub resolution), :mod:`.sources` (models and datasets),
:mod:`.versions` (runtime and harness versions, and their re-checks while a campaign runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from evallab.environment import EnvironmentInfo, collect_environment
from evallab.pins import versions
from evallab.pins.report import PinReport, PinRow, Resolver, hub_resolver
from evallab.pins.sources import dataset_pins, model_pins
from evallab.pins.versions import (
    VersionSnapshot,
    installed_runtime_version,
    recheck_versions,
    running_runtime,
    runtime_pins,
    snapshot_versions,
)
from evallab.spec import CampaignSpec

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
    rows = model_pins(spec, base_dir, resolver)
    seen: set[str] = set()
    for bench in spec.benchmarks:
        for row in dataset_pins(bench, tasks_dir, base_dir, resolver, spec.allow_unpinned):
            if row.name not in seen:
                seen.add(row.name)
                rows.append(row)
    rows.extend(runtime_pins(spec))
    harnesses = harness_versions or versions.harness_versions(b.harness for b in spec.benchmarks)
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
