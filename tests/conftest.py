"""Session fixtures: a real embedded PostgreSQL, a migrated database, the tiny model.

``second_pg`` (from :mod:`tests.pg_server`) is another, separately started PostgreSQL server,
standing for a shared server the lab does not own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evallab.runtimes.process import free_port
from evallab.store.db import connect
from evallab.store.embedded import EmbeddedPostgres
from evallab.store.migrate import migrate
from tests.pg_server import second_pg  # noqa: F401  (a fixture, used by name)

REPO = Path(__file__).resolve().parents[1]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``bubblewrap`` skip without bwrap locally, and fail in CI.

    They are the sandbox's security tests: a CI run that silently skipped them would pass while
    proving nothing about the isolation of untrusted code.
    """
    if item.get_closest_marker("bubblewrap") is None or shutil.which("bwrap") is not None:
        return
    missing = (
        "bubblewrap (bwrap) is not installed: the code sandbox tests need it; "
        "install it with `apt-get install bubblewrap` (or `make system`)"
    )
    if os.environ.get("CI"):
        pytest.fail(
            f"{missing}. CI must run the sandbox security tests, not skip them.", pytrace=False
        )
    pytest.skip(missing)


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private lab home for the whole session (models, runs, embedded database)."""
    home = tmp_path_factory.mktemp("evallab-home")
    old = {k: os.environ.get(k) for k in ("EVALLAB_HOME", "EVALLAB_RUNS_DIR")}
    os.environ["EVALLAB_HOME"] = str(home)
    os.environ.pop("EVALLAB_RUNS_DIR", None)
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A folder for an embedded server's data.

    Outside pytest's own temp root: concurrent pytest sessions reset that root to mode 0700,
    which would lock out the unprivileged server user.
    """
    home = Path(tempfile.mkdtemp(prefix="evallab-pg-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL server (the embedded one) for the test session."""
    home = Path(tempfile.mkdtemp(prefix="evallab-pg-"))
    server = EmbeddedPostgres(home, port=free_port())
    server.start()
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


async def _create_db(server: EmbeddedPostgres, name: str, *, migrated: bool) -> str:
    """A new database on the server with the lab's (empty) schema, owned by the writer role."""
    dsn = server.ensure_database(name)
    if migrated:
        conn = await connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    return dsn


@pytest.fixture(scope="session")
def pg_dsn(pg_server: EmbeddedPostgres, lab_home: Path) -> Iterator[str]:
    """DSN of a migrated database, shared by the session; also exported as EVALLAB_DATABASE_URL."""
    dsn = asyncio.run(_create_db(pg_server, "evallab_test", migrated=True))
    old = os.environ.get("EVALLAB_DATABASE_URL")
    os.environ["EVALLAB_DATABASE_URL"] = dsn
    yield dsn
    if old is None:
        os.environ.pop("EVALLAB_DATABASE_URL", None)
    else:
        os.environ["EVALLAB_DATABASE_URL"] = old


@pytest.fixture(scope="session")
def make_database(pg_server: EmbeddedPostgres) -> Callable[[str], str]:
    """Create a migrated database named as given on the session server; returns its DSN."""
    return lambda name: asyncio.run(_create_db(pg_server, name, migrated=True))


@pytest.fixture
def fresh_dsn(pg_server: EmbeddedPostgres) -> str:
    """DSN of a brand-new empty database (no migrations applied)."""
    return asyncio.run(_create_db(pg_server, f"t_{uuid.uuid4().hex[:12]}", migrated=False))


@pytest.fixture
def migrated_dsn(pg_server: EmbeddedPostgres) -> str:
    """DSN of a brand-new database with every migration applied (isolated from other tests)."""
    return asyncio.run(_create_db(pg_server, f"t_{uuid.uuid4().hex[:12]}", migrated=True))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Llama (seed 0), built once per session."""
    from evallab.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)
