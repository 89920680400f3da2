"""The package boundaries a contributor relies on (docs/architecture.md), checked on the source.

* Only ``evallab.store`` talks to PostgreSQL: no other module imports asyncpg or holds SQL.
* No module grows past :data:`MAX_LINES` lines: split it into a package of smaller ones.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "evallab"
STORE = PACKAGE / "store"
# The library and the Prefect code that ships beside it.
SOURCES = sorted(
    [*PACKAGE.rglob("*.py"), *(REPO / "flows").glob("*.py"), *(REPO / "blocks").glob("*.py")]
)
MAX_LINES = 400

# A statement, not a word in prose: a keyword followed by what that statement needs.
_SQL = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(TABLE|VIEW|INDEX|SCHEMA|ROLE)|ALTER\s+TABLE|DROP\s+(TABLE|VIEW))",
)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _outside_store() -> list[Path]:
    return [p for p in SOURCES if STORE not in p.parents]


def test_the_scan_sees_the_code() -> None:
    # Guards the guards: an empty file list or a regex that matches nothing would pass anything.
    assert len(SOURCES) > 60
    assert any(_SQL.search(p.read_text()) for p in STORE.rglob("*.py"))
    assert _SQL.search("SELECT run_id FROM runs") and not _SQL.search("select a model")


def test_no_module_outside_the_store_imports_asyncpg() -> None:
    offenders = []
    for path in _outside_store():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "asyncpg" or n.startswith("asyncpg.") for n in names):
                offenders.append(f"{_rel(path)}:{node.lineno}")
    assert offenders == [], "asyncpg belongs to evallab.store; add a Store method instead"


def test_no_sql_outside_the_store() -> None:
    offenders = []
    for path in _outside_store():
        for node in ast.walk(ast.parse(path.read_text())):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and _SQL.search(node.value):
                offenders.append(f"{_rel(path)}:{node.lineno}: {node.value.strip()[:60]!r}")
    assert offenders == [], "SQL belongs to evallab.store; add a Store method instead"


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{_rel(path)} has {lines} lines (limit {MAX_LINES}): split it into a package of "
        "modules that each own one concern"
    )
