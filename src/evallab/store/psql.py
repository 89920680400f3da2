"""Open ``psql`` on the lab's database without a password on any command line.

The password goes to a temporary ``PGPASSFILE`` (mode 0600, removed afterwards); ``psql`` gets
host, port, user and database as arguments, and the lab's schema as its ``search_path``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from evallab.errors import DatabaseError
from evallab.store.pg_binaries import pg_bin_dir

__all__ = ["psql_invocation", "run_psql"]


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def _psql_program() -> str:
    try:
        return str(pg_bin_dir() / "psql")
    except DatabaseError:
        found = shutil.which("psql")
        if found is None:
            raise
        return found


@contextlib.contextmanager
def psql_invocation(dsn: str, schema: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The ``psql`` command line and environment for ``dsn``, valid inside the block.

    Yields:
        The arguments (no password among them) and the environment (``PGPASSFILE``,
        ``PGOPTIONS`` with the schema's search_path).
    """
    parts = urlsplit(dsn)
    host, port = parts.hostname or "127.0.0.1", str(parts.port or 5432)
    user, database = unquote(parts.username or ""), unquote(parts.path.lstrip("/"))
    args = [_psql_program(), "-X", "-h", host, "-p", port, "-U", user, "-d", database]
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    env["PGOPTIONS"] = f"-c search_path={schema}"
    with tempfile.TemporaryDirectory(prefix="evallab-psql-") as tmp:
        passfile = Path(tmp) / "pgpass"
        if parts.password:
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            line = ":".join(_escape(f) for f in (host, port, database, user))
            with os.fdopen(fd, "w") as f:
                f.write(f"{line}:{_escape(unquote(parts.password))}\n")
            env["PGPASSFILE"] = str(passfile)
        yield args, env


def run_psql(dsn: str, schema: str, extra: list[str]) -> int:
    """Run ``psql`` on ``dsn`` with ``extra`` arguments; its exit status."""
    with psql_invocation(dsn, schema) as (args, env):
        return subprocess.run([*args, *extra], env=env, check=False).returncode
