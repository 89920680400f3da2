"""The generate phase: n samples per problem, from a served model or in-process transformers.

Generations are appended to a JSONL log one problem at a time (flushed and fsynced), so a crash
loses at most the problems in flight and a rerun resumes where it stopped. The log's header
holds a key over everything that determines the generations; a log made with other settings is
refused rather than silently mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from evallab.errors import HarnessError
from evallab.harnesses.code.datasets import CodeProblem
from evallab.harnesses.code.prompts import (
    chat_messages,
    program_from_chat,
    program_from_completion,
)

__all__ = [
    "GenerationLog",
    "GenerationRecord",
    "GenerationSettings",
    "Generator",
    "ServerGenerator",
    "TransformersGenerator",
    "run_generation",
    "sample_seed",
]


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that determines a generation (recorded with the run).

    Attributes:
        n: Samples per problem.
        temperature: 0 is greedy (the n samples are then one generation repeated).
        top_p: Nucleus mass.
        max_new_tokens: Token budget per sample.
        seed: Campaign seed; each sample gets its own seed derived from it.
        chat: Query through the chat template / chat completions (instruct models).
    """

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    chat: bool

    @property
    def greedy(self) -> bool:
        """Whether decoding is deterministic (temperature 0)."""
        return self.temperature == 0.0


