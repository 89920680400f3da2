"""Runtime and harness versions: checked against the campaign's pins, then watched while it runs.

Campaigns run for days, so :func:`snapshot_versions` records the driver, runtime and harness
versions at the start and :func:`recheck_versions` compares them before every benchmark: a
change mid-campaign stops it, naming both values.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evallab.errors import EnvironmentChangedError, LabError
from evallab.pins.report import PinRow
from evallab.spec import CampaignSpec, RuntimeSpec
from evallab.telemetry.gpu import GpuIdentity, GpuIdentitySource
from evallab.telemetry.nvml import open_nvml

if TYPE_CHECKING:
    from evallab.runtimes.base import RuntimeSession

__all__ = [
    "VersionSnapshot",
    "harness_versions",
    "installed_runtime_version",
    "recheck_versions",
    "running_runtime",
    "runtime_pins",
    "snapshot_versions",
]


def installed_runtime_version(spec: RuntimeSpec) -> tuple[str, str] | None:
    """(package, version) installed in the runtime's virtualenv, None if it has no venv.

    Reads the venv's package metadata directly (no interpreter is started).
    """
    version = getattr(spec, "version", None)
    if not version:
        return None
    from evallab.runtimes import get_runtime
    from evallab.runtimes.venvs import find_installed

    # The distribution is the runtime's to name (llamacpp installs llama-cpp-python).
    recipe = get_runtime(spec.kind).install_recipe(str(version), getattr(spec, "package", None))
    package = recipe.package if recipe is not None else spec.kind
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


def runtime_pins(spec: CampaignSpec) -> list[PinRow]:
    """Pin rows for the campaign's runtimes: pinned versions against their virtualenvs."""
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


def harness_versions(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Harness name -> (version, commit) as installed now."""
    from evallab.harnesses import get_harness

    return {n: tuple(get_harness(n).version()) for n in sorted(set(names))}  # type: ignore[misc]


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
        harnesses=harness_versions(harness_names),
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
