"""The shared session for OpenAI-compatible model servers (vLLM, llama.cpp, SGLang).

A :class:`ServerSession` owns one server process (started through :mod:`.process`, so it never
outlives the lab), waits for its health endpoint, records what the server says about itself, and
exposes the server as an :class:`~evallab.runtimes.base.Endpoint` that harnesses build their
clients from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from evallab.errors import PinError, PortInUseError, RuntimeLaunchError
from evallab.runtimes.base import (
    Capabilities,
    ClientSettings,
    Endpoint,
    RuntimeInfo,
)
from evallab.runtimes.process import ManagedProcess, check_port_free, free_port, launch

if TYPE_CHECKING:
    from evallab.models import ModelArtifact

__all__ = ["ServerLaunch", "ServerSession", "probe_json"]


# ----------------------------------------------------------------------------- probing


def probe_json(client: httpx.Client, url: str) -> Any | None:
    """GET ``url`` as JSON; None on any HTTP or parse failure (the endpoint may not exist)."""
    try:
        resp = client.get(url, timeout=5.0)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


# ------------------------------------------------------------------------------ sessions


@dataclass(frozen=True)
class ServerLaunch:
    """Everything needed to (re)start one server.

    Attributes:
        kind: Runtime kind.
        label: Runtime label for results.
        build_command: ``port -> argv`` (the port can change on restart).
        env: Full environment for the server.
        host: Interface it binds.
        port: Requested port (0 = pick a free one).
        health_path: Path answering 200 once the server can serve.
        version_paths: Paths that may report the server's version (first that answers wins).
        served_model: Model name the server answers to.
        startup_timeout_s: Seconds to wait for health.
        log_path: Server log file.
        version: Installed package version (from the runtime's virtualenv).
        commit: Package commit, if known.
        settings: How clients should talk to the server.
        capabilities: What the server can do for harnesses.
        extra: Provenance recorded in :attr:`RuntimeInfo.extra`.
    """

    kind: str
    label: str
    build_command: Callable[[int], list[str]]
    env: Mapping[str, str]
    host: str
    port: int
    health_path: str
    version_paths: tuple[str, ...]
    served_model: str
    startup_timeout_s: float
    log_path: Path
    version: str
    commit: str
    settings: ClientSettings
    capabilities: Capabilities = field(default_factory=Capabilities)
    extra: dict[str, Any] = field(default_factory=dict)


class ServerSession:
    """A running OpenAI-compatible server; implements :class:`RuntimeSession`.

    Construct with :meth:`start`. ``info`` is refreshed on every (re)start.
    """

    info: RuntimeInfo

    def __init__(self, launch_spec: ServerLaunch, model: ModelArtifact) -> None:
        self._spec = launch_spec
        self._model = model
        self._proc: ManagedProcess | None = None
        self._port = launch_spec.port
        self._restarts = 0
        self.info = RuntimeInfo(
            kind=launch_spec.kind, label=launch_spec.label, version=launch_spec.version
        )
        self.capabilities = launch_spec.capabilities

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def start(cls, launch_spec: ServerLaunch, model: ModelArtifact) -> ServerSession:
        """Start the server and wait until it is healthy.

        Raises:
            PortInUseError: the requested port is taken.
            RuntimeLaunchError: the server exited or didn't become healthy in time.
        """
        session = cls(launch_spec, model)
        session._launch()
        return session

    @property
    def base_url(self) -> str:
        """The server's OpenAI API root (``http://host:port/v1``)."""
        return f"http://{self._spec.host}:{self._port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self._spec.host}:{self._port}"

    @property
    def process(self) -> ManagedProcess | None:
        """The supervised server process (None once stopped)."""
        return self._proc

    def _launch(self) -> None:
        spec = self._spec
        if spec.port:
            check_port_free(spec.host, spec.port)
            self._port = spec.port
        elif not self._port:
            self._port = free_port(spec.host)
        else:
            try:
                check_port_free(spec.host, self._port)
            except PortInUseError:
                self._port = free_port(spec.host)
        argv = spec.build_command(self._port)
        self._proc = launch(argv, log_path=spec.log_path, env=spec.env)
        try:
            self._wait_ready()
            self.info = self._describe()
        except BaseException:
            self._proc.stop()
            raise

    def _wait_ready(self) -> None:
        proc = self._proc
        if proc is None:
            raise RuntimeLaunchError("server is not running", value=self._spec.label)
        spec = self._spec
        url = self.root_url + spec.health_path
        deadline = time.monotonic() + spec.startup_timeout_s
        with httpx.Client() as client:
            while True:
                if not proc.alive():
                    tail = proc.tail(30)
                    if "address already in use" in tail.lower():
                        raise PortInUseError(
                            f"{spec.kind} could not bind its port",
                            value=f"{spec.host}:{self._port}",
                            fix="stop the process using it or set 'port: 0'",
                        )
                    raise RuntimeLaunchError(
                        f"{spec.kind} server exited with code {proc.returncode()} while "
                        f"starting; log tail:\n{tail}",
                        value=proc.command_line,
                        fix=f"read the full log at {proc.log_path}",
                    )
                try:
                    if client.get(url, timeout=2.0).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeLaunchError(
                        f"{spec.kind} server did not become healthy within "
                        f"{spec.startup_timeout_s:.0f} s; log tail:\n{proc.tail(30)}",
                        value=url,
                        fix="raise startup_timeout_s, or read the log at " + str(proc.log_path),
                    )
                time.sleep(0.5)

    def _describe(self) -> RuntimeInfo:
        spec = self._spec
        proc = self._proc
        reported: dict[str, Any] = {}
        with httpx.Client() as client:
            for path in spec.version_paths:
                got = probe_json(client, self.root_url + path)
                if isinstance(got, dict):
                    reported = got
                    break
            models = probe_json(client, self.base_url + "/models")
        server_version = str(reported.get("version", "")) if reported else ""
        if server_version and spec.version and server_version != spec.version:
            raise PinError(
                f"{spec.kind} server reports version {server_version}, pinned {spec.version}",
                value=spec.log_path,
                fix="reinstall the runtime virtualenv with `evallab runtime install --force`",
            )
        model = self._model
        extra = dict(spec.extra)
        extra |= {
            "served_model": spec.served_model,
            "model_revision": model.revision,
            "model_sha256": model.sha256,
            "quant": model.quant,
            "weights_sha256": model.weights_sha256,
            "server_version_report": reported,
            "models_endpoint": models,
            "restarts": self._restarts,
            "pgid": proc.pgid if proc else None,
        }
        return RuntimeInfo(
            kind=spec.kind,
            label=spec.label,
            version=server_version or spec.version,
            commit=str(reported.get("commit", "") or spec.commit) if reported else spec.commit,
            command=proc.command_line if proc else "",
            log_path=str(spec.log_path),
            base_url=self.base_url,
            extra=extra,
        )

    def health(self) -> bool:
        """True while the server process runs and its health endpoint answers 200."""
        if self._proc is None or not self._proc.alive():
            return False
        try:
            resp = httpx.get(self.root_url + self._spec.health_path, timeout=5.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def restart(self) -> None:
        """Stop the server (whatever state it is in) and start it again on the same port."""
        if self._proc is not None:
            self._proc.stop()
        self._restarts += 1
        self._launch()

    def stop(self) -> None:
        """SIGTERM then SIGKILL the server's whole process group. Idempotent."""
        if self._proc is not None:
            self._proc.stop()

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server log (for error messages after a crash)."""
        return self._proc.tail(lines) if self._proc else ""

    def __enter__(self) -> ServerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------

    @property
    def endpoint(self) -> Endpoint:
        """Where clients reach the served model, and how they should talk to it."""
        return Endpoint(self.base_url, self._spec.served_model, self._spec.settings)

    @property
    def weights(self) -> None:
        """Servers hold their own weights: nothing to load in this process."""
        return None

    def with_settings(self, **changes: Any) -> None:
        """Adjust client settings (e.g. ``num_concurrent``) for later benchmarks."""
        self._spec = replace(self._spec, settings=replace(self._spec.settings, **changes))
