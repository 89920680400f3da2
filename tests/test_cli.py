"""The command line's shape: every group registered, a light start-up, clear orchestration errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from evallab.cli import app
from tests.helpers import REPO

SRC = str(REPO / "src")


def test_every_command_and_group_is_registered() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in (
        "run",
        "results",
        "ingest",
        "regressions",
        "compare",
        "diff",
        "matrix",
        "submit",
        "backup",
        "restore",
        "gc",
        "db",
        "runtime",
        "pins",
        "canary",
        "report",
        "prefect",
        "webhook",
    ):
        assert f" {name} " in result.output, name


def test_starting_the_cli_imports_no_heavy_module(tmp_path: Path) -> None:
    # `evallab --help` must not pay for scipy, torch, lm-eval, Prefect or the database layer.
    code = (
        "import sys, evallab.cli\n"
        "heavy = ('scipy', 'torch', 'lm_eval', 'prefect', 'pyarrow', 'asyncpg', "
        "'evallab.compare', 'evallab.store', 'evallab.campaign')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_orchestration_without_a_checkout_is_a_clear_error(tmp_path: Path) -> None:
    # Outside a checkout (no flows/ next to the library) the orchestration commands refuse with
    # an OrchestrationError instead of an ImportError, and the repository root never goes on
    # sys.path.
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import evallab.cli.prefect as p\n"
        "from evallab.errors import OrchestrationError\n"
        "p.source_checkout = lambda: None  # as a wheel install: no checkout of its own\n"
        "try:\n"
        "    p._orchestration('flows.submit')\n"
        "except OrchestrationError as exc:\n"
        "    print(exc.message)\n"
        f"assert {str(REPO)!r} not in sys.path\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "flows/ folder is missing" in out.stdout
