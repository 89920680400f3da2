"""Prompts and post-processing, as bigcode-evaluation-harness does them.

Base models continue the prompt; the completion is cut at the first stop sequence and the program
is ``prompt + completion`` (bigcode's ``postprocess_generation``). Instruct models get the prompt in
a chat message asking for a fenced code block; the program is the extracted block (with the
prompt's imports when it redefines the function, or appended to the prompt when it is a bare
function body).
"""

from __future__ import annotations

import re

from evallab.harnesses.code.datasets import CodeProblem

__all__ = [
    "chat_messages",
    "extract_code_block",
    "program_from_chat",
    "program_from_completion",
    "stop_at_stop_sequence",
]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def stop_at_stop_sequence(text: str, stops: tuple[str, ...] | list[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence (the stop is dropped)."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1 and at < cut:
            cut = at
    return text[:cut]


def program_from_completion(problem: CodeProblem, completion: str, stops: tuple[str, ...]) -> str:
    """The program for a base model's completion: prompt + completion cut at the stops.

    ``completion`` is the text generated after the prompt (servers and our in-process generator
    return only new text; a completion that echoes the prompt has it removed first).
    """
    if completion.startswith(problem.prompt):
        completion = completion[len(problem.prompt) :]
    return problem.prompt + stop_at_stop_sequence(completion, stops)


def chat_messages(problem: CodeProblem) -> list[dict[str, str]]:
    """The chat request for an instruct model."""
    if problem.entry_point and problem.task.startswith("humaneval"):
        ask = (
            "Complete the following Python function. Reply with the complete function, "
            "including the signature, in one ```python code block.\n\n"
            f"```python\n{problem.prompt}\n```"
        )
    else:
        ask = (
            "Write a Python function for the task below; it must pass the example test. "
            "Reply with the code in one ```python code block.\n\n"
            f"{problem.prompt.strip()}"
        )
    return [{"role": "user", "content": ask}]


def extract_code_block(text: str) -> str:
    """The code in a chat reply.

    The first ```python block, else the first fenced block, else the reply itself (some models
    answer with bare code).
    """
    blocks = _FENCE.findall(text)
    for lang, body in blocks:
        if lang.lower() in ("python", "py", "python3"):
            return str(body)
    if blocks:
        return str(blocks[0][1])
    return text


def _imports(prompt: str) -> str:
    lines = [ln for ln in prompt.splitlines() if re.match(r"^(import |from \S+ import )", ln)]
    return "\n".join(lines) + ("\n" if lines else "")


def program_from_chat(problem: CodeProblem, reply: str) -> str:
    """The program for an instruct model's reply."""
    code = extract_code_block(reply)
    if problem.entry_point and re.search(
        rf"^\s*def\s+{re.escape(problem.entry_point)}\s*\(", code, re.MULTILINE
    ):
        return _imports(problem.prompt) + code
    if problem.task.startswith("mbpp"):
        return problem.prompt + code
    # A bare body continues the prompt's signature and docstring.
    return problem.prompt + "\n" + code
