"""The lab's Prefect blocks.

* :class:`ResultsDatabase` (``evallab-results-database/results``): the PostgreSQL DSN every
  worker writes to, stored as a secret.
* :class:`RuntimeProfiles` (``evallab-runtime-profiles/<host>``): which runtime versions and
  virtualenvs exist on one worker machine.
* Prefect's own ``Secret`` block ``hf-token``: the Hugging Face token for gated models.

``blocks/bootstrap.py`` creates them from the environment. A flow that finds no block falls back
to the lab's usual configuration (``EVALLAB_DATABASE_URL``, ``evallab.toml``, the embedded
server), so flows also run on a bare development machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from typing import cast

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from pydantic import BaseModel, Field, SecretStr

from evallab.store.db import database

__all__ = [
    "HF_TOKEN_BLOCK",
    "RESULTS_DB_BLOCK",
    "ResultsDatabase",
    "RuntimeProfile",
    "RuntimeProfiles",
    "apply_worker_settings",
    "profile_block_name",
    "results_database",
]

#: Block document names the flows load.
RESULTS_DB_BLOCK = "results"
HF_TOKEN_BLOCK = "hf-token"


class ResultsDatabase(Block):
    """The results database (PostgreSQL) shared by every worker of the lab."""

    _block_type_name = "evallab Results Database"
    _block_type_slug = "evallab-results-database"
    _description = "PostgreSQL DSN of the evallab results database (stored encrypted)."

    dsn: SecretStr = Field(
        description="postgresql://user:password@host:port/database",
    )

    def get_dsn(self) -> str:
        """The DSN in clear text (never log it; see ``evallab.store.db.redact``)."""
        return self.dsn.get_secret_value()


class RuntimeProfile(BaseModel):
    """One installed runtime: a kind at a pinned version in its own virtualenv."""

    kind: str = Field(description="Runtime kind (vllm, llamacpp, sglang...).")
    package: str = Field(description="The PyPI package installed in the virtualenv.")
    version: str = Field(description="The installed version.")
    venv: str = Field(description="Path of the virtualenv.")
    python: str = Field(default="", description="Its interpreter.")


class RuntimeProfiles(Block):
    """Which runtime versions and virtualenvs exist on one worker machine."""

    _block_type_name = "evallab Runtime Profiles"
    _block_type_slug = "evallab-runtime-profiles"
    _description = "Runtime virtualenvs installed on one evallab worker machine."

    host: str = Field(description="Hostname of the worker machine.")
    runtimes_dir: str = Field(description="EVALLAB_RUNTIMES_DIR on that machine.")
    profiles: list[RuntimeProfile] = Field(default_factory=list)

    def find(self, kind: str, version: str) -> RuntimeProfile | None:
        """The profile for ``kind`` at ``version``, if this worker has it."""
        return next((p for p in self.profiles if p.kind == kind and p.version == version), None)


def profile_block_name(host: str | None = None) -> str:
    """Block document name of a host's runtime profiles (block names are slugs)."""
    raw = (host or socket.gethostname()).lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-") or "worker"


def _load_optional(cls: type[Block], name: str) -> Block | None:
    try:
        # Sync callers get the block itself (load dispatches to aload only in async code).
        return cast(Block, cls.load(name))
    except ValueError:
        # No such block document: this lab wasn't bootstrapped; callers fall back.
        return None


def apply_worker_settings() -> RuntimeProfiles | None:
    """Apply this host's runtime profiles and the HF token block to the environment.

    Values already set in the environment win (a worker started with its own
    ``EVALLAB_RUNTIMES_DIR`` keeps it). Returns the profiles block, if any.
    """
    token = _load_optional(Secret, HF_TOKEN_BLOCK)
    if isinstance(token, Secret) and not os.environ.get("HF_TOKEN"):
        os.environ["HF_TOKEN"] = str(token.get())
    profiles = _load_optional(RuntimeProfiles, profile_block_name())
    if isinstance(profiles, RuntimeProfiles) and profiles.runtimes_dir:
        os.environ.setdefault("EVALLAB_RUNTIMES_DIR", profiles.runtimes_dir)
        return profiles
    return None


@contextlib.contextmanager
def results_database() -> Iterator[str]:
    """Yield the results DSN: ``EVALLAB_DATABASE_URL``, the ``results`` block, or the default.

    The environment wins over the block, as it does for runtime profiles: a worker (or one flow
    run) started with its own database keeps it. Without either this is
    :func:`evallab.store.db.database` (``evallab.toml``, or the embedded server, started for the
    duration if needed).
    """
    if not os.environ.get("EVALLAB_DATABASE_URL"):
        block = _load_optional(ResultsDatabase, RESULTS_DB_BLOCK)
        if isinstance(block, ResultsDatabase):
            yield block.get_dsn()
            return
    with database() as dsn:
        yield dsn
