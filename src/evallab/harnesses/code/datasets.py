"""HumanEval, HumanEval+, MBPP and MBPP+: task definitions and dataset loaders.

Each task loads from the Hugging Face hub at a pinned commit (``datasets.load_dataset(...,
revision=sha)``) or from a local file (JSONL, JSONL.gz, JSON list or Parquet) in either the hub's
schema or EvalPlus's release schema (``base_input``/``plus_input`` + ``canonical_solution``).
Every record is normalised once, here, into a :class:`CodeProblem`: the prompt the model
continues and the test code that judges the program.
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evallab.errors import HarnessError, SpecError, UnknownTaskError

__all__ = [
    "TASKS",
    "CodeProblem",
    "LoadedTask",
    "TaskDef",
    "load_task",
    "problems_from_records",
    "read_records",
]

_SHA = re.compile(r"^[0-9a-f]{40}$")

# bigcode-evaluation-harness's stop sequences (humaneval.py, mbpp.py).
HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
MBPP_STOPS = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")


@dataclass(frozen=True)
class TaskDef:
    """A code task: where its data lives and how bigcode-harness prompts and times it.

    Attributes:
        name: Task name used in campaigns and scores.
        family: ``humaneval`` (complete a function) or ``mbpp`` (docstring + one assert).
        hub_repo: Hugging Face dataset repository.
        hub_config: Dataset configuration name, if any.
        split: Split evaluated.
        timeout_s: Per-program timeout bigcode-harness uses for this task.
        stop: Stop sequences.
        expected_size: Problems in the full split (a sanity check on hub loads).
    """

    name: str
    family: Literal["humaneval", "mbpp"]
    hub_repo: str
    hub_config: str | None
    split: str
    timeout_s: float
    stop: tuple[str, ...]
    expected_size: int


TASKS: dict[str, TaskDef] = {
    t.name: t
    for t in (
        TaskDef(
            "humaneval",
            "humaneval",
            "openai/openai_humaneval",
            None,
            "test",
            3.0,
            HUMANEVAL_STOPS,
            164,
        ),
        TaskDef(
            "humanevalplus",
            "humaneval",
            "evalplus/humanevalplus",
            None,
            "test",
            20.0,
            HUMANEVAL_STOPS,
            164,
        ),
        TaskDef(
            "mbpp", "mbpp", "google-research-datasets/mbpp", "full", "test", 3.0, MBPP_STOPS, 500
        ),
        TaskDef("mbppplus", "mbpp", "evalplus/mbppplus", None, "test", 10.0, MBPP_STOPS, 378),
    )
}


@dataclass(frozen=True)
class CodeProblem:
    """One problem, normalised.

    Attributes:
        task: Task name.
        doc_id: Index in the split (the ``doc_id`` of sample outcomes).
        task_id: The dataset's own id (``HumanEval/0``, ``11``, ``Mbpp/2``).
        prompt: The text the model continues (bigcode-harness's prompt).
        tests: Test code executed after the program, in the same namespace.
        entry_point: Function under test, when known.
        canonical_program: The reference solution as a complete program, when the data has one.
        timeout_s: Per-program timeout.
    """

    task: str
    doc_id: int
    task_id: str
    prompt: str
    tests: str
    entry_point: str | None
    canonical_program: str | None
    timeout_s: float

    @property
    def doc_hash(self) -> str:
        """sha256 of the prompt and the tests: changes whenever what is measured changes."""
        return hashlib.sha256((self.prompt + "\0" + self.tests).encode()).hexdigest()


@dataclass(frozen=True)
class LoadedTask:
    """A task's problems plus where they came from."""

    task: TaskDef
    problems: list[CodeProblem]
    revision: str
    source: str


def _check_task(name: str) -> TaskDef:
    tdef = TASKS.get(name)
    if tdef is None:
        raise UnknownTaskError(
            "unknown code task", value=name, fix=f"use one of {', '.join(sorted(TASKS))}"
        )
    return tdef


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read a local data file: ``.jsonl``, ``.jsonl.gz``, ``.json`` (a list) or ``.parquet``.

    Raises:
        SpecError: missing file, unknown extension or unparsable content.
    """
    if not path.is_file():
        raise SpecError(
            "code dataset file not found", value=path, fix="check dataset_files in the campaign"
        )
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return list(pq.read_table(path).to_pylist())
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            text = fh.read()
        if name.endswith((".jsonl", ".jsonl.gz")):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if name.endswith((".json", ".json.gz")):
            data = json.loads(text)
            if isinstance(data, list):
                return data
    except (OSError, ValueError) as exc:
        raise SpecError(
            f"code dataset file can't be read: {exc}",
            value=path,
            fix="give a JSONL, JSONL.gz, JSON list or Parquet file in the task's schema",
        ) from exc
    raise SpecError(
        "code dataset file has an unknown format",
        value=path,
        fix="use .jsonl, .jsonl.gz, .json (a list of records) or .parquet",
    )


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _hub_records(tdef: TaskDef, revision: str | None) -> list[dict[str, Any]]:
    if revision is None or not _SHA.match(revision):
        raise SpecError(
            f"code task {tdef.name!r} loads from the hub but has no pinned revision",
            value=revision,
            fix=f"set dataset_revisions: {{{tdef.name}: <40-hex commit of {tdef.hub_repo}>}} "
            f"or give a local file in dataset_files",
        )
    try:
        import datasets

        ds = datasets.load_dataset(
            tdef.hub_repo, tdef.hub_config, split=tdef.split, revision=revision
        )
    except Exception as exc:  # datasets raises many kinds: network, missing revision, schema
        raise HarnessError(
            f"could not load {tdef.hub_repo}@{revision}: {type(exc).__name__}: {exc}",
            value=f"{tdef.hub_repo}@{revision}",
            fix="check network access and the revision, or give a local file in dataset_files",
        ) from exc
    return [dict(r) for r in ds]


def load_task(
    name: str, *, file: Path | None = None, revision: str | None = None, limit: int | None = None
) -> LoadedTask:
    """Load a code task's problems from a local file or the hub at a pinned revision.

    Args:
        name: ``humaneval``, ``humanevalplus``, ``mbpp`` or ``mbppplus``.
        file: Local data file (takes precedence over the hub).
        revision: Hub dataset commit sha (required without ``file``).
        limit: Keep only the first N problems.

    Returns:
        The problems, the revision label (the sha, or ``local:<sha256 of the file>``) and source.
    """
    tdef = _check_task(name)
    if file is not None:
        records = read_records(file)
        label, source = f"local:{_file_sha256(file)}", str(file)
    else:
        records = _hub_records(tdef, revision)
        label, source = str(revision), f"hf://{tdef.hub_repo}"
    problems = problems_from_records(tdef, records[:limit] if limit else records)
    return LoadedTask(tdef, problems, label, source)


def problems_from_records(tdef: TaskDef, records: Iterable[dict[str, Any]]) -> list[CodeProblem]:
    """Normalise raw records of ``tdef``'s schema into problems.

    Raises:
        SpecError: a record lacks the fields its schema needs.
    """
    out = []
    for i, rec in enumerate(records):
        try:
            if tdef.family == "humaneval":
                out.append(_humaneval_problem(tdef, i, rec))
            else:
                out.append(_mbpp_problem(tdef, i, rec))
        except KeyError as exc:
            raise SpecError(
                f"record {i} of code task {tdef.name!r} lacks field {exc}",
                value=sorted(rec),
                fix=f"give data in the schema of {tdef.hub_repo} or EvalPlus's release",
            ) from exc
    return out


def _humaneval_problem(tdef: TaskDef, i: int, rec: dict[str, Any]) -> CodeProblem:
    raw_prompt = str(rec["prompt"])
    entry = str(rec["entry_point"])
    canonical = rec.get("canonical_solution")
    canonical_program = raw_prompt + str(canonical) if canonical is not None else None
    if "base_input" in rec or "plus_input" in rec:
        if canonical_program is None:
            raise KeyError("canonical_solution")
        tests = input_tests(entry, canonical_program, _inputs(rec), float(rec.get("atol") or 0.0))
    else:
        tests = "\n" + str(rec["test"]) + "\n" + f"check({entry})"
    # bigcode-harness's `humaneval` task strips the prompt (the model continues after the """).
    return CodeProblem(
        tdef.name,
        i,
        str(rec.get("task_id", i)),
        raw_prompt.strip(),
        tests,
        entry,
        canonical_program,
        tdef.timeout_s,
    )


