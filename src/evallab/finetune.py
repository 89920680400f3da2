"""Briefly train the tiny model on one custom task: the demo's before/after story.

A fine-tune is the change people most want measured ("did training on X help, and by how
much?"). The demo campaign evaluates the tiny base model and a copy trained for a few dozen
steps on one of its custom tasks, and ``evallab compare`` shows the gain with its confidence
interval. Training text is built the way lm-eval builds the scored text — ``doc_to_text`` +
``target_delimiter`` + the target (the correct choice for multiple-choice tasks) — and only the
target tokens carry loss, so the model learns the answers rather than the questions.

Training is seeded, single-threaded and deterministic on CPU, and takes a few seconds.
"""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evallab.errors import ModelError, SpecError

__all__ = ["TrainingExample", "finetune_tiny", "task_examples"]

_LEARNING_RATE = 3e-3
_SEED = 0


@dataclass(frozen=True)
class TrainingExample:
    """One document turned into (context, continuation) text."""

    context: str
    continuation: str


def _render(template: str, doc: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(template).render(**doc)
    except jinja2.TemplateError as exc:
        raise SpecError(
            f"task template can't be rendered on a document: {exc}",
            value=template,
            fix="check the task YAML's doc_to_text / doc_to_target against its data fields",
        ) from exc


def _field_or_template(spec: Any, doc: dict[str, Any]) -> Any:
    """lm-eval's convention: a bare field name reads the field, anything else is a template."""
    if isinstance(spec, str) and spec in doc:
        return doc[spec]
    if isinstance(spec, str):
        return _render(spec, doc)
    return spec  # a literal (int index, list of choices)


def _choices(spec: Any, doc: dict[str, Any]) -> list[str] | None:
    if spec is None:
        return None
    value = _field_or_template(spec, doc)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise SpecError(
                "doc_to_choice did not give a list", value=spec, fix="make it a list field"
            ) from exc
    if not isinstance(value, list | tuple):
        raise SpecError("doc_to_choice did not give a list", value=spec, fix="make it a list")
    return [str(v) for v in value]


def _load_docs(files: list[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in files:
        if not path.is_file():
            raise SpecError(
                "task data file not found", value=path, fix="check dataset_kwargs.data_files"
            )
        if path.suffix not in {".jsonl", ".json"}:
            raise SpecError(
                "fine-tuning reads JSON Lines task data only",
                value=path,
                fix="store the task's data as .jsonl",
            )
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SpecError(
                    f"task data line {n} is not JSON: {exc.msg}", value=path, fix="fix the line"
                ) from exc
    return docs


def task_examples(task_name: str, tasks_dir: Path) -> list[TrainingExample]:
    """The training text of every document of a custom task.

    Args:
        task_name: The ``task:`` name of a YAML under ``tasks_dir``.
        tasks_dir: The custom tasks folder (``tasks_custom/``).

    Raises:
        SpecError: the task doesn't exist, has no local data, or its templates don't render.
    """
    from evallab.harnesses.custom_tasks import discover

    tasks = discover(tasks_dir)
    task = tasks.get(task_name)
    if task is None:
        raise SpecError(
            "fine-tune task not found among the custom tasks",
            value=f"{task_name} in {tasks_dir}",
            fix=f"set finetune_task to one of: {', '.join(sorted(tasks)) or '(none found)'}",
        )
    files = task.data_files()
    if not files:
        raise SpecError(
            "fine-tune task has no local data files",
            value=task.path,
            fix="give it dataset_path: json and dataset_kwargs.data_files",
        )
    cfg = task.config
    delimiter = str(cfg.get("target_delimiter", " "))
    out: list[TrainingExample] = []
    for doc in _load_docs(files):
        context = str(_field_or_template(cfg.get("doc_to_text", ""), doc))
        target = _field_or_template(cfg.get("doc_to_target", ""), doc)
        choices = _choices(cfg.get("doc_to_choice"), doc)
        if choices is not None:
            index = int(target)
            if not 0 <= index < len(choices):
                raise SpecError(
                    "doc_to_target is not a valid choice index",
                    value=f"{index} of {len(choices)} choices in {task.path}",
                    fix="check the data's label field",
                )
            continuation = delimiter + choices[index]
        elif isinstance(target, list):  # several accepted answers: learn the first
            continuation = delimiter + str(target[0])
        else:
            # Generation tasks stop at a newline: end the target with one so the model learns
            # where to stop as well as what to say.
            continuation = delimiter + str(target) + "\n"
        out.append(TrainingExample(context, continuation))
    if not out:
        raise SpecError("fine-tune task has no documents", value=files, fix="add data")
    return out


def finetune_tiny(
    base_dir: Path, out_dir: Path, task_name: str, steps: int, campaign_base_dir: Path
) -> Path:
    """Train a copy of the tiny model on one custom task and save it to ``out_dir``.

    Args:
        base_dir: Folder of the base model (config.json, weights, tokenizer).
        out_dir: Destination folder (replaced if present; written atomically).
        task_name: Custom task to train on (a YAML under ``<campaign_base_dir>/tasks_custom``).
        steps: Optimiser steps (full-batch AdamW).
        campaign_base_dir: The campaign's base folder, holding ``tasks_custom/``.

    Returns:
        ``out_dir``.

    Raises:
        SpecError: the task can't be read.
        ModelError: the base model can't be loaded or ``steps`` is not positive.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if steps < 1:
        raise ModelError("fine-tune steps must be positive", value=steps, fix="use e.g. 60")
    examples = task_examples(task_name, campaign_base_dir / "tasks_custom")
    if not (base_dir / "config.json").is_file():
        raise ModelError("base model folder has no config.json", value=base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    # One thread and deterministic kernels: the same inputs give byte-identical weights, so the
    # fine-tuned model's sha256 (its pin) is stable across machines and reruns.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(_SEED)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        batch_ids, labels, mask = _batch(tokenizer, examples)
        model.train()
        optim = torch.optim.AdamW(model.parameters(), lr=_LEARNING_RATE, weight_decay=0.0)
        for _ in range(steps):
            optim.zero_grad(set_to_none=True)
            loss = model(input_ids=batch_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optim.step()
        model.eval()
        tmp = out_dir.with_name(out_dir.name + ".training")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "finetune.json").write_text(
            json.dumps(
                {
                    "base": str(base_dir),
                    "task": task_name,
                    "steps": steps,
                    "learning_rate": _LEARNING_RATE,
                    "seed": _SEED,
                    "examples": len(examples),
                    "final_loss": round(float(loss.item()), 6),
                },
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _batch(tokenizer: Any, examples: list[TrainingExample]) -> tuple[Any, Any, Any]:
    """Right-padded input ids, labels masked to the continuation, and the attention mask.

    Context and continuation are tokenized separately, as lm-eval does when it scores a
    continuation, so the trained token boundaries are the scored ones.
    """
    import torch

    seqs: list[tuple[list[int], list[int]]] = []
    for ex in examples:
        ctx = tokenizer(ex.context, add_special_tokens=False)["input_ids"]
        cont = tokenizer(ex.continuation, add_special_tokens=False)["input_ids"]
        seqs.append((ctx, cont))
    width = max(len(c) + len(t) for c, t in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (ctx, cont) in enumerate(seqs):
        n = len(ctx) + len(cont)
        ids[i, :n] = torch.tensor(ctx + cont)
        labels[i, len(ctx) : n] = torch.tensor(cont)
        mask[i, :n] = 1
    return ids, labels, mask
