"""Scoring for the short-answer tasks a small instruct model can do (smol_facts, smol_arith).

Chat answers come as sentences ("The capital of France is Paris."), so exact match would score
phrasing, not knowledge: a fact counts when one of its accepted answers appears as whole words,
a sum when the last number in the answer is the right one.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"-?\d+")


def _contains_answer(response: str, answers: list[str]) -> bool:
    text = response.lower()
    return any(re.search(rf"\b{re.escape(a.lower())}\b", text) for a in answers)


def facts(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """1.0 when the response names one of ``doc["answers"]`` as whole words."""
    return {"acc": float(_contains_answer(results[0], doc["answers"]))}


def arith(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """1.0 when the last number in the response is ``doc["answer"]``."""
    numbers = _NUMBER.findall(results[0])
    return {"acc": float(bool(numbers) and int(numbers[-1]) == int(doc["answer"]))}