def sample_seed(seed: int, task: str, doc_id: int, sample: int) -> int:
    """A per-sample seed, stable across runs and independent of scheduling order."""
    digest = hashlib.sha256(f"{seed}:{task}:{doc_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class Generator(Protocol):
    """Produces raw model outputs (completions, or chat replies) for one problem."""

    concurrency: int

    def generate(self, problem: CodeProblem, stops: tuple[str, ...], count: int) -> list[str]:
        """``count`` raw outputs for ``problem`` (sample i uses ``sample_seed(..., i)``)."""
        ...


@dataclass(frozen=True)
class GenerationRecord:
    """One problem's generations."""

    doc_id: int
    task_id: str
    doc_hash: str
    raw: list[str]
    programs: list[str]


class GenerationLog:
    """Append-only JSONL of :class:`GenerationRecord`, with a settings key in its first line.

    Args:
        path: The log file.
        key: sha256 over the settings; a log holding another key is refused.
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.records: dict[int, GenerationRecord] = {}
        if path.exists():
            self._load()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"key": key})

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        good = 0
        for i, line in enumerate(lines):
            try:
                obj = json.loads(line)
            except ValueError:
                if i == len(lines) - 1:
                    break  # a line cut by a crash: drop it and generate that problem again
                raise HarnessError(
                    f"generation log is corrupt at line {i + 1}",
                    value=self.path,
                    fix="delete the file to generate again from scratch",
                ) from None
            if i == 0:
                if obj.get("key") != self.key:
                    raise HarnessError(
                        "generation log was written with other settings (model, data, "
                        "sampling or prompts changed)",
                        value=self.path,
                        fix="delete it to start over, or use a new output folder",
                    )
            else:
                rec = GenerationRecord(**obj)
                self.records[rec.doc_id] = rec
            good += len(line.encode()) + 1
        with self.path.open("r+b") as fh:  # drop the partial tail so appends stay line-aligned
            fh.truncate(good)

    def _append(self, obj: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(obj) + "\n")  # ASCII: no raw U+2028 to split lines
            fh.flush()
            os.fsync(fh.fileno())

    def add(self, rec: GenerationRecord) -> None:
        """Persist one problem's generations."""
        self._append(asdict(rec))
        self.records[rec.doc_id] = rec


def _programs(
    problem: CodeProblem, raw: Sequence[str], stops: tuple[str, ...], chat: bool
) -> list[str]:
    if chat:
        return [program_from_chat(problem, r) for r in raw]
    return [program_from_completion(problem, r, stops) for r in raw]


def run_generation(
    problems: Sequence[CodeProblem],
    generator: Generator,
    log: GenerationLog,
    settings: GenerationSettings,
    stops: tuple[str, ...],
    progress: Callable[[int, int], None] | None = None,
) -> list[GenerationRecord]:
    """Generate every problem missing from ``log``, persisting each as it completes.

    Returns:
        Records for every problem, in problem order.
    """
    todo = [p for p in problems if p.doc_id not in log.records]
    done = len(problems) - len(todo)
    count = 1 if settings.greedy else settings.n

    def one(problem: CodeProblem) -> GenerationRecord:
        raw = generator.generate(problem, stops, count)
        if len(raw) != count:
            raise HarnessError(
                f"generator returned {len(raw)} outputs instead of {count}",
                value=problem.task_id,
                fix="check the server's support for the request parameters",
            )
        raw = list(raw) * (settings.n if settings.greedy else 1)
        return GenerationRecord(
            problem.doc_id,
            problem.task_id,
            problem.doc_hash,
            raw,
            _programs(problem, raw, stops, settings.chat),
        )

    with ThreadPoolExecutor(max_workers=max(1, generator.concurrency)) as pool:
        pending: set[Future[GenerationRecord]] = set()
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < max(1, generator.concurrency):
                pending.add(pool.submit(one, queue.pop(0)))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                log.add(fut.result())
                done += 1
                if progress is not None:
                    progress(done, len(problems))
    return [log.records[p.doc_id] for p in problems]


_MAX_SERVER_STOPS = 4


class ServerGenerator:
    """Generates through an OpenAI-compatible server (vLLM, llama.cpp, SGLang, any endpoint).

    Base models use ``/v1/completions`` with the stop sequences; instruct models use
    ``/v1/chat/completions`` and the code block is extracted afterwards.

    Args:
        base_url: Server URL (with or without the trailing ``/v1``).
        model: Model name the server serves.
        settings: Sampling settings.
        task: Task name (part of each sample's seed).
        concurrency: Requests in flight.
        api_key: Bearer token, if the server wants one.
        timeout_s: Per-request timeout.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        settings: GenerationSettings,
        task: str,
        concurrency: int = 8,
        api_key: str | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        import httpx

        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.model = model
        self.settings = settings
        self.task = task
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = self.base_url + path
        try:
            resp = self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise HarnessError(
                f"request to the model server failed: {type(exc).__name__}: {exc}",
                value=url,
                fix="check that the runtime is up (its log is recorded with the run)",
            ) from exc
        if resp.status_code != 200:
            raise HarnessError(
                f"model server answered HTTP {resp.status_code}: {resp.text[:500]}",
                value=url,
                fix="check the served model name and the generation settings",
            )
        data: dict[str, Any] = resp.json()
        return data

    def generate(self, problem: CodeProblem, stops: tuple[str, ...], count: int) -> list[str]:
        s = self.settings
        out = []
        for i in range(count):
            body: dict[str, Any] = {
                "model": self.model,
                "max_tokens": s.max_new_tokens,
                "temperature": s.temperature,
                "top_p": s.top_p,
                "seed": sample_seed(s.seed, self.task, problem.doc_id, i),
            }
            if s.chat:
                body["messages"] = chat_messages(problem)
                data = self._post("/chat/completions", body)
                out.append(str(data["choices"][0]["message"].get("content") or ""))
            else:
                body["prompt"] = problem.prompt
                # The OpenAI API (and vLLM's server) accepts at most 4 stop sequences; the rest
                # are applied client-side when the completion is cut (program_from_completion).
                body["stop"] = list(stops[:_MAX_SERVER_STOPS])
                data = self._post("/completions", body)
                out.append(str(data["choices"][0].get("text") or ""))
        return out


class TransformersGenerator:
    """Generates in-process with transformers (the CPU default runtime).

    Args:
        model: A loaded causal LM.
        tokenizer: Its tokenizer.
        settings: Sampling settings.
        task: Task name (part of each problem's seed).
        max_length: Context length; longer prompts keep their last tokens.
    """

    concurrency = 1

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: GenerationSettings,
        task: str,
        max_length: int = 2048,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.task = task
        self.max_length = max_length

    @classmethod
    def from_path(
        cls,
        path: Path,
        settings: GenerationSettings,
        task: str,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> TransformersGenerator:
        """Load model and tokenizer from a local folder."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(path))
            torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
            model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise HarnessError(
                f"transformers could not load the model: {exc}",
                value=path,
                fix="check the folder holds config.json, weights and tokenizer files",
            ) from exc
        model = model.to(device)
        model.eval()
        return cls(model, tok, settings, task)

    def _prompt_text(self, problem: CodeProblem) -> str:
        if self.settings.chat:
            text = self.tokenizer.apply_chat_template(
                chat_messages(problem), tokenize=False, add_generation_prompt=True
            )
            return str(text)
        return problem.prompt

    def generate(self, problem: CodeProblem, stops: tuple[str, ...], count: int) -> list[str]:
        import torch

        s = self.settings
        enc = self.tokenizer(self._prompt_text(problem), return_tensors="pt")
        ids = enc["input_ids"]
        keep = max(1, self.max_length - s.max_new_tokens)
        ids = ids[:, -keep:]
        device = next(self.model.parameters()).device
        ids = ids.to(device)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        kwargs: dict[str, Any] = {
            "max_new_tokens": s.max_new_tokens,
            "attention_mask": torch.ones_like(ids),
            "pad_token_id": pad,
            "num_return_sequences": count,
        }
        if not s.chat and stops:
            kwargs["stop_strings"] = list(stops)
            kwargs["tokenizer"] = self.tokenizer
        if s.greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        torch.manual_seed(sample_seed(s.seed, self.task, problem.doc_id, 0))
        with torch.no_grad():
            out = self.model.generate(ids, **kwargs)
        texts = self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        return [str(t) for t in texts]
