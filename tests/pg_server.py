"""A second, separately started PostgreSQL server: a stand-in for a shared server.

The lab does not own it: its superuser (``dba``) is the only role at first, and tests create
the roles, databases and foreign objects a shared server would hold. It uses Debian's
PostgreSQL 15 when installed (a different major version from the embedded one), else the
bundled binaries; it runs as an unprivileged uid when the tests run as root (PostgreSQL refuses
to run as root), with SCRAM password logins on loopback TCP only.

Use the ``second_pg`` fixture (session-wide; give each test its own database with
:meth:`PgServer.create_database`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from evallab.runtimes.process import free_port
from evallab.store.pg_binaries import pg_bin_dir

__all__ = ["PgServer", "load_earlier_layout", "second_pg"]

_DEBIAN_PG = Path("/usr/lib/postgresql/15/bin")
_NOBODY = 65534


def _bin_dir() -> Path:
    return _DEBIAN_PG if (_DEBIAN_PG / "initdb").exists() else pg_bin_dir()


@dataclass
class PgServer:
    """A PostgreSQL cluster in ``root``, listening on 127.0.0.1:``port``."""

    root: Path
    port: int = field(default_factory=free_port)
    bin_dir: Path = field(default_factory=_bin_dir)
    admin_user: str = "dba"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str) -> None:
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            kwargs = {"user": _NOBODY, "group": _NOBODY, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        proc = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
        assert proc.returncode == 0, f"{args[0]} failed: {proc.stderr or proc.stdout}"

    def start(self) -> PgServer:
        """initdb (SCRAM, a generated superuser password) and start the server."""
        pwfile = self.root / "pw"
        pwfile.write_text(self.admin_password + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            os.chown(self.root, _NOBODY, _NOBODY)
            os.chown(pwfile, _NOBODY, _NOBODY)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.admin_user,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            )
        finally:
            pwfile.unlink()
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c max_connections=30 -c shared_buffers=32MB"
        )
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", log, "-o", opts, "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def dsn(self, database: str = "postgres", user: str | None = None, password: str = "") -> str:
        """DSN of ``database`` as ``user`` (default: the superuser, with its password)."""
        if user is None:
            user, password = self.admin_user, self.admin_password
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def sql(self, database: str, *statements: str) -> None:
        """Run ``statements`` on ``database`` as the superuser."""

        async def go() -> None:
            conn = await asyncpg.connect(self.dsn(database))
            try:
                for s in statements:
                    await conn.execute(s)
            finally:
                await conn.close()

        asyncio.run(go())

    def create_database(self, name: str | None = None) -> str:
        """A new database (owned by the superuser); returns its name."""
        name = name or f"shared_{uuid.uuid4().hex[:10]}"
        self.sql("postgres", f'CREATE DATABASE "{name}"')
        return name

    def create_role(self, name: str | None = None, *options: str) -> tuple[str, str]:
        """A new login role with a generated password; returns (name, password)."""
        name = name or f"app_{uuid.uuid4().hex[:10]}"
        password = secrets.token_urlsafe(16)
        extra = " ".join(options)
        self.sql("postgres", f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}' {extra}")
        return name, password


@pytest.fixture(scope="session")
def second_pg() -> Iterator[PgServer]:
    """A second PostgreSQL server for the session, started separately from the lab's."""
    # Outside pytest's temp root: concurrent sessions reset that to 0700, locking out "nobody".
    root = Path(tempfile.mkdtemp(prefix="evallab-pg2-"))
    server = PgServer(root).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def load_earlier_layout(conn: asyncpg.Connection) -> None:
    """Create the lab's tables as versions before the lab's own schema did: all in ``public``.

    The same SQL those versions ran: the bookkeeping table, every migration file and every view
    file, unqualified, with ``public`` as the search_path.
    """
    from evallab.store.sql_files import load_migrations, view_files

    await conn.execute("SET search_path = public")
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            sha256 text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    for m in load_migrations():
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                m.sha256,
            )
    for path in view_files():
        await conn.execute(path.read_text())
