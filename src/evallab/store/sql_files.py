"""The lab's SQL files (package data) and the objects they create.

``sql/migrations/NNNN_name.sql`` are the forward-only migrations; ``sql/views/*.sql`` are the
views re-created after every migrate. :func:`lab_objects` reads the names of the tables, views
and functions those files create, so the store can tell the lab's objects from anything else a
schema holds — for any migration file added later, without a list to keep up to date.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from evallab.errors import MigrationError

__all__ = [
    "BOOKKEEPING_TABLE",
    "SQL_DIR",
    "LabObjects",
    "Migration",
    "lab_objects",
    "load_migrations",
    "view_files",
]

#: The package's SQL: ``migrations/`` and ``views/``. Package data next to this module (declared
#: in pyproject.toml), never the checkout, so every install finds the same files.
SQL_DIR = Path(str(resources.files("evallab.store").joinpath("sql")))

#: The table recording which migrations a database applied.
BOOKKEEPING_TABLE = "schema_migrations"

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENT = r'"?([A-Za-z_][A-Za-z0-9_$]*)"?'
_RELATION = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:UNLOGGED\s+|TEMP(?:ORARY)?\s+)?"
    r"(TABLE|VIEW|MATERIALIZED\s+VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _IDENT,
    re.IGNORECASE,
)
_RENAMED = re.compile(
    r"\bALTER\s+(TABLE|VIEW|MATERIALIZED\s+VIEW)\s+(?:IF\s+EXISTS\s+)?"
    + _IDENT
    + r"\s+RENAME\s+TO\s+"
    + _IDENT,
    re.IGNORECASE,
)
_FUNCTION = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\s+" + _IDENT, re.IGNORECASE
)
_COMMENT = re.compile(r"--[^\n]*")


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path
    sha256: str

    @property
    def sql(self) -> str:
        return self.path.read_text()


@dataclass(frozen=True)
class LabObjects:
    """Names of what the lab's SQL files create (unqualified, lower case).

    Attributes:
        relations: Tables and views, the bookkeeping table included.
        functions: Functions and procedures (e.g. trigger functions).
    """

    relations: frozenset[str]
    functions: frozenset[str]


def load_migrations(folder: Path | None = None) -> list[Migration]:
    """Read and validate the migration files in ``folder`` (default ``sql/migrations``)."""
    folder = folder or SQL_DIR / "migrations"
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(
                "migration file name must look like NNNN_name.sql",
                value=path,
                fix="rename it, e.g. 0003_add_tags.sql",
            )
        found.append(
            Migration(
                int(m.group(1)), m.group(2), path, hashlib.sha256(path.read_bytes()).hexdigest()
            )
        )
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(
            "two migration files share a version number",
            value=sorted(v for v in versions if versions.count(v) > 1),
            fix="renumber the newer one",
        )
    return found


def view_files(folder: Path | None = None) -> list[Path]:
    """The view files in ``folder`` (default ``sql/views``), in the order they run."""
    folder = folder or SQL_DIR / "views"
    return sorted(folder.glob("*.sql")) if folder.is_dir() else []


def lab_objects(folder: Path | None = None, views_folder: Path | None = None) -> LabObjects:
    """The tables, views and functions the lab's migrations and views create.

    Names a later migration renames or drops stay in the set: a database part-way through the
    history holds them.
    """
    relations = {BOOKKEEPING_TABLE}
    functions: set[str] = set()
    paths = [m.path for m in load_migrations(folder)] + view_files(views_folder)
    for path in paths:
        sql = _COMMENT.sub("", path.read_text())
        relations.update(m.group(2).lower() for m in _RELATION.finditer(sql))
        relations.update(m.group(3).lower() for m in _RENAMED.finditer(sql))
        functions.update(m.group(1).lower() for m in _FUNCTION.finditer(sql))
    return LabObjects(frozenset(relations), frozenset(functions))