def _mbpp_problem(tdef: TaskDef, i: int, rec: dict[str, Any]) -> CodeProblem:
    test_list = [str(t) for t in rec.get("test_list") or []]
    if test_list:
        description = str(rec["text"] if "text" in rec else rec["prompt"])
        prompt = f'"""\n{description}\n{test_list[0]}\n"""\n'
    else:
        prompt = str(rec["prompt"])  # EvalPlus release: the docstring prompt is ready-made
    canonical = rec.get("code", rec.get("canonical_solution"))
    entry = rec.get("entry_point") or _entry_from_asserts(test_list)
    if tdef.name == "mbppplus" and "test" in rec and rec["test"]:
        tests = "\n" + str(rec["test"])  # the plus tests, not the 3 original asserts
    elif "base_input" in rec or "plus_input" in rec:
        if canonical is None or entry is None:
            raise KeyError("canonical_solution/entry_point")
        canonical_src = str(canonical)
        if "canonical_solution" in rec and "code" not in rec:
            canonical_src = prompt + canonical_src
        tests = input_tests(str(entry), canonical_src, _inputs(rec), float(rec.get("atol") or 0))
    else:
        if not test_list:
            raise KeyError("test_list")
        tests = "\n".join(test_list)
    canonical_program = str(canonical) if canonical is not None else None
    if canonical_program is not None and "canonical_solution" in rec and "code" not in rec:
        canonical_program = prompt + canonical_program
    return CodeProblem(
        tdef.name,
        i,
        str(rec.get("task_id", i)),
        prompt,
        tests,
        str(entry) if entry else None,
        canonical_program,
        tdef.timeout_s,
    )


