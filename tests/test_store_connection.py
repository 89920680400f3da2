"""One connection per command: a campaign and its benchmarks share the store's connection, and a
store survives the server going away (the failed call is a transient DatabaseError; the next
call reconnects)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from evallab.errors import DatabaseError
from evallab.runtimes.process import free_port
from evallab.store import Store
from evallab.store.embedded import EmbeddedPostgres
from tests.helpers import campaign_yaml, evallab, fetch

BENCHMARKS = """  - {name: conn-mc, tasks: [demo_mc], limit: 3}
  - {name: conn-gen, tasks: [demo_gen], limit: 3}
  - {name: conn-mc0, tasks: [demo_mc], limit: 2, num_fewshot: 0}
"""


def _sessions(dsn: str) -> int:
    rows = fetch(dsn, "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    return int(rows[0]["sessions"])


def sessions_opened_by(dsn: str, action: object) -> int:
    """Connections to ``dsn``'s database that ``action()`` opened, from the server's counters.

    Each read of the counter is itself a session, counted once it ends; reads go on until only
    the previous read was added (every other session has ended and been counted).
    """
    before = _sessions(dsn)
    action()  # type: ignore[operator]
    reads, last = 1, before
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = _sessions(dsn)
        reads += 1
        if now - last == 1:
            return now - before - (reads - 1)
        last = now
        time.sleep(0.5)
    pytest.fail("the server's session counter did not settle")


@pytest.mark.slow
def test_a_campaign_of_three_benchmarks_opens_one_connection(
    migrated_dsn: str, lab_home: Path, tmp_path: Path
) -> None:
    path = campaign_yaml(tmp_path, "one-connection", BENCHMARKS)
    out: list[str] = []

    def run() -> None:
        proc = evallab(["run", str(path)], dsn=migrated_dsn)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out.append(proc.stdout)

    opened = sessions_opened_by(migrated_dsn, run)
    stored = fetch(migrated_dsn, "SELECT benchmark, status FROM runs ORDER BY benchmark")
    assert [tuple(r) for r in stored] == [
        ("conn-gen", "succeeded"),
        ("conn-mc", "succeeded"),
        ("conn-mc0", "succeeded"),
    ]
    assert opened == 1, f"`evallab run` opened {opened} connections for 3 benchmarks"


def test_the_store_reconnects_after_the_server_went_away(pg_home: Path) -> None:
    server = EmbeddedPostgres(pg_home, port=free_port())
    dsn = server.start()
    try:
        with Store(dsn) as store:
            assert [m.version for m in store.migrate()][:1] == [1]
            assert store.recent_results() == []
            assert store.connections_opened == 1
            server.stop(force=True)
            with pytest.raises(DatabaseError) as lost:
                store.recent_results()
            assert "lost the connection to the results database" in str(lost.value)
            server.start()
            # The next call opens a fresh connection; nothing else is needed from the caller.
            assert all(s.applied for s in store.migration_status())
            assert store.connections_opened == 2
    finally:
        server.stop(force=True)
