"""The shared session for OpenAI-compatible model servers (vLLM, llama.cpp, SGLang).

A :class:`ServerSession` owns one server process (started through :mod:`.process`, so it never
outlives the lab), waits for its health endpoint, records what the server says about itself, and
tells lm-evaluation-harness how to reach it (:meth:`ServerSession.lm_eval_model`) so users never
need to know lm-eval's ``local-completions`` knobs.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from evallab.errors import ModelError, PinError, PortInUseError, RuntimeLaunchError
from evallab.runtimes.base import LmEvalModel, RuntimeInfo
from evallab.runtimes.process import ManagedProcess, check_port_free, free_port, launch

if TYPE_CHECKING:
    from evallab.models import ModelArtifact
    from evallab.spec import BenchmarkSpec

__all__ = [
    "LOGLIKELIHOOD_TYPES",
    "ClientSettings",
    "ServerLaunch",
    "ServerSession",
    "benchmark_output_types",
    "check_context_length",
    "lm_eval_model_for",
    "probe_json",
    "task_output_types",
]

#: lm-eval output types that score the prompt's tokens (need prompt logprobs from the server).
LOGLIKELIHOOD_TYPES = frozenset({"loglikelihood", "loglikelihood_rolling", "multiple_choice"})

# Retries of one request inside lm-eval before the benchmark sees a failure (and the runner
# restarts the server); each retry backs off exponentially up to 10 s.
_MAX_RETRIES = 3
_REQUEST_TIMEOUT_S = 600


# ---------------------------------------------------------------------------- task types


@functools.lru_cache(maxsize=8)
def _task_index(include: tuple[str, ...]) -> dict[str, Any]:
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=list(include) or None)
    return dict(tm.task_index)


def _entry_types(index: dict[str, Any], name: str, seen: set[str]) -> set[str]:
    if name in seen:
        return set()
    seen.add(name)
    entry = index.get(name)
    if entry is None:
        return set()
    cfg = entry.cfg or {}
    kind = str(getattr(entry.kind, "value", entry.kind)).lower()
    if "tag" in kind:
        subs = [n for n, e in index.items() if name in (e.tags or set())]
        return set().union(*(_entry_types(index, s, seen) for s in subs)) if subs else set()
    if "group" in kind or ("task" in cfg and isinstance(cfg.get("task"), list)):
        out: set[str] = set()
        for sub in cfg.get("task", []):
            sub_name = sub if isinstance(sub, str) else (sub or {}).get("task")
            if isinstance(sub_name, str):
                out |= _entry_types(index, sub_name, seen)
            elif isinstance(sub, dict) and "output_type" in sub:
                out.add(str(sub["output_type"]))
        return out
    return {str(cfg.get("output_type", "generate_until"))}


def task_output_types(
    tasks: Sequence[str], include_paths: Sequence[Path] = ()
) -> dict[str, set[str]]:
    """lm-eval output types of each task (groups and tags expanded), without loading datasets.

    Tasks lm-eval doesn't know map to an empty set (the harness reports unknown tasks).

    Args:
        tasks: Task, group or tag names.
        include_paths: Extra folders of task YAMLs (custom tasks).
    """
    include = [str(p) for p in include_paths if Path(p).is_dir()]
    # The user's custom tasks live in their checkout, the working directory, not the package.
    default_custom = Path.cwd() / "tasks_custom"
    if default_custom.is_dir() and str(default_custom) not in include:
        include.append(str(default_custom))
    index = _task_index(tuple(include))
    return {t: _entry_types(index, t, set()) for t in tasks}


def benchmark_output_types(
    benchmark: BenchmarkSpec, include_paths: Sequence[Path] = ()
) -> set[str]:
    """Every lm-eval output type a benchmark's tasks use (code benchmarks generate)."""
    if benchmark.harness == "code":
        return {"generate_until"}
    types: set[str] = set()
    for found in task_output_types(benchmark.tasks, include_paths).values():
        types |= found
    return types


# ------------------------------------------------------------------------- lm-eval wiring


@dataclass(frozen=True)
class ClientSettings:
    """How lm-eval talks to a server; each runtime picks what its server supports.

    Attributes:
        tokenized_requests: Send prompts as token ids (exact loglikelihoods) rather than text.
        num_concurrent: Requests in flight at once.
        max_length: Context length lm-eval truncates prompts to.
        tokenizer: Local tokenizer folder (None: let the server tokenize, generation only).
        seed: Seed sent with generation requests.
        api_key_env: Environment variable holding an API key, if any.
    """

    tokenized_requests: bool
    num_concurrent: int
    max_length: int
    tokenizer: str | None
    seed: int = 0
    api_key_env: str | None = None


