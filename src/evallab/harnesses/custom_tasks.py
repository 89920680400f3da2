"""The user's own lm-eval tasks (``tasks_custom/``): staging, hashing, data-path resolution.

lm-eval resolves a relative ``dataset_kwargs.data_files`` path against the *current directory*.
The lab instead resolves it against the task YAML's own folder, by staging a copy of the tasks
folder with those paths made absolute.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CustomTask",
    "YamlProblem",
    "discover",
    "stage",
    "tasks_commit",
    "tasks_sha256",
    "yaml_problems",
]


class _Tagged:
    """A YAML value with a custom tag (lm-eval's ``!function``), kept verbatim."""

    def __init__(self, tag: str, value: str) -> None:
        self.tag = tag
        self.value = value


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


def _construct_tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> _Tagged:
    return _Tagged("!" + suffix, str(loader.construct_scalar(node)))  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _construct_tagged)
_Dumper.add_representer(_Tagged, lambda d, t: d.represent_scalar(t.tag, t.value))


@dataclass(frozen=True)
class CustomTask:
    """A task YAML found under the custom tasks folder."""

    name: str
    path: Path
    config: dict[str, Any]

    @property
    def output_type(self) -> str:
        return str(self.config.get("output_type", "generate_until"))

    def data_files(self) -> list[Path]:
        """Local data files the task reads, resolved against the YAML's folder."""
        kwargs = self.config.get("dataset_kwargs") or {}
        files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
        out: list[Path] = []
        for value in _iter_paths(files):
            p = Path(value)
            out.append(p if p.is_absolute() else (self.path.parent / p).resolve())
        return out


def _iter_paths(files: Any) -> list[str]:
    if files is None:
        return []
    if isinstance(files, str):
        return [files]
    if isinstance(files, list):
        return [str(f) for f in files]
    if isinstance(files, dict):
        return [p for v in files.values() for p in _iter_paths(v)]
    return []


def _absolutize(files: Any, base: Path) -> Any:
    if isinstance(files, str):
        if "://" in files or Path(files).is_absolute():
            return files
        return str((base / files).resolve())
    if isinstance(files, list):
        return [_absolutize(f, base) for f in files]
    if isinstance(files, dict):
        return {k: _absolutize(v, base) for k, v in files.items()}
    return files


@dataclass(frozen=True)
class YamlProblem:
    """A task YAML that can't be read: its file, where the parser stopped, and why."""

    path: Path
    line: int | None
    column: int | None
    problem: str

    def describe(self) -> str:
        """``file, line N, column M: problem``."""
        where = f", line {self.line}, column {self.column}" if self.line is not None else ""
        return f"{self.path}{where}: {self.problem}"


def _parse(path: Path) -> tuple[Any, YamlProblem | None]:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader), None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = str(getattr(exc, "problem", None) or exc).strip()
        if mark is None:
            return None, YamlProblem(path, None, None, problem)
        return None, YamlProblem(path, mark.line + 1, mark.column + 1, problem)
    except (OSError, UnicodeDecodeError) as exc:
        return None, YamlProblem(path, None, None, f"can't be read as UTF-8 text ({exc})")


def _load(path: Path) -> dict[str, Any] | None:
    data, _ = _parse(path)
    return data if isinstance(data, dict) else None


def yaml_problems(tasks_dir: Path) -> list[YamlProblem]:
    """The task YAMLs under ``tasks_dir`` that are not valid YAML (their tasks are invisible)."""
    if not tasks_dir.is_dir():
        return []
    found = []
    for path in sorted(tasks_dir.rglob("*.yaml")):
        _, problem = _parse(path)
        if problem is not None:
            found.append(problem)
    return found


def discover(tasks_dir: Path) -> dict[str, CustomTask]:
    """Every task defined under ``tasks_dir`` (YAMLs with a ``task:`` key), by name."""
    found: dict[str, CustomTask] = {}
    if not tasks_dir.is_dir():
        return found
    for path in sorted(tasks_dir.rglob("*.yaml")):
        cfg = _load(path)
        if cfg and isinstance(cfg.get("task"), str):
            found[cfg["task"]] = CustomTask(cfg["task"], path, cfg)
    return found


def stage(tasks_dir: Path, dest: Path) -> Path:
    """Copy ``tasks_dir`` to ``dest`` with every relative ``data_files`` path made absolute.

    Returns:
        ``dest``, ready to pass to lm-eval's ``TaskManager(include_path=...)``.
    """
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(tasks_dir, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for src in sorted(tasks_dir.rglob("*.yaml")):
        cfg = _load(src)
        if not cfg:
            continue
        kwargs = cfg.get("dataset_kwargs")
        if isinstance(kwargs, dict) and "data_files" in kwargs:
            kwargs["data_files"] = _absolutize(kwargs["data_files"], src.parent)
            target = dest / src.relative_to(tasks_dir)
            target.write_text(yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, allow_unicode=True))
    return dest


def tasks_sha256(tasks_dir: Path) -> str:
    """sha256 over every file of the custom tasks folder (YAMLs, data, helper modules)."""
    h = hashlib.sha256()
    if not tasks_dir.is_dir():
        return ""
    for p in sorted(tasks_dir.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(tasks_dir).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def tasks_commit(tasks_dir: Path) -> str:
    """Git commit of the last change to the tasks folder (``-dirty`` if it has local edits)."""
    if not tasks_dir.is_dir():
        return ""
    try:
        commit = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--", "."],
            cwd=tasks_dir,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=tasks_dir,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{commit}-dirty" if commit and dirty else (commit or ("uncommitted" if dirty else ""))
