"""The Harness protocol and the typed rows every harness returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from evallab.models import ModelArtifact
    from evallab.runtimes.base import Capabilities, RuntimeSession
    from evallab.spec import BenchmarkSpec

__all__ = [
    "Harness",
    "HarnessRequest",
    "HarnessResult",
    "ProgressCallback",
    "SampleOutcome",
    "ScoreRow",
]


class ProgressCallback(Protocol):
    def __call__(self, done: int, total: int | None, note: str = "") -> None: ...


@dataclass(frozen=True)
class ScoreRow:
    """One aggregate score: (task, metric, filter) -> value +- stderr over n documents."""

    task: str
    metric: str
    filter: str
    value: float
    stderr: float | None
    n: int
    higher_is_better: bool | None = None


@dataclass(frozen=True)
class SampleOutcome:
    """One document's score for one metric (powers paired comparisons)."""

    task: str
    doc_id: int
    doc_hash: str
    metric: str
    filter: str
    value: float


@dataclass(frozen=True)
class HarnessRequest:
    """Everything a harness needs to run one benchmark against one runtime session."""

    benchmark: BenchmarkSpec
    model: ModelArtifact
    session: RuntimeSession
    seed: int
    out_dir: Path
    tasks_dir: Path
    base_dir: Path
    progress: ProgressCallback | None = None
    #: Run generated code without the bubblewrap sandbox when bubblewrap is missing (the user's
    #: explicit ``--allow-unsafe-code``; the run records isolation ``none``).
    allow_unsafe_code: bool = False


@dataclass
class HarnessResult:
    """What a harness produced: typed rows plus the raw per-sample table for Parquet."""

    scores: list[ScoreRow]
    outcomes: list[SampleOutcome]
    samples: pa.Table
    results_json: dict[str, Any]
    n_samples: int
    dataset_revisions: dict[str, str] = field(default_factory=dict)
    task_hashes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Harness(Protocol):
    """A kind of harness, registered by name in :mod:`evallab.harnesses`."""

    name: str

    def version(self) -> tuple[str, str]:
        """(version, commit) of the harness implementation in use."""
        ...

    def check(self, benchmark: BenchmarkSpec, tasks_dir: Path, base_dir: Path) -> None:
        """Raise UnknownTaskError/SpecError before any model is loaded."""
        ...

    def check_runtime(
        self, benchmark: BenchmarkSpec, capabilities: Capabilities, tasks_dir: Path
    ) -> None:
        """Raise SpecError if ``benchmark`` needs something a runtime with ``capabilities`` lacks.

        The one place a harness refuses a runtime (before anything starts, and again before a
        run, should a caller skip the campaign's checks).
        """
        ...

    def run(self, request: HarnessRequest) -> HarnessResult:
        """Run the benchmark and return typed results."""
        ...
