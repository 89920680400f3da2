"""Regenerate the demo tasks' data files (deterministic; the committed files are its output)."""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tasks_custom" / "data"


def main() -> None:
    rng = random.Random(20261127)
    DATA.mkdir(parents=True, exist_ok=True)
    with (DATA / "demo_mc.jsonl").open("w") as fh:
        for i in range(120):
            a, b = rng.randint(1, 49), rng.randint(1, 49)
            right = a + b
            wrong: set[int] = set()
            while len(wrong) < 3:
                w = right + rng.choice([-11, -10, -2, -1, 1, 2, 10, 11])
                if w > 0 and w != right:
                    wrong.add(w)
            choices = [str(x) for x in [right, *sorted(wrong)]]
            rng.shuffle(choices)
            doc = {
                "id": i,
                "question": f"{a} plus {b} equals?",
                "choices": choices,
                "label": choices.index(str(right)),
            }
            fh.write(json.dumps(doc) + "\n")
    with (DATA / "demo_gen.jsonl").open("w") as fh:
        for i in range(100):
            word = rng.choice(["red", "green", "blue", "cat", "dog", "bird", "fish", "tree", "sun"])
            n = rng.randint(2, 3)
            doc = {"id": i, "word": word, "n": n, "answer": " ".join([word] * n)}
            fh.write(json.dumps(doc) + "\n")


if __name__ == "__main__":
    main()
