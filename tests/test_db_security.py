"""The embedded PostgreSQL is private: SCRAM passwords kept 0600, and a least-privilege role.

Against real servers: the session's embedded server, and a cluster made the way earlier versions
made theirs (``initdb --auth=trust``, the lab's tables in ``public``), upgraded on start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from evallab.runtimes.process import free_port
from evallab.store.db import connect
from evallab.store.embedded import WRITER_ROLE, EmbeddedPostgres, pg_bin_dir
from evallab.store.embedded_auth import HBA_CONF
from evallab.store.migrate import migrate_schema
from tests.pg_server import load_earlier_layout

OTHER_UID = 1  # "daemon": neither the lab (root) nor the server's user (nobody)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def as_other_user(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``args`` as another OS user (when the tests run as root), with no PG* settings."""
    prefix = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = "/nonexistent"
    return subprocess.run(
        (prefix if os.geteuid() == 0 else []) + args,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def psql_args(server: EmbeddedPostgres, user: str, sql: str) -> list[str]:
    return [
        str(pg_bin_dir() / "psql"),
        "-X",
        "-w",
        "-h",
        "127.0.0.1",
        "-p",
        str(server.port),
        "-U",
        user,
        "-d",
        "evallab",
        "-tAc",
        sql,
    ]


def test_secrets_are_the_labs_alone_and_the_server_takes_scram_only(
    pg_server: EmbeddedPostgres,
) -> None:
    secrets = pg_server.secrets_path
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    stored = json.loads(secrets.read_text())["embedded"]
    assert stored["writer"]["user"] == WRITER_ROLE
    assert len(stored["writer"]["password"]) >= 40
    assert pg_server.hba_path.read_text() == HBA_CONF
    assert "trust" not in HBA_CONF and "scram-sha-256" in HBA_CONF
    # The lab's DSN carries the password; printing it redacted hides it.
    assert stored["writer"]["password"] in pg_server.dsn

    # Another OS user can read neither the secrets nor log in without them.
    if os.geteuid() == 0:
        denied = as_other_user(["cat", str(secrets)])
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
    for user in (WRITER_ROLE, pg_server.admin_credential().user):
        refused = as_other_user(psql_args(pg_server, user, "SELECT 1"))
        assert refused.returncode != 0
        assert "no password supplied" in refused.stderr, refused.stderr

    # A wrong password is refused too.
    wrong = pg_server.dsn.replace(stored["writer"]["password"], "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        run(asyncpg.connect(wrong))


def test_the_labs_role_is_no_superuser_and_owns_only_its_schema(
    pg_server: EmbeddedPostgres, migrated_dsn: str
) -> None:
    async def go() -> None:
        conn = await connect(migrated_dsn)
        try:
            role = await conn.fetchrow(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
                "rolbypassrls FROM pg_roles WHERE rolname = current_user"
            )
            assert role is not None
            assert tuple(role) == (WRITER_ROLE, False, False, False, False, False)
            assert await conn.fetchval("SELECT current_schema()") == "evallab"
            owned = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspowner = "
                "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
            )
            assert [r["nspname"] for r in owned] == ["evallab"]
            # Everything the lab created is in its schema; public holds nothing of it.
            public = await conn.fetchval(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public'"
            )
            assert public == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("COPY (SELECT 1) TO PROGRAM 'id'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE public.escape (id int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE ROLE intruder SUPERUSER")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SELECT pg_read_file('pg_hba.conf')")
        finally:
            await conn.close()

    run(go())


def _earlier_version_cluster(server: EmbeddedPostgres) -> None:
    """Make and start a cluster the way earlier versions did, with the lab's data in public."""
    bin_dir = pg_bin_dir()
    server._prepare_folders()
    initdb = [str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "evallab"]
    server._run_as_owner([*initdb, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
    opts = f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(server.log_path)]
    server._run_as_owner([*pg_ctl, "-o", opts, "-w", "start"])

    async def go() -> None:
        admin = await asyncpg.connect(f"postgresql://evallab@127.0.0.1:{server.port}/postgres")
        await admin.execute("CREATE DATABASE evallab")
        await admin.close()
        conn = await asyncpg.connect(f"postgresql://evallab@127.0.0.1:{server.port}/evallab")
        try:
            await load_earlier_layout(conn)
            await conn.execute(
                "INSERT INTO campaigns (campaign_id, name, spec, spec_sha256, spec_path, "
                "lab_version, lab_commit, started_at, status) VALUES (gen_random_uuid(), 'kept', "
                "'{}'::jsonb, 's', 'p', '0.1', 'c', now(), 'running')"
            )
        finally:
            await conn.close()

    run(go())


def test_a_trust_cluster_of_an_earlier_version_is_locked_down_on_start(
    pg_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    old = EmbeddedPostgres(pg_home / "lab", port=port)
    try:
        _earlier_version_cluster(old)
        assert "trust" in old.hba_path.read_text()
        # The new version starts on the cluster the old one left running.
        with caplog.at_level(logging.WARNING, logger="evallab.store"):
            dsn = EmbeddedPostgres(pg_home / "lab", port=port).start()
        assert "from trust to SCRAM password authentication" in caplog.text
        assert old.hba_path.read_text() == HBA_CONF
        assert stat.S_IMODE(old.secrets_path.stat().st_mode) == 0o600
        assert json.loads(old.secrets_path.read_text())["embedded"]["admin"]["user"] == "evallab"
        # The old passwordless superuser login is refused now.
        with pytest.raises(asyncpg.InvalidPasswordError):
            run(asyncpg.connect(f"postgresql://evallab@127.0.0.1:{port}/evallab"))

        async def go() -> tuple[list[str], list[str], list[str]]:
            conn = await connect(dsn)
            try:
                outcome = await migrate_schema(conn)
                kept = await conn.fetch("SELECT name FROM campaigns")
                public = await conn.fetch(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN "
                    "('r', 'v')"
                )
                assert outcome.applied == []  # every migration was applied before the move
                return outcome.moved, [r["name"] for r in kept], [r["relname"] for r in public]
            finally:
                await conn.close()

        moved, kept, public = run(go())
        assert {"public.campaigns", "public.runs", "public.schema_migrations"} <= set(moved)
        assert "public.telemetry_rollup" in moved
        assert kept == ["kept"]
        assert public == []
    finally:
        old.stop(force=True)
