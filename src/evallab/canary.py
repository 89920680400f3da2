"""Canary determinism check at the start of every runtime session.

A fixed, versioned set of prompts is generated greedily with a fixed seed. The output tokens and
their log-probabilities (rounded to :data:`LOGPROB_DECIMALS` decimals) are hashed per prompt and
compared with the baseline of the same combination — (model id + revision, quant, runtime kind +
version, GPU name). The first session of a combination records the baseline; every session
stores its rows in ``canaries``. ``evallab canary baseline --reset`` retires baselines after a
deliberate change.

Changing :data:`CANARY_PROMPTS`, :data:`MAX_TOKENS` or :data:`LOGPROB_DECIMALS` requires a new
:data:`CANARY_VERSION` (old baselines are then simply not compared against).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from evallab.errors import CanaryDriftError, RuntimeLaunchError

if TYPE_CHECKING:
    import asyncpg

    from evallab.models import ModelArtifact
    from evallab.runtimes.base import RuntimeSession

__all__ = [
    "CANARY_PROMPTS",
    "CANARY_TAG",
    "CANARY_VERSION",
    "LOGPROB_DECIMALS",
    "MAX_TOKENS",
    "CanaryCombo",
    "CanaryOutput",
    "CanaryResult",
    "generate_canary",
    "hash_logprobs",
    "hash_tokens",
    "record_canary",
    "reset_baselines",
    "run_canary",
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


# ------------------------------------------------------------------------------ generation


def _completions_url(base_url: str) -> str:
    root = base_url.rstrip("/")
    return f"{root}/completions" if root.endswith("/v1") else f"{root}/v1/completions"


def _server_canary(session: RuntimeSession, model: ModelArtifact, seed: int) -> list[CanaryOutput]:
    info = session.info
    served = str(info.extra.get("served_model") or model.name)
    url = _completions_url(str(info.base_url))
    outputs = []
    with httpx.Client(timeout=120.0) as client:
        for prompt_id, prompt in CANARY_PROMPTS:
            body = {
                "model": served,
                "prompt": prompt,
                "max_tokens": MAX_TOKENS,
                "temperature": 0.0,
                "top_p": 1.0,
                "seed": seed,
                "logprobs": 1,
            }
            try:
                resp = client.post(url, json=body)
                resp.raise_for_status()
                choice = resp.json()["choices"][0]
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                raise RuntimeLaunchError(
                    f"canary prompt {prompt_id!r} failed: {type(exc).__name__}: {exc}",
                    value=url,
                    fix="check the runtime log; the server must serve /v1/completions",
                ) from exc
            lp = choice.get("logprobs") or {}
            tokens = lp.get("tokens")
            values = lp.get("token_logprobs")
            outputs.append(
                CanaryOutput(
                    prompt_id,
                    tuple(str(t) for t in tokens) if tokens else (str(choice.get("text", "")),),
                    tuple(float(v) for v in values if v is not None) if values else None,
                )
            )
    return outputs


def _hf_objects(session: RuntimeSession, model: ModelArtifact) -> tuple[Any, Any, str]:
    """The session's already-loaded model and tokenizer when it has them, else load them."""
    weights = session.weights
    device = weights.device if weights is not None else "cpu"
    if weights is not None:
        # The same model object the harnesses score with (loaded once per session).
        lm = weights.load()
        if hasattr(lm, "model") and hasattr(lm, "tokenizer"):
            return lm.model, lm.tokenizer, str(getattr(lm, "device", device))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.path)
    hf: Any = AutoModelForCausalLM.from_pretrained(model.path)
    hf = hf.to(device)
    hf.eval()
    return hf, tok, device


def _inprocess_canary(
    session: RuntimeSession, model: ModelArtifact, seed: int
) -> list[CanaryOutput]:
    import torch

    hf, tok, device = _hf_objects(session, model)
    torch.manual_seed(seed)
    outputs = []
    with torch.no_grad():
        for prompt_id, prompt in CANARY_PROMPTS:
            ids = tok(prompt, return_tensors="pt").input_ids.to(device)
            tokens: list[str] = []
            logprobs: list[float] = []
            # Plain greedy loop (no generate()): its defaults vary across transformers versions.
            for _ in range(MAX_TOKENS):
                logits = hf(input_ids=ids).logits[0, -1].float()
                logp = torch.log_softmax(logits, dim=-1)
                nxt = int(torch.argmax(logp).item())
                tokens.append(str(nxt))
                logprobs.append(float(logp[nxt].item()))
                ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], dim=1)
                if tok.eos_token_id is not None and nxt == tok.eos_token_id:
                    break
            outputs.append(CanaryOutput(prompt_id, tuple(tokens), tuple(logprobs)))
    return outputs


def generate_canary(
    session: RuntimeSession, model: ModelArtifact, seed: int = 0
) -> list[CanaryOutput]:
    """Run the canary prompts through a live session.

    Server sessions are queried through ``/v1/completions`` with ``logprobs``; the in-process
    transformers session greedily decodes with the session's model.

    Raises:
        RuntimeLaunchError: the server didn't answer a canary prompt.
    """
    if session.info.base_url:
        return _server_canary(session, model, seed)
    return _inprocess_canary(session, model, seed)


# ------------------------------------------------------------------------------ the store


