"""The canary's prompts, output hashes, combinations and results (no I/O).

Changing :data:`CANARY_PROMPTS`, :data:`MAX_TOKENS` or :data:`LOGPROB_DECIMALS` requires a new
:data:`CANARY_VERSION` (old baselines are then simply not compared against).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CANARY_PROMPTS",
    "CANARY_TAG",
    "CANARY_VERSION",
    "LOGPROB_DECIMALS",
    "MAX_TOKENS",
    "CanaryCombo",
    "CanaryOutput",
    "CanaryResult",
    "hash_logprobs",
    "hash_tokens",
]

CANARY_VERSION = "v1"
#: Decimals log-probabilities are rounded to before hashing: enough to see a changed kernel or
#: quantisation, coarse enough to ignore last-bit noise of a deterministic one.
LOGPROB_DECIMALS = 3
#: Tokens generated per prompt.
MAX_TOKENS = 16
#: Tag put on runs of a session whose canary drifted under the ``warn`` policy.
CANARY_TAG = "canary_drift"

CANARY_PROMPTS: tuple[tuple[str, str], ...] = (
    ("count", "1, 2, 3, 4, 5,"),
    ("capital", "The capital of France is"),
    ("code", "def fibonacci(n):\n    "),
    ("story", "Once upon a time, in a small village by the sea,"),
    ("math", "Question: What is 12 times 7?\nAnswer:"),
    ("list", "Ingredients for pancakes:\n-"),
)


@dataclass(frozen=True)
class CanaryOutput:
    """One prompt's greedy continuation: tokens (ids or strings) and their log-probabilities."""

    prompt_id: str
    tokens: tuple[str, ...]
    logprobs: tuple[float, ...] | None

    @property
    def output_hash(self) -> str:
        return hash_tokens(self.tokens)

    @property
    def logprob_hash(self) -> str:
        return hash_logprobs(self.logprobs)


def hash_tokens(tokens: Sequence[str]) -> str:
    """sha256 of the token sequence (as a JSON list)."""
    return hashlib.sha256(json.dumps(list(tokens)).encode()).hexdigest()


def hash_logprobs(logprobs: Sequence[float] | None, decimals: int = LOGPROB_DECIMALS) -> str:
    """sha256 of the log-probabilities rounded to ``decimals`` (``none`` when not reported)."""
    if logprobs is None:
        return "none"
    parts = []
    for lp in logprobs:
        value = round(float(lp), decimals)
        # -0.000 and 0.000 are the same number; don't let the sign bit change the hash.
        parts.append(f"{value + 0.0:.{decimals}f}")
    return hashlib.sha256(",".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class CanaryCombo:
    """What a canary baseline belongs to."""

    model_name: str
    model_id: str
    model_revision: str
    quant: str
    runtime_kind: str
    runtime_label: str
    runtime_version: str
    gpu_name: str

    @property
    def key(self) -> str:
        """sha256 over the parts that must be equal for outputs to be comparable."""
        parts = [
            self.model_id,
            self.model_revision,
            self.quant,
            self.runtime_kind,
            self.runtime_version,
            self.gpu_name,
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass
class CanaryResult:
    """The outcome of one session's canary check."""

    combo: CanaryCombo
    status: Literal["baseline", "match", "drift"]
    outputs: list[CanaryOutput]
    drifted: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        """Tags for runs of this session (a tolerated drift tags them)."""
        return [CANARY_TAG] if self.status == "drift" else []
