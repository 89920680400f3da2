"""The lab installed as a wheel, outside the checkout: it migrates and runs the demo.

Everything the library reads at runtime (migrations, views, report templates) must ship in the
package. This builds the wheel, installs it into a fresh virtualenv in a temporary folder, and
runs it from there as a user would: ``evallab db migrate``, the demo campaign (its campaign file
and ``tasks_custom/`` copied beside it, as a user's own folder would hold them) and
``evallab results``, whose scores must equal those of the checkout install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, evallab

pytestmark = pytest.mark.slow

_PIP = [sys.executable, "-m", "pip"]


def _run(
    cmd: list[str], *, cwd: Path, env: Mapping[str, str], timeout: int = 1200
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _build_wheel(tmp: Path) -> Path:
    # Build from a copy of the sources so the checkout gets no build/ or egg-info folders; no
    # build isolation, so the build uses the installed setuptools and needs no network.
    src = tmp / "src-copy"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp / "dist"
    build = _run(
        [*_PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        cwd=tmp,
        env=os.environ,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = out.glob("evallab-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A virtualenv with only the wheel installed, borrowing the test venv's dependencies."""
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=os.environ)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = _run(
        [*_PIP, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp,
        env=os.environ,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp,
            env=os.environ,
        ).stdout.strip()
    )
    # A directory listed in a .pth file is added to sys.path without processing that directory's
    # own .pth files, so the checkout's editable install (a .pth there) stays out.
    (site / "evallab-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _scores(stdout: str) -> list[tuple[Any, ...]]:
    rows = json.loads(stdout)
    return sorted(
        (r["model"], r["benchmark"], r["task"], r["metric"], r["filter"], r["value"], r["n"])
        for r in rows
        if r["status"] == "succeeded"
    )


def test_wheel_install_migrates_and_runs_the_demo(
    tmp_path: Path, fresh_dsn: str, make_database: Callable[[str], str]
) -> None:
    wheel = _build_wheel(tmp_path)
    venv = _fresh_venv(tmp_path, wheel)

    # The user's folder: a campaign file and their custom tasks, nothing else of the checkout.
    user = tmp_path / "lab"
    (user / "deployments").mkdir(parents=True)
    shutil.copy(REPO / "deployments" / "demo.yaml", user / "deployments")
    shutil.copytree(REPO / "tasks_custom", user / "tasks_custom")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "EVALLAB_RUNS_DIR"}} | {
        "EVALLAB_HOME": str(tmp_path / "wheel-home"),
        "EVALLAB_DATABASE_URL": fresh_dsn,
        "TQDM_DISABLE": "1",
        "COLUMNS": "200",
    }
    bin_ = venv / "bin"

    where = _run(
        [str(bin_ / "python"), "-c", "import evallab; print(evallab.__file__)"], cwd=user, env=env
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    migrate = _run([str(bin_ / "evallab"), "db", "migrate"], cwd=user, env=env)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "applied 0001_init.sql" in migrate.stdout
    assert migrate.stdout.count("applied ") == len(
        list((REPO / "src" / "evallab" / "store" / "sql" / "migrations").glob("*.sql"))
    )
    again = _run([str(bin_ / "evallab"), "db", "migrate"], cwd=user, env=env)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr

    run = _run([str(bin_ / "evallab"), "run", "deployments/demo.yaml"], cwd=user, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Campaign demo — succeeded" in run.stdout
    wheel_results = _run(
        [str(bin_ / "evallab"), "results", "--campaign", "demo", "--json"], cwd=user, env=env
    )
    assert wheel_results.returncode == 0, wheel_results.stderr
    wheel_scores = _scores(wheel_results.stdout)
    assert {s[2] for s in wheel_scores} >= {"demo_mc", "demo_gen"}

    # The same demo from the checkout install, into a database and home of its own.
    checkout_dsn = make_database(f"wheel_ref_{uuid.uuid4().hex[:12]}")
    checkout_env = {"EVALLAB_HOME": str(tmp_path / "checkout-home")}
    ref = evallab(
        ["run", "deployments/demo.yaml"], dsn=checkout_dsn, env=checkout_env, timeout=1200
    )
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    ref_results = evallab(
        ["results", "--campaign", "demo", "--json"], dsn=checkout_dsn, env=checkout_env
    )
    assert ref_results.returncode == 0, ref_results.stderr
    assert wheel_scores == _scores(ref_results.stdout)
