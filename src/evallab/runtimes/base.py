"""The Runtime protocol: how a model gets served to a harness.

A runtime is a *kind* (transformers, vllm, llamacpp, sglang, openai-endpoint). ``check`` validates
a (runtime spec, model, benchmarks) combination before anything heavy starts; ``capabilities``
says what it can do for a harness (each harness decides from those what it can run there);
``start`` returns a live :class:`RuntimeSession` (a context manager).

A session serves its model either as an OpenAI-compatible :class:`Endpoint` (servers) or as
:class:`LocalWeights` loaded in this process (transformers). Sessions know nothing of any
harness: each harness builds its own client from the endpoint or the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from evallab.errors import SpecError

if TYPE_CHECKING:
    from evallab.models import ModelArtifact
    from evallab.runtimes.venvs import InstallRecipe
    from evallab.spec import BenchmarkSpec, RuntimeSpec

__all__ = [
    "Capabilities",
    "ClientSettings",
    "Endpoint",
    "LocalWeights",
    "Runtime",
    "RuntimeInfo",
    "RuntimeSession",
    "expect_spec",
]


@dataclass(frozen=True)
class RuntimeInfo:
    """What a running runtime reports about itself (recorded on every run)."""

    kind: str
    label: str
    version: str
    commit: str = ""
    command: str = ""
    log_path: str = ""
    base_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """What a runtime can do for a model, as harnesses need to know before running on it.

    Attributes:
        prompt_logprobs: It returns correct log-probabilities of a prompt's own tokens (needed to
            score loglikelihood and multiple-choice tasks).
        prompt_logprobs_caveat: Why it can't, in words (the refusal harnesses raise).
        local_tokenizer: The model's tokenizer is at hand locally (clients that count or split
            tokens themselves need it).
    """

    prompt_logprobs: bool = True
    prompt_logprobs_caveat: str = ""
    local_tokenizer: bool = True


@dataclass(frozen=True)
class ClientSettings:
    """How clients should talk to a server; each runtime picks what its server supports.

    Attributes:
        tokenized_requests: Send prompts as token ids (exact loglikelihoods) rather than text.
        num_concurrent: Requests in flight at once.
        max_length: Context length clients truncate prompts to.
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


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server serving the session's model.

    Attributes:
        base_url: The OpenAI API root (``http://host:port/v1``).
        served_model: Model name the server answers to.
        settings: How clients should talk to it.
    """

    base_url: str
    served_model: str
    settings: ClientSettings


@dataclass(frozen=True)
class LocalWeights:
    """A model served in this process (the in-process transformers runtime).

    Attributes:
        path: The model folder.
        dtype: Weights dtype.
        device: Torch device.
        max_length: Context length clients truncate to.
        batch_size: Batch size for scoring.
        load: The loaded model, once per session: an object with ``model`` (the transformers
            model), ``tokenizer`` and ``device`` — lm-eval's ``HFLM``, which the lab loads
            transformers models with, so every harness and the canary share one copy.
    """

    path: Path
    dtype: str
    device: str
    max_length: int
    batch_size: int
    load: Callable[[], Any] = field(compare=False, repr=False)


@runtime_checkable
class RuntimeSession(Protocol):
    """A started runtime serving one model."""

    info: RuntimeInfo
    capabilities: Capabilities

    @property
    def endpoint(self) -> Endpoint | None:
        """The OpenAI-compatible server to query (None for in-process runtimes)."""
        ...

    @property
    def weights(self) -> LocalWeights | None:
        """The weights to load in this process (None for servers)."""
        ...

    def health(self) -> bool:
        """True while the runtime answers."""
        ...

    def restart(self) -> None:
        """Restart the server after a crash (in-process runtimes drop the loaded model)."""
        ...

    def stop(self) -> None:
        """Stop the runtime and every process it started."""
        ...

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the runtime's log ('' when it has none)."""
        ...

    def __enter__(self) -> RuntimeSession: ...

    def __exit__(self, *exc: object) -> None: ...


class Runtime(Protocol):
    """A kind of runtime, registered by name in :mod:`evallab.runtimes`."""

    kind: str

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        """Raise a LabError if this combination can't run (before anything heavy starts)."""
        ...

    def capabilities(self, spec: RuntimeSpec, model: ModelArtifact) -> Capabilities:
        """What this runtime can do serving ``model`` (harnesses refuse what it can't)."""
        ...

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> RuntimeSession:
        """Start serving ``model``; logs go under ``workdir``."""
        ...

    def install_recipe(self, version: str, package: str | None = None) -> InstallRecipe | None:
        """How to install ``version`` into its own virtualenv (None: nothing to install)."""
        ...


S = TypeVar("S")


def expect_spec(spec: object, kind: type[S], runtime: str) -> S:
    """``spec`` as the spec type of ``runtime`` (the registry can hand a runtime another kind's).

    Raises:
        SpecError: ``spec`` belongs to another kind of runtime.
    """
    if not isinstance(spec, kind):
        raise SpecError(
            f"{runtime} runtime got a spec of another kind",
            value=getattr(spec, "kind", spec),
            fix=f"use kind: {runtime}",
        )
    return spec
