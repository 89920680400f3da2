"""``evallab db roles`` and ``evallab db psql``, on a shared server and on the embedded one."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from evallab.runtimes.process import free_port
from evallab.store import Store
from evallab.store.embedded import EmbeddedPostgres
from evallab.store.psql import psql_invocation
from evallab.store.roles import setup_roles
from tests.helpers import evallab, fetch
from tests.pg_server import PgServer


def lab_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: "" for k in ("EVALLAB_DATABASE_URL", "EVALLAB_CONFIG", "EVALLAB_DB_SCHEMA")}
    return {**env, "EVALLAB_HOME": str(home), **extra}


def test_db_roles_on_a_shared_server_then_the_lab_works_as_the_writer(
    second_pg: PgServer, tmp_path: Path
) -> None:
    db = second_pg.create_database()
    home = tmp_path / "lab"
    proc = evallab(["db", "roles", "--admin-dsn", second_pg.dsn(db)], env=lab_env(home))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    secrets_file = home / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    section = json.loads(secrets_file.read_text())[f"127.0.0.1:{second_pg.port}/{db}"]
    writer, reader = section["writer"], section["reader"]
    assert (writer["user"], reader["user"]) == ("evallab_writer", "evallab_reader")
    out = proc.stdout
    for secret in (writer["password"], reader["password"], second_pg.admin_password):
        assert secret not in out
    assert f"evallab_writer:***@127.0.0.1:{second_pg.port}/{db}" in out
    assert f"evallab_reader:***@127.0.0.1:{second_pg.port}/{db}" in out
    assert str(secrets_file) in " ".join(out.split())

    writer_dsn = f"postgresql://evallab_writer:{writer['password']}@127.0.0.1:{second_pg.port}/{db}"
    with Store(writer_dsn) as store:  # the lab, working as the writer
        assert store.migrate()[0].version == 1
    psql = evallab(
        ["db", "psql", "-tA", "-c", "SELECT current_user, current_schema(), count(*) FROM runs"],
        env=lab_env(home, EVALLAB_DATABASE_URL=writer_dsn),
    )
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == "evallab_writer|evallab|0"

    # The reader sees what the writer made later (default privileges), and only reads.
    reader_dsn = writer_dsn.replace(f"evallab_writer:{writer['password']}", "")
    reader_dsn = reader_dsn.replace("//@", f"//evallab_reader:{reader['password']}@")
    assert fetch(reader_dsn, "SELECT count(*) FROM v_latest_scores")[0][0] == 0
    # Running it again keeps the passwords (the lab's DSN stays valid).
    setup_roles(
        second_pg.dsn(db),
        home=home,
        schema="evallab",
        writer="evallab_writer",
        reader="evallab_reader",
    )
    assert json.loads(secrets_file.read_text())[f"127.0.0.1:{second_pg.port}/{db}"] == section
    assert fetch(writer_dsn, "SELECT 1")[0][0] == 1


def test_db_roles_and_psql_on_the_embedded_server(pg_home: Path) -> None:
    port = free_port()
    env = lab_env(pg_home / "lab", EVALLAB_PG_PORT=str(port))
    try:
        started = evallab(["db", "start"], env=env)
        assert started.returncode == 0, started.stderr
        assert f"evallab_writer:***@127.0.0.1:{port}/evallab" in started.stdout
        roles = evallab(["db", "roles"], env=env)
        assert roles.returncode == 0, roles.stderr
        assert "evallab_reader:***@" in roles.stdout
        for role, expected in (("writer", "evallab_writer|f"), ("reader", "evallab_reader|f")):
            who = evallab(
                [
                    "db",
                    "psql",
                    "--role",
                    role,
                    "-tA",
                    "-c",
                    "SELECT current_user, "
                    "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
                ],
                env=env,
            )
            assert who.returncode == 0, who.stderr
            assert who.stdout.strip() == expected
    finally:
        EmbeddedPostgres(pg_home / "lab", port=port).stop(force=True)


def test_psql_gets_the_password_in_a_private_passfile_not_its_command_line() -> None:
    dsn = "postgresql://evallab_writer:s3cr:et@127.0.0.1:5432/evallab"
    with psql_invocation(dsn, "evallab") as (args, env):
        assert "s3cr:et" not in " ".join(args)
        assert args[-8:] == [
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "evallab_writer",
            "-d",
            "evallab",
        ]
        passfile = Path(env["PGPASSFILE"])
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
        assert passfile.read_text() == "127.0.0.1:5432:evallab:evallab_writer:s3cr\\:et\n"
        assert env["PGOPTIONS"] == "-c search_path=evallab"
        assert "PGPASSWORD" not in env
    assert not passfile.exists()
