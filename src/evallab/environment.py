"""What machine and software a run executes on: the environment half of a run's provenance.

The fingerprint is the sha256 of the resolved package set (every installed distribution as
``name==version``, names normalised, sorted). Two runs with equal fingerprints ran on the same
Python packages; a change of any package, however small, changes it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import re
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evallab import __version__
from evallab.paths import source_checkout
from evallab.telemetry.devices import visible_gpus
from evallab.telemetry.gpu import GpuIdentity, GpuIdentitySource, combined_identity
from evallab.telemetry.nvml import open_nvml

__all__ = [
    "EnvironmentInfo",
    "collect_environment",
    "env_fingerprint",
    "installed_packages",
    "lab_commit",
]

_NORMALISE = re.compile(r"[-_.]+")


@dataclass(frozen=True)
class EnvironmentInfo:
    """The environment columns recorded on every run."""

    fingerprint: str
    hostname: str
    python_version: str
    torch_version: str
    lab_version: str
    lab_commit: str
    gpu_name: str
    gpu_driver: str
    cuda_version: str
    packages: tuple[str, ...] = ()


def installed_packages() -> tuple[str, ...]:
    """Every installed distribution as ``name==version`` (normalised names, sorted, unique)."""
    seen: set[str] = set()
    for dist in md.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            # A half-removed distribution leaves metadata without a name; it isn't installed.
            continue
        seen.add(f"{_NORMALISE.sub('-', name).lower()}=={dist.version}")
    return tuple(sorted(seen))


def env_fingerprint(packages: tuple[str, ...] | None = None) -> str:
    """sha256 over the sorted ``name==version`` lines of the resolved package set."""
    pkgs = installed_packages() if packages is None else tuple(sorted(set(packages)))
    return hashlib.sha256("\n".join(pkgs).encode()).hexdigest()


def lab_commit(repo: Path | None = None) -> str:
    """The lab's git commit, with ``-dirty`` when tracked or untracked files differ from it.

    Args:
        repo: The checkout to ask; default: the one the package runs from.

    Returns ``"unknown"`` when the lab isn't installed from a git checkout (a wheel install).
    """
    repo = repo or source_checkout()
    if repo is None:
        return "unknown"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    commit = head.stdout.strip()
    status = subprocess.run(
        ["git", "status", "--porcelain"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # An unreadable status is reported as dirty: claiming a clean tree we couldn't check would lie.
    if status.returncode != 0 or status.stdout.strip():
        commit += "-dirty"
    return commit


def _torch_version() -> str:
    # The installed distribution's version, without importing torch (seconds of start-up).
    try:
        return md.version("torch")
    except md.PackageNotFoundError:
        return ""


def _used_gpus_identity(source: GpuIdentitySource, indices: Sequence[int] | None) -> GpuIdentity:
    return combined_identity(source, visible_gpus(source) if indices is None else indices)


def _default_gpu_identity() -> GpuIdentity:
    backend = open_nvml()
    if backend is None:
        return GpuIdentity()
    try:
        return _used_gpus_identity(backend, None)
    finally:
        backend.close()


def collect_environment(
    gpu: GpuIdentitySource | None = None, gpu_indices: Sequence[int] | None = None
) -> EnvironmentInfo:
    """Collect the environment a run executes in.

    Args:
        gpu: Where GPU identity comes from; the real NVML when None (empty on CPU machines).
        gpu_indices: NVML indices of the GPUs the run uses (default: those this process sees,
            from ``CUDA_VISIBLE_DEVICES``).

    Returns:
        The fingerprint, host, Python/torch versions, lab version and commit, and the identity
        of every GPU the run uses (names joined with ``" + "``, see
        :func:`~evallab.telemetry.gpu.combined_identity`).
    """
    packages = installed_packages()
    ident = _used_gpus_identity(gpu, gpu_indices) if gpu is not None else _default_gpu_identity()
    return EnvironmentInfo(
        fingerprint=env_fingerprint(packages),
        hostname=socket.gethostname(),
        python_version=platform.python_version(),
        torch_version=_torch_version(),
        lab_version=__version__,
        lab_commit=lab_commit(),
        gpu_name=ident.name,
        gpu_driver=ident.driver,
        cuda_version=ident.cuda_version,
        packages=packages,
    )
