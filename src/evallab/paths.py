"""Where the lab keeps things on disk.

What the library reads at runtime (SQL, report templates) ships inside the package. What belongs
to the user's checkout (campaign files, ``tasks_custom/``, ``grafana/``, the Prefect ``flows/``)
is found relative to the working directory or the campaign file, never the installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["lab_home", "runs_dir", "source_checkout"]


def source_checkout() -> Path | None:
    """The lab's source checkout when the package runs from one (an editable install), else None.

    A wheel install lives in ``site-packages``, whose parents are no checkout of the lab (they may
    even be some other project's git repository), so only a folder that holds the lab's own
    ``pyproject.toml`` beside ``src/evallab`` counts.
    """
    package = Path(__file__).resolve().parent
    root = package.parents[1]
    if (root / "pyproject.toml").is_file() and (root / "src" / "evallab") == package:
        return root
    return None


def lab_home() -> Path:
    """The lab's state folder: ``$EVALLAB_HOME`` or ``./.evallab``."""
    return Path(os.environ.get("EVALLAB_HOME") or (Path.cwd() / ".evallab")).resolve()


def runs_dir() -> Path:
    """Where raw outputs go: ``$EVALLAB_RUNS_DIR`` or ``<lab home>/runs``."""
    env = os.environ.get("EVALLAB_RUNS_DIR")
    return Path(env).resolve() if env else lab_home() / "runs"
