"""A run's folder on disk: raw outputs (Parquet + sha256), its manifest, and reading it back.

An evaluation writes everything a store needs into ``runs/<run_id>/`` before anything touches the
database: ``samples.parquet``, ``outcomes.parquet``, ``results.json``, ``telemetry.parquet`` and,
last, ``run.json`` (the run row and its scores). A folder without ``run.json`` is an unfinished
attempt and is never stored. Ingest reads only the folder, so storing can be retried, or done
later with ``evallab ingest``, without evaluating again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from evallab.diskfull import describe_space, is_disk_full
from evallab.errors import DatabaseError, StorageError
from evallab.harnesses.base import HarnessResult, ScoreRow
from evallab.models import sha256_file
from evallab.store.ingest import outcomes_table
from evallab.store.records import RunRecord
from evallab.telemetry.sampler import TELEMETRY_COLUMNS

__all__ = [
    "MANIFEST",
    "DiskFullError",
    "RawOutputs",
    "StoredRun",
    "full_disk_stops_campaign",
    "read_run_dir",
    "stored_later",
    "write_manifest",
    "write_raw",
]

MANIFEST = "run.json"


class DiskFullError(StorageError):
    """The disk holding the runs folder is full (every later run would fail too)."""


@dataclass(frozen=True)
class RawOutputs:
    """Where a run's raw outputs are, with their checksums."""

    samples: Path
    samples_sha256: str
    results: Path
    results_sha256: str


@dataclass(frozen=True)
class StoredRun:
    """Everything ingest needs, read back from a run folder."""

    record: RunRecord
    scores: list[ScoreRow]
    outcomes: pa.Table
    telemetry: list[tuple[Any, ...]]
    folder: Path


def _telemetry_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    names = [c for c in TELEMETRY_COLUMNS if c != "run_id"]
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
    return pa.table({n: pa.array(list(col)) for n, col in zip(names, columns, strict=True)})


def write_raw(
    out_dir: Path, result: HarnessResult, telemetry: list[tuple[Any, ...]] | None = None
) -> RawOutputs:
    """Write samples, outcomes and telemetry (Parquet) and results (JSON); return checksums."""
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = out_dir / "samples.parquet"
    tmp = samples.with_suffix(".parquet.tmp")
    pq.write_table(result.samples, tmp, compression="zstd")
    tmp.replace(samples)
    pq.write_table(
        outcomes_table(result.outcomes), out_dir / "outcomes.parquet", compression="zstd"
    )
    if telemetry:
        pq.write_table(_telemetry_table(telemetry), out_dir / "telemetry.parquet")
    results = out_dir / "results.json"
    results.write_text(json.dumps(result.results_json, indent=1, default=str, sort_keys=True))
    return RawOutputs(samples, sha256_file(samples), results, sha256_file(results))


def write_manifest(out_dir: Path, record: RunRecord, scores: list[ScoreRow]) -> None:
    """Write ``run.json`` atomically: its presence means the run's folder is complete."""
    data = {
        "run": {
            k: (str(v) if isinstance(v, uuid.UUID | datetime) else v)
            for k, v in asdict(record).items()
        },
        "scores": [asdict(s) for s in scores],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, out_dir / MANIFEST)


def _verify(path: Path, expected: str, what: str) -> None:
    if not expected:
        return
    if not path.is_file():
        raise StorageError(
            f"the run folder has no {what}",
            value=path,
            fix="pass the run's own folder (runs/<run_id>/), restored whole from a backup",
        )
    if sha256_file(path) != expected:
        raise StorageError(
            f"{what} does not match the sha256 recorded in run.json",
            value=path,
            fix="the file was modified or damaged; restore the run folder from a backup",
        )


def read_run_dir(folder: Path) -> StoredRun:
    """Read a finished run folder back, verifying the raw files against their checksums.

    Raises:
        StorageError: no manifest (an unfinished attempt), or a file that doesn't match it.
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise StorageError(
            "the run folder has no run.json: the run never finished writing (an interrupted or "
            "failed attempt), so there is nothing to store",
            value=folder,
            fix="pass a finished run's folder under runs/; re-run the campaign with --resume "
            "to evaluate unfinished runs",
        )
    try:
        data = json.loads(manifest.read_text())
        run = dict(data["run"])
        for key in ("run_id", "campaign_id"):
            run[key] = uuid.UUID(run[key])
        for key in ("started_at", "finished_at"):
            if run.get(key):
                run[key] = datetime.fromisoformat(run[key])
        record = RunRecord(**run)
        scores = [ScoreRow(**s) for s in data["scores"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(
            f"run.json can't be read: {type(exc).__name__}: {exc}",
            value=manifest,
            fix="restore the run folder from a backup",
        ) from exc
    # Checked against the folder given, not the absolute paths recorded (the folder may move).
    _verify(folder / "samples.parquet", record.raw_sha256, "samples.parquet")
    _verify(folder / "results.json", record.results_sha256, "results.json")
    parquet = folder / "outcomes.parquet"
    outcomes = pq.read_table(parquet) if parquet.exists() else outcomes_table([])
    tel_path = folder / "telemetry.parquet"
    telemetry: list[tuple[Any, ...]] = []
    if tel_path.exists():
        telemetry = [tuple(r.values()) for r in pq.read_table(tel_path).to_pylist()]
    return StoredRun(record, scores, outcomes, telemetry, folder)


@contextlib.contextmanager
def full_disk_stops_campaign(out_dir: Path, label: str) -> Iterator[None]:
    """Turn a full disk met while writing a run into one clear error, and drop the partial run.

    A full disk fails every later run as well, so the policy stops the campaign instead of
    recording a failed run (whose manifest couldn't be written anyway). Finished runs are stored.
    """
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        shutil.rmtree(out_dir, ignore_errors=True)
        raise DiskFullError(
            f"the disk holding the runs folder is full ({describe_space(out_dir.parent)}); "
            f"run {label} was discarded, the runs finished before it are stored",
            value=out_dir.parent,
            fix="free space there or point EVALLAB_RUNS_DIR at a disk with room, then re-run "
            "the same command with --resume to skip the runs that already succeeded",
        ) from exc


def stored_later(exc: DatabaseError, folder: Path) -> DatabaseError:
    """The error of storing a run folder, naming the folder and the command that stores it later.

    Keeps the error's class (a lost connection stays transient, so the failure policy still
    retries the step).
    """
    return type(exc)(
        f"{exc.what.rstrip('.')}; the run's outputs are kept in its folder {folder}",
        value=folder,
        fix=f"once the database is back, store the run with `evallab ingest {folder}` (or re-run "
        "the campaign with --resume: finished runs are stored, not evaluated again)",
    )
