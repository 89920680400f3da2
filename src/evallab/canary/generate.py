"""The canary prompts run through a live runtime session (server or in-process)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from evallab.canary.outputs import CANARY_PROMPTS, MAX_TOKENS, CanaryOutput
from evallab.errors import RuntimeLaunchError

if TYPE_CHECKING:
    from evallab.models import ModelArtifact
    from evallab.runtimes.base import RuntimeSession

__all__ = ["generate_canary"]


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
    # transformers and torch are imported only on this path: seconds of start-up that server
    # sessions (and every module importing the canary) don't need.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.path)
    hf: Any = AutoModelForCausalLM.from_pretrained(model.path)
    hf = hf.to(device)
    hf.eval()
    return hf, tok, device


def _inprocess_canary(
    session: RuntimeSession, model: ModelArtifact, seed: int
) -> list[CanaryOutput]:
    import torch  # heavy: only the in-process path needs it (see _hf_objects)

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
