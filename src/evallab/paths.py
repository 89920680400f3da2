"""Where the lab keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "SQL_DIR", "lab_home", "runs_dir"]

#: The repository the lab is installed from (editable install); holds sql/, grafana/, tasks_custom/.
REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = REPO_ROOT / "sql"


def lab_home() -> Path:
    """The lab's state folder: ``$EVALLAB_HOME`` or ``./.evallab``."""
    return Path(os.environ.get("EVALLAB_HOME") or (Path.cwd() / ".evallab")).resolve()


def runs_dir() -> Path:
    """Where raw outputs go: ``$EVALLAB_RUNS_DIR`` or ``<lab home>/runs``."""
    env = os.environ.get("EVALLAB_RUNS_DIR")
    return Path(env).resolve() if env else lab_home() / "runs"
