"""Source-built runtime wheels, cached by the exact build flags that made them.

Some runtimes (llama-cpp-python) publish only a source distribution: pip compiles C++ for many
minutes. pip's own wheel cache is keyed by the download alone, so a CPU build would silently be
reused for a later ``-DGGML_CUDA=on`` install. The lab therefore builds such packages itself,
with pip's cache off, into a wheelhouse folder named after (package, version, build environment,
Python, machine), and installs from there: the same flags reuse the wheel in seconds, other flags
build anew. The flags travel with the installed runtime into every run's provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["build_key", "build_wheel", "compiler_version", "wheel_cache_dir"]


def wheel_cache_dir() -> Path:
    """Where source-built wheels are kept (``$EVALLAB_WHEEL_CACHE``, else the user cache)."""
    env = os.environ.get("EVALLAB_WHEEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evallab" / "wheels"


def build_key(package: str, version: str, build_env: Mapping[str, str], python: str) -> str:
    """A short digest of everything that changes the compiled wheel."""
    blob = json.dumps(
        {
            "package": package,
            "version": version,
            "env": dict(sorted(build_env.items())),
            "python": python,
            "machine": platform.machine(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compiler_version() -> str:
    """First line of ``c++ --version`` (the compiler a source build uses), or ''."""
    exe = shutil.which(os.environ.get("CXX", "c++"))
    if exe is None:
        return ""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout else ""


def build_wheel(
    python: Path,
    package: str,
    version: str,
    build_env: Mapping[str, str],
    run: Callable[[list[str], Path, Mapping[str, str]], None],
    log: Path,
) -> Path:
    """The wheelhouse folder holding ``package==version`` built with ``build_env``.

    Builds it (pip's cache off, so no wheel made with other flags is reused) when it isn't
    there yet; the folder appears under its final name only once the wheel is complete, so an
    interrupted build never leaves a half-built wheel to be picked up later.

    Args:
        python: Interpreter of the runtime virtualenv (its version names the wheel).
        package: Distribution to build.
        version: Its pinned version.
        build_env: Environment variables that steer the build (``CMAKE_ARGS``...).
        run: Runs a command with extra environment, appending its output to ``log``.
        log: The install log.
    """
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    probe = subprocess.run(
        [str(python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0 and probe.stdout.strip():
        pyver = probe.stdout.strip()
    root = wheel_cache_dir()
    house = root / f"{package}-{version}-{build_key(package, version, build_env, pyver)}"
    if any(house.glob("*.whl")):
        return house
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{house.name}.", dir=root))
    try:
        env = {"CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1), **build_env}
        run(
            [
                str(python),
                "-m",
                "pip",
                "wheel",
                "--disable-pip-version-check",
                "--no-cache-dir",
                "--no-deps",
                "--no-binary",
                package,
                "-w",
                str(staging),
                f"{package}=={version}",
            ],
            log,
            env,
        )
        (staging / "build.json").write_text(json.dumps({"env": dict(build_env)}, indent=2))
        if house.exists():  # another install finished first: keep its wheel
            shutil.rmtree(staging)
        else:
            os.replace(staging, house)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return house
