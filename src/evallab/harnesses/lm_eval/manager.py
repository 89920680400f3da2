"""lm-eval's ``TaskManager``, with lm-eval's own task index built once per process.

Building lm-eval's index means parsing its ~14,000 task YAMLs: 10-15 s on two cores, paid by
every ``TaskManager(...)``. The lab makes one per benchmark run (each run stages its custom
tasks in a folder of its own), so a campaign of ten runs spent minutes re-reading files that
never change while the process lives. lm-eval builds the index path by path (later paths
override earlier ones), so the built-in part is computed once and the include folders' part
per manager, merged the way lm-eval merges them.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

__all__ = ["task_manager"]


@functools.cache
def _builtin_index() -> Mapping[str, Any]:
    import lm_eval.tasks
    from lm_eval.tasks._index import TaskIndex

    return TaskIndex.build([Path(lm_eval.tasks.__file__).parent])


def task_manager(include: Sequence[str | Path] = ()) -> Any:
    """A ``lm_eval.tasks.TaskManager`` over lm-eval's tasks plus the ``include`` folders.

    Equivalent to ``TaskManager(include_path=include)``; the include folders win over lm-eval's
    own entries of the same name, as in lm-eval.
    """
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    manager = TaskManager(include_path=[str(p) for p in include] or None, include_defaults=False)
    # Same bookkeeping as TaskManager.__init__, over the merged index (pinned lm-eval version).
    index = {**_builtin_index(), **manager._index}
    buckets: dict[Any, list[str]] = defaultdict(list)
    for name, entry in index.items():
        buckets[entry.kind].append(name)
    manager._index = index
    manager._all_tasks = sorted(index)
    manager._all_subtasks = sorted(
        chain.from_iterable(buckets[k] for k in (Kind.TASK, Kind.PY_TASK))
    )
    manager._all_groups = sorted(buckets[Kind.GROUP])
    manager._all_tags = sorted(buckets[Kind.TAG])
    return manager
