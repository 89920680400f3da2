"""Which lm-eval tasks a benchmark names: groups and tags expanded, configs and output types.

Everything the lab needs to know about lm-eval's tasks before running them — whether a name
exists, which leaf tasks a group or tag stands for, each leaf's config (dataset, revision) and
output type — comes from here, read from lm-eval's task index (``TaskManager.task_index``,
``all_tasks``, ``all_groups``, ``all_tags``) without building tasks, so no dataset is loaded.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evallab.spec import BenchmarkSpec

__all__ = [
    "LOGLIKELIHOOD_TYPES",
    "TaskCatalog",
    "TaskConfig",
    "benchmark_output_types",
    "scores_prompts",
    "task_catalog",
    "task_output_types",
]

#: lm-eval output types that score the prompt's own tokens (need correct prompt logprobs).
LOGLIKELIHOOD_TYPES = frozenset({"loglikelihood", "loglikelihood_rolling", "multiple_choice"})

# lm-eval's TaskConfig default when a YAML names no output_type.
_DEFAULT_OUTPUT_TYPE = "generate_until"
# Groups nest groups; a YAML cycle must not recurse forever.
_MAX_DEPTH = 8


@dataclass(frozen=True)
class TaskConfig:
    """One leaf task and its YAML config (includes resolved, functions not)."""

    name: str
    config: Mapping[str, Any]

    @property
    def output_type(self) -> str:
        """``generate_until``, ``multiple_choice``, ``loglikelihood``..."""
        return str(self.config.get("output_type") or _DEFAULT_OUTPUT_TYPE)


class TaskCatalog:
    """lm-eval's tasks, groups and tags, plus those in the include folders.

    Args:
        include: Extra folders of task YAMLs (custom tasks); later ones override earlier.
    """

    def __init__(self, include: Sequence[str] = ()) -> None:
        from evallab.harnesses.lm_eval.manager import task_manager

        self.manager = task_manager(include)
        self._index: Mapping[str, Any] = self.manager.task_index
        self._groups = frozenset(self.manager.all_groups)
        self._tags = frozenset(self.manager.all_tags)
        self.names: frozenset[str] = frozenset(self.manager.all_tasks)
        # lm-eval records each YAML's path under the folder as it was given: a prefix test
        # (the folder as given and resolved) tells custom entries apart without touching disk.
        prefixes = tuple(
            {f"{folder}{os.sep}" for p in include for folder in (str(p), str(Path(p).resolve()))}
        )
        self.builtin_names: frozenset[str] = frozenset(
            name
            for name in self.names
            if not prefixes
            or not str(getattr(self._index[name], "yaml_path", "") or "").startswith(prefixes)
        )
        """lm-eval's own tasks, groups and tags (not those of the include folders)."""

    def leaves(self, name: str) -> list[TaskConfig]:
        """Every leaf task ``name`` stands for (itself, or a group's/tag's members).

        Unknown names give an empty list (the harness's check reports them).
        """
        return self._leaves(name, {}, 0)

    def _leaves(self, name: str, overrides: Mapping[str, Any], depth: int) -> list[TaskConfig]:
        entry = self._index.get(name)
        if entry is None or depth > _MAX_DEPTH:
            return []
        if name in self._tags:
            # A tag's index entry lists its member tasks.
            return [
                leaf
                for member in sorted(entry.tags or ())
                for leaf in self._leaves(member, overrides, depth + 1)
            ]
        cfg = dict(entry.cfg or {})
        if name in self._groups:
            return self._members(cfg.get("task", []), overrides, depth + 1)
        return [TaskConfig(name, {**cfg, **overrides})]

    def _members(self, members: Any, overrides: Mapping[str, Any], depth: int) -> list[TaskConfig]:
        """Leaves of a group's ``task:`` list: names, names with overrides, inline tasks/groups."""
        out: list[TaskConfig] = []
        for member in members if isinstance(members, list) else [members]:
            if isinstance(member, str):
                out.extend(self._leaves(member, overrides, depth))
            elif isinstance(member, dict) and "group" in member:
                group = member["group"]
                rest = {k: v for k, v in member.items() if k not in ("group", "task")}
                if group in self._index:
                    out.extend(self._leaves(group, {**overrides, **rest}, depth))
                else:  # an inline group
                    out.extend(self._members(member.get("task", []), overrides, depth + 1))
            elif isinstance(member, dict) and "task" in member:
                task = member["task"]
                merged = {**overrides, **member}
                if isinstance(task, str) and task in self._index:
                    # A known task with overrides (lm-eval merges them over its config).
                    rest = {k: v for k, v in merged.items() if k != "task"}
                    out.extend(self._leaves(task, rest, depth))
                else:  # an inline task, defined by the dict itself
                    out.append(TaskConfig(str(task), merged))
        return out


@functools.lru_cache(maxsize=8)
def _catalog(include: tuple[str, ...]) -> TaskCatalog:
    return TaskCatalog(include)


def task_catalog(include_paths: Iterable[Path | str] = ()) -> TaskCatalog:
    """The (cached) catalog with the given custom task folders; missing folders are skipped."""
    # Resolved, so one folder named two ways builds lm-eval's index (seconds) only once.
    include: list[str] = []
    for p in include_paths:
        folder = str(Path(p).resolve())
        if Path(folder).is_dir() and folder not in include:
            include.append(folder)
    return _catalog(tuple(include))


def task_output_types(
    tasks: Sequence[str], include_paths: Sequence[Path] = ()
) -> dict[str, set[str]]:
    """lm-eval output types of each task (groups and tags expanded), without loading datasets.

    Tasks lm-eval doesn't know map to an empty set (the harness reports unknown tasks).

    Args:
        tasks: Task, group or tag names.
        include_paths: Extra folders of task YAMLs (custom tasks).
    """
    catalog = task_catalog(include_paths)
    return {t: {leaf.output_type for leaf in catalog.leaves(t)} for t in tasks}


def benchmark_output_types(
    benchmark: BenchmarkSpec, include_paths: Sequence[Path] = ()
) -> set[str]:
    """Every output type an lm-eval benchmark's tasks use."""
    types: set[str] = set()
    for found in task_output_types(benchmark.tasks, include_paths).values():
        types |= found
    return types


def scores_prompts(benchmark: BenchmarkSpec, tasks_dir: Path) -> bool:
    """Whether any task of ``benchmark`` is scored by loglikelihood (multiple choice...)."""
    return bool(benchmark_output_types(benchmark, [tasks_dir]) & LOGLIKELIHOOD_TYPES)
