"""Lab processes share the embedded PostgreSQL: none stops it under another.

Each client is a real separate process that holds ``database()`` open and obeys commands on its
stdin, against a real embedded server in a private lab home on a free port.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from evallab.runtimes.process import free_port
from evallab.store.db import database
from evallab.store.embedded import EmbeddedPostgres

# Enters database(), says "ready", then for each "query" line prints the value of SELECT 1 run
# through the yielded DSN; any other line (or end of input) leaves database() and says "done".
CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from evallab.store.db import connect, database

    async def select_one(dsn):
        conn = await connect(dsn)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    with database() as dsn:
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() != "query":
                break
            print("value", asyncio.run(select_one(dsn)), flush=True)
    print("done", flush=True)
    """
)

# Generous: only a broken lab makes a client wait this long, and then the test says so.
_WAIT_S = 180


class Client:
    """A lab process holding ``database()`` open."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )

    def _line(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], _WAIT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"client {self.proc.pid} said nothing (rc {self.proc.returncode}): {err}")
        return line.strip()

    def wait_ready(self) -> Client:
        assert self._line() == "ready"
        return self

    def query(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("query\n")
        self.proc.stdin.flush()
        return self._line()

    def leave(self) -> None:
        out, err = self.proc.communicate("leave\n", timeout=_WAIT_S)
        assert self.proc.returncode == 0, err
        assert out.split() == ["done"], (out, err)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=_WAIT_S)
        assert self.proc.returncode == -signal.SIGKILL


@dataclass
class Lab:
    """A private lab home and port, and the processes started against them."""

    root: Path
    port: int
    clients: list[Client] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "lab"

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"EVALLAB_DATABASE_URL", "EVALLAB_CONFIG", "EVALLAB_RUNS_DIR"}
        }
        env["EVALLAB_HOME"] = str(self.home)
        env["EVALLAB_PG_PORT"] = str(self.port)
        return env

    def client(self) -> Client:
        c = Client(self.env, self.root)
        self.clients.append(c)
        return c.wait_ready()

    def evallab(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "evallab.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=_WAIT_S,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def server(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.home, port=self.port)

    def running(self) -> bool:
        return self.server().is_running()

    def select_one(self) -> int:
        async def go() -> int:
            conn = await asyncpg.connect(self.server().dsn)
            try:
                return int(await conn.fetchval("SELECT 1"))
            finally:
                await conn.close()

        return asyncio.run(go())

    def leases(self) -> list[str]:
        return sorted(p.name for p in self.server().lease_dir.glob("*.lease"))


@pytest.fixture
def lab(pg_home: Path) -> Iterator[Lab]:
    lab = Lab(pg_home, free_port())
    yield lab
    for c in lab.clients:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.communicate()
    lab.server().stop(force=True)


def test_a_client_that_ends_leaves_the_server_to_the_one_that_started_it(lab: Lab) -> None:
    assert not lab.running()
    a = lab.client()  # starts the server
    assert lab.running()
    lab.client().leave()
    assert lab.running()
    assert a.query() == "value 1"
    a.leave()
    assert not lab.running()
    assert lab.leases() == []


def test_the_starter_ending_first_leaves_the_server_running_for_the_others(lab: Lab) -> None:
    a = lab.client()  # e.g. a model poller: starts the server, then ends
    b = lab.client()  # e.g. a campaign, still running
    a.leave()
    assert lab.running()
    assert b.query() == "value 1"
    b.leave()
    assert not lab.running()


def test_a_killed_client_does_not_keep_the_server_up(lab: Lab) -> None:
    a = lab.client()
    a.kill()
    # Nobody was left to stop it, and the dead client's lease file is still there...
    assert lab.running()
    assert len(lab.leases()) == 1
    # ...but it no longer counts: the next client to end is the last live one, and stops it.
    b = lab.client()
    assert b.query() == "value 1"
    b.leave()
    assert not lab.running()
    assert lab.leases() == []


def test_clients_starting_at_once_share_one_server(lab: Lab) -> None:
    clients = [Client(lab.env, lab.root) for _ in range(4)]
    lab.clients.extend(clients)
    for c in clients:
        c.wait_ready()
    assert [c.query() for c in clients] == ["value 1"] * 4
    for c in clients[:-1]:
        c.leave()
        assert lab.running()
    clients[-1].leave()
    assert not lab.running()


def test_db_start_keeps_the_server_up_until_db_stop(lab: Lab) -> None:
    lab.evallab("db", "start")
    assert lab.running()
    lab.client().leave()
    assert lab.running()
    assert lab.select_one() == 1
    assert "stopped" in lab.evallab("db", "stop").stdout
    assert not lab.running()
    assert lab.leases() == []


def test_db_stop_leaves_the_server_to_clients_still_using_it(lab: Lab) -> None:
    lab.evallab("db", "start")
    a = lab.client()
    out = lab.evallab("db", "stop").stdout
    assert "keeps running for 1 lab process" in out
    assert f"pid {a.proc.pid}" in out
    assert lab.running()
    assert a.query() == "value 1"
    a.leave()
    assert not lab.running()


def test_db_stop_force_stops_it_under_clients(lab: Lab) -> None:
    a = lab.client()
    assert "stopped" in lab.evallab("db", "stop", "--force").stdout
    assert not lab.running()
    a.leave()  # its lease ends cleanly with no server to stop
    assert not lab.running()
    assert lab.leases() == []


def test_nested_use_in_one_process_keeps_the_server(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("EVALLAB_DATABASE_URL", "EVALLAB_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EVALLAB_HOME", str(lab.home))
    monkeypatch.setenv("EVALLAB_PG_PORT", str(lab.port))
    monkeypatch.chdir(lab.root)
    with database() as dsn:
        with database() as inner:
            assert inner == dsn
        # Leaving the inner block must not stop the server the outer one still uses.
        assert lab.running()
        assert lab.select_one() == 1
    assert not lab.running()
