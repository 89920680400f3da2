"""The fine-tune behind the demo's before/after story: real tiny model, real task data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evallab.errors import SpecError
from evallab.finetune import finetune_tiny, task_examples
from evallab.models import sha256_file

REPO = Path(__file__).resolve().parents[2]


def test_training_text_follows_the_task_yaml() -> None:
    mc = task_examples("demo_mc", REPO / "tasks_custom")
    assert len(mc) == 120
    assert mc[0].context == "Question: 3 plus 38 equals?\nAnswer:"
    assert mc[0].continuation == " 41"  # choices[label], after lm-eval's default delimiter
    gen = task_examples("demo_gen", REPO / "tasks_custom")
    assert len(gen) == 100
    assert (gen[0].context, gen[0].continuation) == ("Say sun 2 times:", " sun sun\n")
    with pytest.raises(SpecError, match="not found among the custom tasks"):
        task_examples("nope", REPO / "tasks_custom")


@pytest.mark.slow
def test_finetune_learns_the_task_and_is_deterministic(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = finetune_tiny(tiny_model, tmp_path / "ft", "demo_gen", 60, REPO)
    info = json.loads((out / "finetune.json").read_text())
    assert info["task"] == "demo_gen" and info["steps"] == 60 and info["final_loss"] < 0.1
    tok = AutoTokenizer.from_pretrained(out)
    docs = [json.loads(line) for line in (REPO / "tasks_custom/data/demo_gen.jsonl").open()][:20]

    def exact(folder: Path) -> int:
        model = AutoModelForCausalLM.from_pretrained(folder)
        hits = 0
        for d in docs:
            ids = tok(
                f"Say {d['word']} {d['n']} times:", return_tensors="pt", add_special_tokens=False
            )
            with torch.no_grad():
                gen = model.generate(**ids, max_new_tokens=8, do_sample=False)
            text = tok.decode(gen[0, ids["input_ids"].shape[1] :]).split("\n")[0].strip()
            hits += text == d["answer"]
        return hits

    assert exact(tiny_model) == 0
    assert exact(out) >= 18
    a = finetune_tiny(tiny_model, tmp_path / "a", "demo_mc", 3, REPO)
    b = finetune_tiny(tiny_model, tmp_path / "b", "demo_mc", 3, REPO)
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
