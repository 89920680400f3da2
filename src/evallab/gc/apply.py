"""Carrying out a gc plan: pruning and compressing run folders, then recording it in the store.

**Prune**: the folder's files are replaced by one ``pruned.json`` holding the run's manifest
(``run.json``) and every deleted file's size and sha256, and the run's row gets ``pruned_at``.
The scores and per-sample outcomes in the database are untouched.

**Compress**: every file but ``run.json`` goes into ``raw.tar.zst`` (a zstd tar; unpack with
``tar --zstd -xf raw.tar.zst``), read back and checked against the originals before they are
deleted; ``packed.json`` lists the files with their sha256, and the row gets ``compressed_at``.

Each step writes its record under a temporary name and renames it, so a crash leaves either the
old folder or the new one; a prune interrupted after writing ``pruned.json`` finishes next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from evallab.campaign.raw import MANIFEST
from evallab.errors import StorageError
from evallab.gc.plan import PACKED, GcAction, GcPlan, folder_size
from evallab.store import Store

__all__ = ["PACKED_INDEX", "PRUNED", "GcResult", "apply_gc", "compress_folder", "prune_folder"]

PRUNED = "pruned.json"
PACKED_INDEX = "packed.json"


@dataclass(frozen=True)
class GcResult:
    """What a gc run did."""

    pruned: int
    compressed: int
    freed_bytes: int


def _sha256(data: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for block in data:
        digest.update(block)
    return digest.hexdigest()


def _blocks(f: Any) -> Iterator[bytes]:
    return iter(lambda: f.read(1 << 20), b"")


def _file_sums(folder: Path, skip: set[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if rel not in skip:
            with path.open("rb") as f:
                out[rel] = {"size_bytes": path.stat().st_size, "sha256": _sha256(_blocks(f))}
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_except(folder: Path, keep: set[str]) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = str(path.relative_to(folder))
        if rel in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()


def prune_folder(folder: Path, reason: str) -> int:
    """Delete a run folder's raw outputs, keeping its manifest and checksums in ``pruned.json``.

    Returns:
        The bytes freed.
    """
    before = folder_size(folder)
    record = folder / PRUNED
    if not record.exists():  # else: an interrupted prune, whose record already holds the sums
        manifest_file = folder / MANIFEST
        manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else None
        files = _file_sums(folder, {MANIFEST})
        packed = folder / PACKED_INDEX
        if packed.exists():  # a compressed folder: the sums of the files inside the archive
            files = {**json.loads(packed.read_text())["files"], **files}
        _write_json(
            record,
            {
                "pruned_at": datetime.now(UTC).isoformat(),
                "reason": reason,
                "manifest": manifest,
                "files": files,
            },
        )
    _remove_except(folder, {PRUNED})
    return before - record.stat().st_size


def compress_folder(folder: Path) -> int:
    """Pack a run folder's files (all but ``run.json``) into ``raw.tar.zst``, verified.

    Returns:
        The bytes freed.

    Raises:
        StorageError: the archive read back doesn't match the files (they are kept).
    """
    before = folder_size(folder)
    sums = _file_sums(folder, {MANIFEST})
    tmp = folder / (PACKED + ".tmp")
    stream = pa.output_stream(str(tmp), compression="zstd")
    with stream, tarfile.open(fileobj=stream, mode="w|") as tar:
        for rel in sums:
            tar.add(folder / rel, arcname=rel, recursive=False)
    found = {}
    with (
        pa.input_stream(str(tmp), compression="zstd") as raw,
        tarfile.open(fileobj=raw, mode="r|") as tar,
    ):
        for member in tar:
            data = tar.extractfile(member)
            if data is not None:
                found[member.name] = _sha256(_blocks(data))
    if found != {rel: s["sha256"] for rel, s in sums.items()}:
        tmp.unlink(missing_ok=True)
        raise StorageError(
            "the compressed run folder doesn't read back as the files it was made from",
            value=folder,
            fix="the files were kept; check the disk, then run evallab gc again",
        )
    _write_json(folder / PACKED_INDEX, {"archive": PACKED, "files": sums})
    os.replace(tmp, folder / PACKED)
    _remove_except(folder, {MANIFEST, PACKED, PACKED_INDEX})
    return before - folder_size(folder)


def apply_gc(store: Store, plan: GcPlan) -> GcResult:
    """Carry out ``plan``, recording each run in the store right after its folder changed."""
    pruned = compressed = freed = 0
    for action in plan.actions:
        freed += _apply(store, action)
        if action.action == "prune":
            pruned += 1
        else:
            compressed += 1
    return GcResult(pruned, compressed, freed)


def _apply(store: Store, action: GcAction) -> int:
    if action.action == "prune":
        freed = prune_folder(action.folder, action.reason)
        store.mark_pruned([action.run.run_id], action.reason)
        return freed
    freed = compress_folder(action.folder)
    store.mark_compressed([action.run.run_id])
    return freed
