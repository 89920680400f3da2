"""A run's folder on disk: raw outputs (Parquet), its sealed manifest, and reading it back.

An evaluation writes everything a store needs into ``runs/<run_id>/`` before anything touches the
database: ``samples.parquet``, ``outcomes.parquet``, ``results.json``, ``telemetry.parquet`` and,
last, ``run.json`` (the run row, its scores, the sha256 of every other file, and a seal over
itself; see :mod:`evallab.campaign.manifest`). A folder without ``run.json`` is an unfinished
attempt and is never stored. Ingest reads only the folder, verifies every file, and re-derives
the scores from the data files, so storing can be retried, or done later with ``evallab
ingest``, without evaluating again and without trusting what an editor may have changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from evallab.campaign.manifest import (
    MANIFEST,
    SEAL_KEY,
    canonical_sha256,
    file_checksums,
    verify_files,
    verify_seal,
)
from evallab.diskfull import describe_space, is_disk_full
from evallab.errors import DatabaseError, StorageError
from evallab.harnesses.base import HarnessResult, ScoreRow
from evallab.harnesses.rederive import check_recorded_scores, rederive_scores
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

#: Version of run.json's layout: 2 lists every file's sha256 and seals itself; folders without
#: ``"format"`` were written before (only samples.parquet and results.json carry a sha256).
FORMAT = 2
_RESTORE = (
    "restore the run folder from a backup, or re-run its campaign with --resume to evaluate the "
    "run again"
)


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
    warnings: list[str] = field(default_factory=list)
    """What could not be verified (a folder written by an earlier version of the lab)."""


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
    """Write ``run.json`` atomically: its presence means the run's folder is complete.

    It records the sha256 of every other file in the folder and seals itself (see
    :mod:`evallab.campaign.manifest`), so ingest can verify the folder wherever it is moved.
    """
    run = {
        k: (str(v) if isinstance(v, uuid.UUID | datetime) else v)
        for k, v in asdict(record).items()
        if k != "content_sha256"  # the seal below is the content's identity
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        "format": FORMAT,
        "run": run,
        "scores": [asdict(s) for s in scores],
        "files": file_checksums(out_dir),
    }
    # Sealed as it will read back (JSON round trip), so the reader computes the same hash.
    body = json.loads(json.dumps(body, default=str))
    body[SEAL_KEY] = canonical_sha256(body)
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, out_dir / MANIFEST)


def _unreadable(path: Path, kind: str, exc: Exception) -> StorageError:
    return StorageError(
        f"{path.name} of the run folder can't be read as {kind} ({type(exc).__name__}: {exc}); "
        "the file is damaged or was replaced, so nothing was stored",
        value=path,
        fix=f"{_RESTORE}; a run whose files can't be read is never stored",
    )


def _parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, "Parquet", exc) from exc


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _unreadable(path, "JSON", exc) from exc


def _record(data: Any, manifest: Path) -> tuple[RunRecord, list[ScoreRow]]:
    try:
        run = dict(data["run"])
        for key in ("run_id", "campaign_id"):
            run[key] = uuid.UUID(run[key])
        for key in ("started_at", "finished_at"):
            if run.get(key):
                run[key] = datetime.fromisoformat(run[key])
        return RunRecord(**run), [ScoreRow(**s) for s in data["scores"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError(
            f"run.json can't be read: {type(exc).__name__}: {exc}",
            value=manifest,
            fix=_RESTORE,
        ) from exc


def _verify_legacy(path: Path, expected: str) -> None:
    """A folder written before per-file manifests: only the two recorded checksums exist."""
    if not expected:
        return
    if not path.is_file():
        raise StorageError(
            f"the run folder has no {path.name}",
            value=path,
            fix="pass the run's own folder (runs/<run_id>/), restored whole from a backup",
        )
    found = sha256_file(path)
    if found != expected:
        raise StorageError(
            f"{path.name} does not match the sha256 recorded in run.json "
            f"(recorded {expected}, found {found})",
            value=path,
            fix=f"nothing was stored; {_RESTORE}",
        )


def _data_scores(
    folder: Path, record: RunRecord, recorded: list[ScoreRow]
) -> tuple[list[ScoreRow], pa.Table]:
    """The scores to store (re-derived, equal to what run.json says) and the outcomes."""
    if record.status == "failed":
        if recorded:
            raise StorageError(
                "run.json records a failed run that carries scores",
                value=folder / MANIFEST,
                fix=_RESTORE,
            )
        parquet = folder / "outcomes.parquet"
        return [], outcomes_table(_parquet(parquet) if parquet.exists() else [])
    missing = [
        n
        for n in ("results.json", "samples.parquet", "outcomes.parquet")
        if not (folder / n).is_file()
    ]
    if missing:
        raise StorageError(
            f"the run folder of a {record.status} run lacks {', '.join(missing)}, so its scores "
            "can't be re-derived",
            value=folder,
            fix=_RESTORE,
        )
    results = _json(folder / "results.json")
    samples = _parquet(folder / "samples.parquet")
    try:
        outcomes = outcomes_table(_parquet(folder / "outcomes.parquet"))
        derived = rederive_scores(record.harness, results, samples, outcomes)
        check_recorded_scores(recorded, derived)
    except StorageError as exc:
        exc.value = folder / str(exc.value)  # the rules name the file; the user needs its path
        raise
    except (KeyError, TypeError, ValueError, AttributeError, pa.ArrowException) as exc:
        raise StorageError(
            f"the data files of the run don't have the layout its harness ({record.harness}) "
            f"writes ({type(exc).__name__}: {exc})",
            value=folder,
            fix=_RESTORE,
        ) from exc
    return derived, outcomes


def read_run_dir(folder: Path) -> StoredRun:
    """Read a finished run folder back, verifying every file and re-deriving the scores.

    The folder given is what is checked (never the paths recorded when the run was written), so
    a moved or copied folder ingests as long as its files are intact.

    Raises:
        StorageError: no manifest (an unfinished attempt), a file that doesn't match it or can't
            be read, or scores in run.json that the data files don't give.
    """
    manifest = folder / MANIFEST
    if (folder / "pruned.json").is_file():
        raise StorageError(
            "the run's raw outputs were pruned by `evallab gc` (pruned.json holds its manifest "
            "and checksums); its scores and outcomes are in the database",
            value=folder,
            fix="restore the run folder from a file backup if you need the raw outputs",
        )
    if (folder / "raw.tar.zst").is_file() and not (folder / "samples.parquet").exists():
        raise StorageError(
            "the run's raw outputs were compressed by `evallab gc` into raw.tar.zst",
            value=folder,
            fix=f"unpack them first: tar --zstd -xf {folder / 'raw.tar.zst'} -C {folder}",
        )
    if not manifest.is_file():
        raise StorageError(
            "the run folder has no run.json: the run never finished writing (an interrupted or "
            "failed attempt), so there is nothing to store",
            value=folder,
            fix="pass a finished run's folder under runs/; re-run the campaign with --resume "
            "to evaluate unfinished runs",
        )
    data = _json(manifest)
    record, recorded = _record(data, manifest)
    warnings: list[str] = []
    if isinstance(data.get("files"), dict):
        verify_files(folder, data["files"])
        content = str(data.get(SEAL_KEY, ""))
    else:
        _verify_legacy(folder / "samples.parquet", record.raw_sha256)
        _verify_legacy(folder / "results.json", record.results_sha256)
        content = sha256_file(manifest)
        warnings.append(
            f"run folder {folder} was written by an earlier version of the lab, without a "
            "checksum for every file: only samples.parquet and results.json could be verified "
            "(against the checksums run.json carries); its scores were re-derived from them"
        )
    scores, outcomes = _data_scores(folder, record, recorded)
    if SEAL_KEY in data or "files" in data:
        # After the scores, so an edited score is reported by name rather than as a broken seal.
        verify_seal(folder, data)
    # Where the raw outputs are now (the folder may have moved since the run wrote it).
    if (folder / "samples.parquet").is_file():
        record.raw_path = str((folder / "samples.parquet").resolve())
    if (folder / "results.json").is_file():
        record.results_path = str((folder / "results.json").resolve())
    record.content_sha256 = content
    tel_path = folder / "telemetry.parquet"
    telemetry: list[tuple[Any, ...]] = []
    if tel_path.exists():
        telemetry = [tuple(r.values()) for r in _parquet(tel_path).to_pylist()]
    return StoredRun(record, scores, outcomes, telemetry, folder, warnings)


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
