"""The lm-eval model a benchmark runs against, built from what the runtime session offers.

A server's :class:`~evallab.runtimes.base.Endpoint` becomes lm-eval's ``local-completions`` or
``local-chat-completions`` with every knob set (users never need to know them); in-process
:class:`~evallab.runtimes.base.LocalWeights` become lm-eval's ``hf`` model (the session's loaded
model itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evallab.errors import HarnessError
from evallab.harnesses.lm_eval.tasks import LOGLIKELIHOOD_TYPES, benchmark_output_types
from evallab.runtimes.base import Endpoint, LocalWeights, RuntimeSession
from evallab.spec import BenchmarkSpec

__all__ = ["LmEvalModel", "lm_eval_model", "lm_eval_model_for"]

# Retries of one request inside lm-eval before the benchmark sees a failure (and the runner
# restarts the server); each retry backs off exponentially up to 10 s.
_MAX_RETRIES = 3
_REQUEST_TIMEOUT_S = 600


@dataclass(frozen=True)
class LmEvalModel:
    """How lm-evaluation-harness should reach a runtime: its model type and model args."""

    model_type: str
    model_args: dict[str, Any]
    batch_size: int | str = 1
    instance: Any = None
    """A ready ``lm_eval.api.model.LM`` (the in-process session's loaded model)."""


def lm_eval_model_for(
    endpoint: Endpoint,
    *,
    chat: bool,
    benchmark: BenchmarkSpec,
    output_types: set[str],
) -> LmEvalModel:
    """lm-eval model type and args for a benchmark against an OpenAI-compatible server.

    Base models use ``local-completions``. Chat models use ``local-chat-completions`` (the
    harness applies the chat template for chat models), except for benchmarks that score
    prompts (loglikelihood): chat endpoints return no prompt logprobs, so those go to
    ``local-completions`` with the chat template rendered locally by the model's tokenizer.
    """
    settings = endpoint.settings
    root = endpoint.base_url.rstrip("/")
    scores_prompts = bool(output_types & LOGLIKELIHOOD_TYPES)
    args: dict[str, Any] = {
        "model": endpoint.served_model,
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


def _hf_args(weights: LocalWeights) -> dict[str, Any]:
    return {
        "pretrained": str(weights.path),
        "dtype": weights.dtype,
        "device": weights.device,
        "max_length": weights.max_length,
    }


def lm_eval_model(
    session: RuntimeSession, benchmark: BenchmarkSpec, *, chat: bool, tasks_dir: Path
) -> LmEvalModel:
    """lm-eval model type and args to evaluate ``benchmark`` against ``session``.

    Args:
        session: The live runtime session.
        benchmark: The benchmark to run.
        chat: Whether the model is a chat model (chooses the chat endpoint for generation).
        tasks_dir: Custom task folder (to know which tasks score prompts).

    Raises:
        HarnessError: the session offers neither an endpoint nor local weights.
        RuntimeLaunchError: the in-process model can't be loaded (after a restart).
    """
    endpoint = session.endpoint
    if endpoint is not None:
        # Task types matter only to pick the endpoint for chat models; skip indexing lm-eval's
        # task registry otherwise.
        types = benchmark_output_types(benchmark, [tasks_dir]) if chat else set()
        return lm_eval_model_for(endpoint, chat=chat, benchmark=benchmark, output_types=types)
    weights = session.weights
    if weights is None:
        raise HarnessError(
            "the runtime session offers neither an endpoint nor local weights",
            value=session.info.label,
            fix="this is a bug in the runtime: it must expose one of them",
        )
    return LmEvalModel("hf", _hf_args(weights), weights.batch_size, instance=weights.load())
