"""The lab's lm-eval TaskManager (built-in index built once) equals lm-eval's own."""

from __future__ import annotations

from pathlib import Path

from lm_eval.tasks import TaskManager

from evallab.harnesses.custom_tasks import stage
from evallab.harnesses.lm_eval.manager import task_manager

REPO = Path(__file__).resolve().parents[1]


def test_same_index_as_lm_evals_own_with_custom_tasks_winning(tmp_path: Path) -> None:
    staged = stage(REPO / "tasks_custom", tmp_path / "staged")
    extra = tmp_path / "extra"
    extra.mkdir()
    # A custom task that takes the name of one of lm-eval's own: the include folder wins.
    (extra / "arc_easy.yaml").write_text(
        (REPO / "tasks_custom" / "demo_gen.yaml")
        .read_text()
        .replace("task: demo_gen", "task: arc_easy")
    )
    include = [str(staged), str(extra)]
    ours, theirs = task_manager(include), TaskManager(include_path=include)
    assert ours.all_tasks == theirs.all_tasks and len(ours.all_tasks) > 1000
    assert ours.all_groups == theirs.all_groups and ours.all_tags == theirs.all_tags
    assert ours.all_subtasks == theirs.all_subtasks
    assert {k: str(v.yaml_path) for k, v in ours.task_index.items()} == {
        k: str(v.yaml_path) for k, v in theirs.task_index.items()
    }
    assert str(ours.task_index["arc_easy"].yaml_path).startswith(str(extra))
    # And it loads tasks the same way: the custom task from its staged YAML.
    loaded = ours.load(["demo_gen"])["tasks"]
    assert list(loaded) == ["demo_gen"]
