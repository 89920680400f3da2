"""How the embedded server is locked down: SCRAM passwords over loopback TCP, nothing else.

The cluster is created with ``initdb --auth=scram-sha-256`` and a generated superuser password;
its ``pg_hba.conf`` (:data:`HBA_CONF`) accepts only SCRAM logins from 127.0.0.1 and ::1, and the
server listens on 127.0.0.1 without a Unix socket. The superuser only sets things up
(:func:`setup_script`): the lab works as the writer role, which owns the lab's schema and has no
other power. Clusters created by earlier versions (``--auth=trust``) are upgraded on start.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

from evallab.errors import DatabaseError
from evallab.store.pg_binaries import pg_bin_dir
from evallab.store.role_sql import RoleSpec, quote_ident, role_statements
from evallab.store.secrets import Credential, credential, read_section, scram_verifier, secrets_path

__all__ = [
    "ADMIN_ROLE",
    "HBA_CONF",
    "READER_ROLE",
    "SECRETS_SECTION",
    "WRITER_ROLE",
    "ClusterAccess",
    "setup_script",
]

LAB_DATABASE = "evallab"
ADMIN_ROLE = "evallab_admin"  # the bootstrap superuser of clusters this version creates
_LEGACY_ADMIN = "evallab"  # ...and of clusters earlier versions created (with trust auth)
WRITER_ROLE = "evallab_writer"
READER_ROLE = "evallab_reader"
SECRETS_SECTION = "embedded"
UNPRIVILEGED_UID = 65534  # "nobody": PostgreSQL refuses to run as root
_log = logging.getLogger("evallab.store")

HBA_CONF = """\
# Written by evallab (see docs/database.md): password (SCRAM-SHA-256) logins over loopback TCP
# only. The passwords are in the lab home's secrets.json (mode 0600). The lab rewrites this file
# on start.
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
"""


def setup_script(*, admin: Credential, writer: Credential, database: str, schema: str) -> str:
    """The ``psql`` script that sets up a database, the writer role and the schema; idempotent.

    It runs as the superuser, connected to the ``postgres`` database.

    The superuser's password is (re)set too: a cluster of an earlier version had none.
    """
    lines = [
        "\\set ON_ERROR_STOP on",
        f"ALTER ROLE {quote_ident(admin.user)} PASSWORD '{scram_verifier(admin.password)}';",
        f"SELECT 'CREATE DATABASE {quote_ident(database)}' WHERE NOT EXISTS "
        f"(SELECT 1 FROM pg_database WHERE datname = '{database}') \\gexec",
        # Nobody but the owner (the superuser) and the roles granted CONNECT may open it.
        f"REVOKE ALL ON DATABASE {quote_ident(database)} FROM PUBLIC;",
        f"\\connect {quote_ident(database)}",
    ]
    statements = role_statements(
        database=database, schema=schema, writer=RoleSpec(writer.user, writer.password)
    )
    lines += [f"{s};" for s in statements]
    return "\n".join(lines) + "\n"


class ClusterAccess:
    """Who may log in to the embedded cluster, and how.

    The part of :class:`~evallab.store.embedded.EmbeddedPostgres` that handles roles,
    passwords, DSNs and ``pg_hba.conf``.
    """

    home: Path
    port: int
    schema: str

    @property
    def data_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    def _run_as_owner(
        self,
        args: list[str],
        *,
        check: bool = True,
        stdin: str | None = None,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    @property
    def secrets_path(self) -> Path:
        """The file holding this server's generated passwords (mode 0600)."""
        return secrets_path(self.home)

    @property
    def hba_path(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    def admin_credential(self) -> Credential:
        """The bootstrap superuser's name and password (generated on first use).

        Raises:
            DatabaseError: the cluster exists and uses passwords, but the secrets file lost them.
        """
        stored = read_section(self.home, SECRETS_SECTION).get("admin")
        if stored is not None:
            return stored
        if (self.data_dir / "PG_VERSION").exists():
            if not self._hba_trusts():
                raise DatabaseError(
                    "the embedded PostgreSQL cluster requires passwords, but the lab's secrets "
                    "file holds none for it",
                    value=self.secrets_path,
                    fix=f"restore that file from a backup, or delete {self.data_dir} to start "
                    "from an empty cluster (its data is lost)",
                )
            # A cluster of an earlier version: its superuser gets a password on this start.
            return credential(self.home, SECRETS_SECTION, "admin", _LEGACY_ADMIN)
        return credential(self.home, SECRETS_SECTION, "admin", ADMIN_ROLE)

    def writer_credential(self) -> Credential:
        """The lab's working role (owns the lab's schema, nothing else) and its password."""
        return credential(self.home, SECRETS_SECTION, "writer", WRITER_ROLE)

    def dsn_for(self, database: str, cred: Credential | None = None) -> str:
        """DSN of ``database`` on this server as ``cred`` (default: the lab's writer role)."""
        cred = cred or self.writer_credential()
        return f"postgresql://{cred.user}:{cred.password}@127.0.0.1:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """DSN of the lab's database on this server, as the lab's writer role."""
        return self.dsn_for(LAB_DATABASE)

    @property
    def admin_dsn(self) -> str:
        """DSN of the lab's database as the superuser (for setting up roles, never for work)."""
        return self.dsn_for(LAB_DATABASE, self.admin_credential())

    def _hba_trusts(self) -> bool:
        try:
            text = self.hba_path.read_text()
        except OSError:
            return False
        rules = [line.split() for line in text.splitlines() if line.split()[:1] != []]
        return any(r[-1] == "trust" for r in rules if not r[0].startswith("#"))

    def ensure_database(self, database: str) -> str:
        """Create ``database`` (if missing) with the lab's schema owned by the writer role.

        Runs as the superuser, as one idempotent ``psql`` script read from stdin (no password on
        a command line). Returns the database's DSN as the writer role.
        """
        admin = self.admin_credential()
        script = setup_script(
            admin=admin, writer=self.writer_credential(), database=database, schema=self.schema
        )
        self._psql(admin, "postgres", ["-f", "-"], stdin=script)
        return self.dsn_for(database)

    def _psql(
        self,
        cred: Credential,
        database: str,
        args: list[str],
        *,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(pg_bin_dir() / "psql"), "-X", "-q", "-w", "-h", "127.0.0.1"]
        cmd += ["-p", str(self.port), "-U", cred.user, "-d", database, *args]
        env = {"PGPASSWORD": cred.password} if cred.password else {}
        return self._run_as_owner(cmd, stdin=stdin, env_extra=env, check=check)

    def _lock_down(self) -> None:
        """Make ``pg_hba.conf`` take SCRAM passwords only (after the roles got theirs)."""
        if self.hba_path.read_text() == HBA_CONF:
            return
        # A cluster of an earlier version trusted every loopback login: now that its roles have
        # passwords, it takes passwords only. (An edited file is put back the same way.)
        trusted = self._hba_trusts()
        self._write_hba()
        self._run_as_owner([str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "reload"])
        self._wait_for_password_auth()
        _log.warning(
            "upgraded the embedded PostgreSQL in %s from %s to SCRAM password "
            "authentication only; the lab now works as role %s, passwords are in %s",
            self.data_dir,
            "trust" if trusted else "an edited pg_hba.conf",
            WRITER_ROLE,
            self.secrets_path,
        )

    def _write_hba(self) -> None:
        self.hba_path.write_text(HBA_CONF)
        self.hba_path.chmod(0o600)
        if os.geteuid() == 0:
            os.chown(self.hba_path, UNPRIVILEGED_UID, UNPRIVILEGED_UID)

    def _wait_for_password_auth(self) -> None:
        """Wait until the server applied the new pg_hba.conf (a reload is asynchronous)."""
        nobody = Credential(self.admin_credential().user, "")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = self._psql(nobody, "postgres", ["-tAc", "SELECT 1"], check=False)
            if probe.returncode != 0:
                return
            time.sleep(0.05)
        raise DatabaseError(
            "the embedded PostgreSQL still accepts logins without a password after a reload",
            value=self.hba_path,
            fix=f"see {self.log_path}; restart it with `evallab db stop` and `evallab db start`",
        )