def lm_eval_model_for(
    *,
    base_url: str,
    served_model: str,
    chat: bool,
    benchmark: BenchmarkSpec,
    settings: ClientSettings,
    output_types: set[str],
) -> LmEvalModel:
    """lm-eval model type and args for a benchmark against an OpenAI-compatible server.

    Base models use ``local-completions``. Chat models use ``local-chat-completions`` (the
    harness applies the chat template for chat models), except for benchmarks that score
    prompts (loglikelihood): chat endpoints return no prompt logprobs, so those go to
    ``local-completions`` with the chat template rendered locally by the model's tokenizer.
    """
    root = base_url.rstrip("/")
    scores_prompts = bool(output_types & LOGLIKELIHOOD_TYPES)
    args: dict[str, Any] = {
        "model": served_model,
        "num_concurrent": settings.num_concurrent,
        "max_retries": _MAX_RETRIES,
        "timeout": _REQUEST_TIMEOUT_S,
        "max_length": settings.max_length,
        "max_gen_toks": benchmark.generation.max_gen_toks,
        "seed": settings.seed,
    }
    if settings.api_key_env and settings.api_key_env != "OPENAI_API_KEY":
        # lm-eval reads the key from OPENAI_API_KEY; passing it as a model arg would write the
        # secret into the results JSON.
        key = os.environ.get(settings.api_key_env)
        if key:
            os.environ["OPENAI_API_KEY"] = key
    if chat and not scores_prompts:
        args |= {
            "base_url": f"{root}/chat/completions",
            "tokenizer_backend": "none",
            "tokenized_requests": False,
        }
        return LmEvalModel("local-chat-completions", args, batch_size=1)
    if settings.tokenizer:
        args |= {
            "base_url": f"{root}/completions",
            "tokenizer": settings.tokenizer,
            "tokenizer_backend": "huggingface",
            "tokenized_requests": settings.tokenized_requests,
        }
    else:
        args |= {
            "base_url": f"{root}/completions",
            "tokenizer_backend": "none",
            "tokenized_requests": False,
        }
    return LmEvalModel("local-completions", args, batch_size=1)


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


def check_context_length(model: ModelArtifact, max_model_len: int, runtime: str) -> None:
    """Refuse a ``max_model_len`` longer than the model's position embeddings.

    Raises:
        ModelError: the model can't attend that far.
    """
    cfg_path = model.path / "config.json"
    if not cfg_path.is_file():
        return
    cfg = json.loads(cfg_path.read_text())
    text_cfg = cfg.get("text_config", cfg)
    limit = text_cfg.get("max_position_embeddings") or cfg.get("max_position_embeddings")
    rope = text_cfg.get("rope_scaling") or cfg.get("rope_scaling")
    if isinstance(limit, int) and not rope and max_model_len > limit:
        raise ModelError(
            f"max_model_len {max_model_len} exceeds what model {model.name!r} supports "
            f"({limit} positions) on {runtime}",
            value=max_model_len,
            fix=f"set max_model_len: {limit} (or less) in the runtime",
        )


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
        settings: lm-eval client settings.
        include_paths: Custom task folders (to know which tasks score prompts).
        refuse_loglikelihood: Why prompt-scoring tasks can't run here ('' = they can).
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
    include_paths: tuple[Path, ...] = ()
    refuse_loglikelihood: str = ""
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

    # -- lm-eval -----------------------------------------------------------------------------

    def lm_eval_model(self, benchmark: BenchmarkSpec) -> LmEvalModel:
        """lm-eval ``local-completions`` / ``local-chat-completions`` args for ``benchmark``.

        Raises:
            RuntimeLaunchError: the benchmark needs prompt logprobs this runtime can't give.
        """
        # Task types matter only to pick the endpoint for chat models and to refuse prompt
        # scoring; skip indexing lm-eval's task registry otherwise.
        types: set[str] = set()
        if self._model.chat or self._spec.refuse_loglikelihood:
            types = benchmark_output_types(benchmark, self._spec.include_paths)
        if self._spec.refuse_loglikelihood and types & LOGLIKELIHOOD_TYPES:
            raise RuntimeLaunchError(
                self._spec.refuse_loglikelihood,
                value=f"benchmark {benchmark.name!r}",
                fix="run loglikelihood/multiple-choice tasks on vllm or transformers",
            )
        return lm_eval_model_for(
            base_url=self.base_url,
            served_model=self._spec.served_model,
            chat=self._model.chat,
            benchmark=benchmark,
            settings=self._spec.settings,
            output_types=types,
        )

    def with_settings(self, **changes: Any) -> None:
        """Adjust lm-eval client settings (e.g. concurrency) for later benchmarks."""
        self._spec = replace(self._spec, settings=replace(self._spec.settings, **changes))