def _entry_from_asserts(test_list: list[str]) -> str | None:
    # The first called name that is not a builtin or a module helper: ``assert set(f(x)) == ...``.
    skip = set(dir(builtins)) | {"math", "isclose", "np"}
    for t in test_list:
        for name in re.findall(r"([A-Za-z_]\w*)\s*\(", t):
            if name not in skip:
                return str(name)
    return None


def _inputs(rec: dict[str, Any]) -> list[Any]:
    inputs: list[Any] = []
    for key in ("base_input", "plus_input"):
        value = rec.get(key) or []
        if isinstance(value, str):  # some exports store them JSON-encoded
            value = json.loads(value)
        inputs.extend(value)
    return inputs


# Input-based tests, EvalPlus style: run the reference and the candidate on every input and
# compare (floats within atol, 1e-6 when the data says 0). The reference runs in its own
# namespace so the candidate's definitions can't shadow it.
_INPUT_TESTS = """
import copy as _lab_copy, json as _lab_json, math as _lab_math
_lab_ref_ns = {{"__name__": "__reference__"}}
exec({reference!r}, _lab_ref_ns)
_lab_ref = _lab_ref_ns[{entry!r}]
_lab_cand = {entry}
def _lab_is_float(x):
    return isinstance(x, float) or (
        isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, float) for v in x))
def _lab_close(out, exp, atol):
    if _lab_is_float(exp):
        atol = atol or 1e-6
        outs = out if isinstance(out, (list, tuple)) else [out]
        exps = exp if isinstance(exp, (list, tuple)) else [exp]
        return len(outs) == len(exps) and all(
            (_lab_math.isnan(e) and isinstance(o, float) and _lab_math.isnan(o))
            or _lab_math.isclose(o, e, rel_tol=0.0, abs_tol=atol) for o, e in zip(outs, exps))
    return out == exp
_lab_inputs = _lab_json.loads({inputs!r})
for _lab_i, _lab_args in enumerate(_lab_inputs):
    _lab_exp = _lab_ref(*_lab_copy.deepcopy(_lab_args))
    _lab_out = _lab_cand(*_lab_copy.deepcopy(_lab_args))
    assert _lab_close(_lab_out, _lab_exp, {atol!r}), "input #%d %r: got %r, expected %r" % (
        _lab_i, _lab_args, _lab_out, _lab_exp)
"""


def input_tests(entry: str, reference: str, inputs: list[Any], atol: float) -> str:
    """Test code comparing ``entry`` against the reference program on every input."""
    return _INPUT_TESTS.format(
        reference=reference, entry=entry, inputs=json.dumps(inputs), atol=atol
    )
