"""What vLLM and SGLang share: a pinned virtualenv serving Hugging Face weights over OpenAI's API.

:class:`OpenAIServerRuntime` does the pre-flight checks (no GGUF, a known quantization, a context
length the model supports, the virtualenv installed, the port free) and builds the
:class:`~evallab.runtimes.server.ServerLaunch` both start from; each server contributes its
command line, environment and provenance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from evallab.errors import ModelError, SpecError
from evallab.models import ModelArtifact
from evallab.runtimes.base import Capabilities, ClientSettings, expect_spec
from evallab.runtimes.process import check_port_free
from evallab.runtimes.server import ServerLaunch, ServerSession
from evallab.runtimes.venvs import InstalledRuntime, find_installed
from evallab.spec import BenchmarkSpec, RuntimeSpec

__all__ = ["GGUF_QUANTS", "OpenAIServerRuntime", "ServerSpec", "check_context_length"]

#: llama.cpp quant labels: a GGUF model belongs on the llamacpp runtime.
GGUF_QUANTS = frozenset(
    {
        "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1",
        "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ4_NL", "IQ4_XS",
        "F16", "BF16",
    }
)  # fmt: skip


class ServerSpec(Protocol):
    """The runtime-spec fields every OpenAI-compatible server runtime has."""

    @property
    def kind(self) -> str: ...
    @property
    def display(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def startup_timeout_s(self) -> float: ...
    @property
    def max_model_len(self) -> int: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def quantization(self) -> str | None: ...
    @property
    def tensor_parallel_size(self) -> int: ...
    @property
    def extra_args(self) -> tuple[str, ...]: ...


S = TypeVar("S", bound=ServerSpec)


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


class OpenAIServerRuntime(Generic[S]):
    """Base of the runtimes that serve Hugging Face weights from their own virtualenv.

    Subclasses set the class attributes and implement :meth:`command` and :meth:`env`.
    """

    kind: ClassVar[str]
    #: The server's name in messages (``vLLM``).
    server_name: ClassVar[str]
    spec_type: ClassVar[type[Any]]
    #: Quantisation methods the server's ``--quantization`` accepts.
    quantizations: ClassVar[frozenset[str]]
    #: Appended to the GGUF refusal (what the server serves instead).
    gguf_note: ClassVar[str] = ""
    health_path: ClassVar[str] = "/health"
    #: Paths that may report the server's version (the first that answers wins).
    version_paths: ClassVar[tuple[str, ...]] = ("/version",)

    # -- what each server contributes -----------------------------------------------------------

    def command(self, spec: S, model: ModelArtifact, python: str | Path, port: int) -> list[str]:
        """The exact server command line for ``spec`` serving ``model`` on ``port``."""
        raise NotImplementedError

    def env(self, spec: S, venv: InstalledRuntime) -> dict[str, str]:
        """The server's full environment."""
        raise NotImplementedError

    def package(self, spec: S) -> str:
        """The distribution installed in the runtime's virtualenv."""
        return self.kind

    def provenance(self, spec: S, venv: InstalledRuntime) -> dict[str, Any]:
        """Settings recorded in :attr:`RuntimeInfo.extra` (venv, dtype, sharding, seed...)."""
        return {
            "venv": venv.path,
            "venv_freeze_sha256": venv.freeze_sha256,
            "dtype": spec.dtype,
            "max_model_len": spec.max_model_len,
            "quantization": spec.quantization,
            "tensor_parallel_size": spec.tensor_parallel_size,
        }

    def check_quantization(self, spec: S, model: ModelArtifact) -> None:
        """Refuse a quantization the server doesn't know.

        Raises:
            SpecError: unknown method.
        """
        quant = spec.quantization
        if quant is not None and quant not in self.quantizations:
            raise SpecError(
                f"{self.server_name} does not know quantization {quant!r}",
                value=quant,
                fix=f"use one of {', '.join(sorted(self.quantizations))}",
            )

    # -- the Runtime protocol --------------------------------------------------------------------

    def narrow(self, spec: RuntimeSpec) -> S:
        """``spec`` as this runtime's spec type.

        Raises:
            SpecError: the spec is of another kind.
        """
        narrowed: S = expect_spec(spec, self.spec_type, self.kind)
        return narrowed

    def capabilities(self, spec: RuntimeSpec, model: ModelArtifact) -> Capabilities:
        """Prompt logprobs come back for the exact token ids sent, with the model's tokenizer."""
        return Capabilities()

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        """Refuse bad combinations before anything starts.

        Raises:
            SpecError: wrong spec kind, unsupported or GGUF quant.
            ModelError: max_model_len beyond the model's positions.
            RuntimeLaunchError: the runtime virtualenv isn't installed.
            PortInUseError: the fixed port is taken.
        """
        server = self.narrow(spec)
        if model.quant.upper() in GGUF_QUANTS or model.gguf_path is not None:
            raise SpecError(
                f"model {model.name!r} is a GGUF quant ({model.quant}){self.gguf_note}",
                value=model.quant,
                fix="serve GGUF files with a 'kind: llamacpp' runtime",
            )
        self.check_quantization(server, model)
        check_context_length(model, server.max_model_len, self.kind)
        find_installed(self.kind, server.version, self.package(server))
        if server.port:
            check_port_free(server.host, server.port)

    def launch_spec(
        self, spec: S, model: ModelArtifact, workdir: Path, venv: InstalledRuntime
    ) -> ServerLaunch:
        """Everything :class:`ServerSession` needs to start (and restart) the server."""

        def build(port: int) -> list[str]:
            return self.command(spec, model, venv.python, port)

        return ServerLaunch(
            kind=self.kind,
            label=spec.display,
            build_command=build,
            env=self.env(spec, venv),
            host=spec.host,
            port=spec.port,
            health_path=self.health_path,
            version_paths=self.version_paths,
            served_model=model.name,
            startup_timeout_s=spec.startup_timeout_s,
            log_path=workdir / f"{self.kind}-{spec.version}-{model.name}.log",
            version=spec.version,
            commit=venv.commit,
            settings=ClientSettings(
                # Token-id prompts: the server scores exactly the tokens the client counted.
                tokenized_requests=True,
                num_concurrent=spec.concurrency,
                max_length=spec.max_model_len,
                tokenizer=str(model.path),
                seed=spec.seed,
            ),
            extra={
                **self.provenance(spec, venv),
                "seed": spec.seed,
                "extra_args": list(spec.extra_args),
            },
        )

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> ServerSession:
        """Start the server and wait for its health endpoint; see :class:`ServerSession`.

        Raises:
            RuntimeLaunchError: not installed, crashed while starting, or never healthy.
            PortInUseError: the port is taken.
        """
        self.check(spec, model, ())
        server = self.narrow(spec)
        venv = find_installed(self.kind, server.version, self.package(server))
        return ServerSession.start(self.launch_spec(server, model, workdir, venv), model)