async def record_canary(
    conn: asyncpg.Connection,
    campaign_id: uuid.UUID,
    combo: CanaryCombo,
    outputs: Sequence[CanaryOutput],
    policy: Literal["fail", "warn", "off"] = "fail",
) -> CanaryResult:
    """Compare outputs with the combination's baseline, store every row, apply the policy.

    The first check of a combination (or the first after a reset) records the baseline.

    Raises:
        CanaryDriftError: outputs differ from the baseline and the policy is ``fail`` (the rows
            are stored first, so the drift stays on record).
    """
    baseline = {
        r["prompt_id"]: (r["output_hash"], r["logprob_hash"])
        for r in await conn.fetch(
            """
            SELECT DISTINCT ON (prompt_id) prompt_id, output_hash, logprob_hash
              FROM canaries
             WHERE combo_key = $1 AND canary_version = $2 AND is_baseline AND retired_at IS NULL
             ORDER BY prompt_id, created_at DESC
            """,
            combo.key,
            CANARY_VERSION,
        )
    }
    is_baseline = not baseline
    drifted: list[str] = []
    details: list[str] = []
    rows = []
    for out in outputs:
        match: bool | None = None
        if not is_baseline:
            expected = baseline.get(out.prompt_id)
            match = expected == (out.output_hash, out.logprob_hash)
            if not match:
                drifted.append(out.prompt_id)
                want = expected or ("(none)", "(none)")
                details.append(
                    f"{out.prompt_id}: tokens {out.output_hash[:12]} vs baseline {want[0][:12]}, "
                    f"logprobs {out.logprob_hash[:12]} vs baseline {want[1][:12]}"
                )
        rows.append(
            (
                campaign_id,
                combo.key,
                CANARY_VERSION,
                out.prompt_id,
                out.output_hash,
                out.logprob_hash,
                is_baseline,
                match,
                combo.model_name,
                combo.model_revision,
                combo.quant,
                combo.runtime_label,
                combo.runtime_version,
                combo.gpu_name,
                LOGPROB_DECIMALS,
                len(out.tokens),
            )
        )
    await conn.executemany(
        """
        INSERT INTO canaries (campaign_id, combo_key, canary_version, prompt_id, output_hash,
                              logprob_hash, is_baseline, matches_baseline, model_name,
                              model_revision, quant, runtime_label, runtime_version, gpu_name,
                              logprob_decimals, n_tokens)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        """,
        rows,
    )
    status: Literal["baseline", "match", "drift"] = (
        "baseline" if is_baseline else ("drift" if drifted else "match")
    )
    result = CanaryResult(combo, status, list(outputs), drifted, details)
    if status == "drift" and policy == "fail":
        raise CanaryDriftError(
            f"canary {CANARY_VERSION} drifted for {combo.model_name} on {combo.runtime_label} "
            f"({len(drifted)}/{len(outputs)} prompts differ from the baseline): "
            + "; ".join(details),
            value=f"combination {combo.key[:12]} (revision {combo.model_revision}, quant "
            f"{combo.quant}, {combo.runtime_kind} {combo.runtime_version}, "
            f"GPU {combo.gpu_name or 'none'})",
            fix="if the change is deliberate, run `evallab canary baseline --reset --model "
            f"{combo.model_name}`; to run anyway and tag the runs, set checks.canary: warn",
        )
    return result


async def reset_baselines(
    conn: asyncpg.Connection,
    *,
    model: str | None = None,
    runtime: str | None = None,
    combo_key: str | None = None,
) -> int:
    """Retire current baselines (all, or those matching the filters); returns how many rows.

    The next canary of each affected combination records a new baseline. Old rows are kept.
    """
    status = await conn.execute(
        """
        UPDATE canaries SET retired_at = now()
         WHERE is_baseline AND retired_at IS NULL
           AND ($1::text IS NULL OR model_name = $1)
           AND ($2::text IS NULL OR runtime_label = $2)
           AND ($3::text IS NULL OR combo_key = $3)
        """,
        model,
        runtime,
        combo_key,
    )
    return int(status.split()[-1])


def run_canary(
    session: RuntimeSession,
    model: ModelArtifact,
    *,
    dsn: str,
    campaign_id: uuid.UUID,
    policy: Literal["fail", "warn", "off"] = "fail",
    seed: int = 0,
    gpu_name: str = "",
) -> CanaryResult | None:
    """Generate the canary through ``session`` and check it against the baseline.

    Call right after a runtime session starts. Returns None when the policy is ``off``.

    Raises:
        CanaryDriftError: drift under the ``fail`` policy.
        RuntimeLaunchError: the runtime didn't answer.
    """
    if policy == "off":
        return None
    from evallab.store.db import connect, run_sync

    info = session.info
    combo = CanaryCombo(
        model_name=model.name,
        model_id=model.model_id,
        model_revision=model.revision,
        quant=model.quant,
        runtime_kind=info.kind,
        runtime_label=info.label,
        runtime_version=info.version,
        gpu_name=gpu_name,
    )
    outputs = generate_canary(session, model, seed)

    async def _record() -> CanaryResult:
        conn = await connect(dsn)
        try:
            return await record_canary(conn, campaign_id, combo, outputs, policy)
        finally:
            await conn.close()

    return run_sync(_record())
