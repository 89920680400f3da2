"""Any already-running OpenAI-compatible server, given its base URL.

The lab does not own the process: it can't start, restart or stop it. What it can do is ask the
server what it is — ``/v1/models`` plus whichever version endpoint the server has (``/version`` on
vLLM, ``/info`` on TGI, ``/api/version`` on Ollama, ``/get_server_info`` on SGLang) — and record
that with every run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from evallab.errors import RuntimeLaunchError, SpecError
from evallab.models import ModelArtifact
from evallab.runtimes.base import (
    Capabilities,
    ClientSettings,
    Endpoint,
    RuntimeInfo,
    expect_spec,
)
from evallab.runtimes.server import probe_json
from evallab.runtimes.venvs import InstallRecipe
from evallab.spec import BenchmarkSpec, OpenAIEndpointRuntimeSpec, RuntimeSpec

__all__ = [
    "VERSION_PROBES",
    "EndpointSession",
    "OpenAIEndpointRuntime",
    "describe_endpoint",
    "local_tokenizer",
]

#: (path, server family) probed in order; the first JSON object answering wins.
VERSION_PROBES: tuple[tuple[str, str], ...] = (
    ("/version", "vllm"),
    ("/info", "tgi"),
    ("/api/version", "ollama"),
    ("/get_server_info", "sglang"),
    ("/server_info", "sglang"),
    ("/props", "llama.cpp"),
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def _root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def local_tokenizer(spec: OpenAIEndpointRuntimeSpec, model: ModelArtifact) -> str | None:
    """The tokenizer folder to count tokens with: the runtime's, else the model's own, if any."""
    if spec.tokenizer:
        return spec.tokenizer
    if any((model.path / f).exists() for f in _TOKENIZER_FILES):
        return str(model.path)
    return None


def _headers(spec: OpenAIEndpointRuntimeSpec) -> dict[str, str]:
    if spec.api_key_env and os.environ.get(spec.api_key_env):
        return {"Authorization": f"Bearer {os.environ[spec.api_key_env]}"}
    return {}


def describe_endpoint(spec: OpenAIEndpointRuntimeSpec) -> dict[str, Any]:
    """Ask a running server what it serves and which version it is.

    Returns:
        ``models`` (ids from /v1/models), ``owned_by``, ``version``, ``commit``, ``family`` and
        the raw ``version_report``.

    Raises:
        RuntimeLaunchError: the server doesn't answer ``/v1/models``.
    """
    base = spec.base_url.rstrip("/")
    with httpx.Client(headers=_headers(spec)) as client:
        try:
            resp = client.get(base + "/models", timeout=10.0)
        except httpx.HTTPError as exc:
            raise RuntimeLaunchError(
                f"the OpenAI-compatible endpoint does not answer: {type(exc).__name__}",
                value=base + "/models",
                fix="start the server, or correct base_url (it must end in /v1)",
            ) from exc
        if resp.status_code != 200:
            raise RuntimeLaunchError(
                f"the endpoint answered /v1/models with HTTP {resp.status_code}",
                value=base + "/models",
                fix="check base_url and, if the server needs a key, api_key_env",
            )
        try:
            data = resp.json().get("data", [])
        except (ValueError, AttributeError) as exc:
            raise RuntimeLaunchError(
                "the endpoint's /v1/models did not return an OpenAI model list",
                value=base + "/models",
                fix="point base_url at an OpenAI-compatible server",
            ) from exc
        report: dict[str, Any] = {}
        family = ""
        for path, fam in VERSION_PROBES:
            got = probe_json(client, _root(base) + path)
            if isinstance(got, dict) and (got.get("version") or got.get("sha")):
                report, family = got, fam
                break
    owned = sorted({str(m.get("owned_by", "")) for m in data if isinstance(m, dict)} - {""})
    version = str(report.get("version", "") or report.get("build_info", "") or "")
    commit = str(report.get("sha", "") or report.get("commit", "") or "")
    return {
        "models": [str(m.get("id")) for m in data if isinstance(m, dict)],
        "owned_by": owned,
        "version": version,
        "commit": commit,
        "family": family or (owned[0] if owned else "unknown"),
        "version_report": report,
        "models_endpoint": data,
    }


class EndpointSession:
    """A session on a server the lab does not own; implements :class:`RuntimeSession`."""

    def __init__(
        self, spec: OpenAIEndpointRuntimeSpec, model: ModelArtifact, capabilities: Capabilities
    ) -> None:
        self.spec = spec
        self.model = model
        self.served_model = spec.served_model or model.name
        self.capabilities = capabilities
        self.info = self._describe()

    def _tokenizer(self) -> str | None:
        return local_tokenizer(self.spec, self.model)

    def _describe(self) -> RuntimeInfo:
        found = describe_endpoint(self.spec)
        if self.served_model not in found["models"]:
            raise RuntimeLaunchError(
                f"the endpoint does not serve model {self.served_model!r}",
                value=f"{self.spec.base_url} serves {found['models']}",
                fix="set served_model in the runtime to one of the listed names",
            )
        return RuntimeInfo(
            kind="openai-endpoint",
            label=self.spec.display,
            version=found["version"] or "unknown",
            commit=found["commit"],
            command=f"external server at {self.spec.base_url}",
            base_url=self.spec.base_url.rstrip("/"),
            extra={
                "family": found["family"],
                "owned_by": found["owned_by"],
                "served_model": self.served_model,
                "server_version_report": found["version_report"],
                "models_endpoint": found["models_endpoint"],
                "model_revision": self.model.revision,
                "weights_sha256": self.model.weights_sha256,
                "quant": self.model.quant,
                "tokenizer": self._tokenizer(),
            },
        )

    @property
    def endpoint(self) -> Endpoint:
        """The server; prompts go as text (token-id prompts aren't portable across servers)."""
        return Endpoint(
            self.spec.base_url,
            self.served_model,
            ClientSettings(
                tokenized_requests=False,
                num_concurrent=self.spec.concurrency,
                max_length=self.spec.max_model_len,
                tokenizer=self._tokenizer(),
                api_key_env=self.spec.api_key_env,
            ),
        )

    @property
    def weights(self) -> None:
        """The server holds its own weights."""
        return None

    def health(self) -> bool:
        """True while ``/v1/models`` answers 200."""
        try:
            resp = httpx.get(
                self.spec.base_url.rstrip("/") + "/models", headers=_headers(self.spec), timeout=5
            )
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def restart(self) -> None:
        """The lab can't restart a server it doesn't own: succeed only if it is back up.

        Raises:
            RuntimeLaunchError: the endpoint is still down.
        """
        if not self.health():
            raise RuntimeLaunchError(
                "the external endpoint is down and the lab can't restart it",
                value=self.spec.base_url,
                fix="restart the server yourself, then rerun the campaign with --resume",
            )
        self.info = self._describe()

    def stop(self) -> None:
        """Nothing to stop: the server belongs to someone else."""

    def log_tail(self, lines: int = 40) -> str:
        """The server's log isn't the lab's to read."""
        return ""

    def __enter__(self) -> EndpointSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OpenAIEndpointRuntime:
    """Factory for :class:`EndpointSession`."""

    kind = "openai-endpoint"

    @staticmethod
    def install_recipe(version: str, package: str | None = None) -> InstallRecipe | None:
        """Nothing to install: the server is someone else's."""
        return None

    def capabilities(self, spec: RuntimeSpec, model: ModelArtifact) -> Capabilities:
        """Prompt logprobs, counted with a local tokenizer when one is at hand."""
        spec = expect_spec(spec, OpenAIEndpointRuntimeSpec, self.kind)
        return Capabilities(local_tokenizer=local_tokenizer(spec, model) is not None)

    def check(
        self, spec: RuntimeSpec, model: ModelArtifact, benchmarks: tuple[BenchmarkSpec, ...]
    ) -> None:
        """Refuse a malformed URL; the server itself is probed at start.

        Raises:
            SpecError: wrong spec kind, or a base URL that isn't http(s)://.../v1.
        """
        spec = expect_spec(spec, OpenAIEndpointRuntimeSpec, self.kind)
        url = spec.base_url.rstrip("/")
        if not url.startswith(("http://", "https://")) or not url.endswith("/v1"):
            raise SpecError(
                "base_url must be an http(s) URL ending in /v1",
                value=spec.base_url,
                fix="write e.g. base_url: http://127.0.0.1:8000/v1",
            )
        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            raise SpecError(
                f"environment variable {spec.api_key_env} (api_key_env) is not set",
                value=spec.api_key_env,
                fix=f"export {spec.api_key_env}=<key> before running the campaign",
            )

    def start(self, spec: RuntimeSpec, model: ModelArtifact, workdir: Path) -> EndpointSession:
        """Connect to the running server and record what it reports.

        Raises:
            RuntimeLaunchError: the server doesn't answer or doesn't serve the model.
        """
        self.check(spec, model, ())
        spec = expect_spec(spec, OpenAIEndpointRuntimeSpec, self.kind)
        return EndpointSession(spec, model, self.capabilities(spec, model))
