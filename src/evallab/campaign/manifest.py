"""A run folder's checksum manifest: every file's sha256 by relative path, sealed in ``run.json``.

When a run finishes, ``run.json`` records the sha256 of every other file in the folder under
``"files"`` (paths relative to the folder, so a moved or copied folder still verifies), and
``"sha256"``: the sha256 of the rest of ``run.json`` itself (its run row, scores and file list, as
canonical JSON). An edit anywhere is therefore caught: to a data file by its listed hash, to the
list or the run row by the seal. Scores are not trusted even then; ingest re-derives them from
the data files (:mod:`evallab.harnesses.rederive`).

Checksums catch damage and edits; they can't stop someone who deliberately rewrites a file and
recomputes every hash after it, since nothing here is secret.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from evallab.errors import StorageError
from evallab.models import sha256_file

__all__ = [
    "GC_FILES",
    "MANIFEST",
    "SEAL_KEY",
    "canonical_sha256",
    "file_checksums",
    "verify_files",
    "verify_seal",
]

MANIFEST = "run.json"
#: The key of ``run.json`` that holds the sha256 of the rest of it.
SEAL_KEY = "sha256"
_RESTORE = (
    "restore the run folder from a backup, or re-run its campaign with --resume to evaluate the "
    "run again"
)


def canonical_sha256(body: dict[str, Any]) -> str:
    """sha256 of ``body`` as canonical JSON (sorted keys, no spaces), without its seal key."""
    data = {k: v for k, v in body.items() if k != SEAL_KEY}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


#: Files ``evallab gc`` writes into a finished run folder (the packed raw outputs, and the index
#: of their checksums): not the run's own data, so outside its manifest; once unpacked, the run's
#: files are verified against the manifest as usual.
GC_FILES = frozenset({"packed.json", "pruned.json", "raw.tar.zst"})


def _files(folder: Path) -> list[str]:
    return sorted(
        rel
        for p in folder.rglob("*")
        if p.is_file()
        and (rel := p.relative_to(folder).as_posix()) != MANIFEST
        and rel not in GC_FILES
    )


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but ``run.json``, by path relative to ``folder``."""
    return {rel: sha256_file(folder / rel) for rel in _files(folder)}


def verify_files(folder: Path, listed: dict[str, str]) -> None:
    """Check every file of ``folder`` against ``listed`` (run.json's manifest).

    Raises:
        StorageError: a listed file is missing or changed, or a file is not listed; every such
            file is named, with the recorded and the found sha256.
    """
    problems: list[str] = []
    for rel, expected in sorted(listed.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel} is missing (recorded sha256 {expected})")
            continue
        found = sha256_file(path)
        if found != expected:
            problems.append(
                f"{rel} does not match the sha256 recorded in run.json "
                f"(recorded {expected}, found {found})"
            )
    for rel in _files(folder):
        if rel not in listed:
            problems.append(
                f"{rel} is not listed in run.json (sha256 {sha256_file(folder / rel)}): a file "
                "added after the run finished"
            )
    if problems:
        raise StorageError(
            "the run folder does not match the checksums its run wrote: " + "; ".join(problems),
            value=folder,
            fix=f"nothing was stored; {_RESTORE} (remove a file added to the folder by hand)",
        )


def verify_seal(folder: Path, body: dict[str, Any]) -> None:
    """Check ``run.json``'s own seal (the sha256 of everything else in it).

    Raises:
        StorageError: run.json was edited after the run wrote it.
    """
    recorded = str(body.get(SEAL_KEY, ""))
    found = canonical_sha256(body)
    if recorded != found:
        raise StorageError(
            "run.json was edited after its run wrote it: the sha256 sealed in it does not match "
            f"its content (recorded {recorded or 'nothing'}, found {found})",
            value=folder / MANIFEST,
            fix=f"nothing was stored; {_RESTORE}",
        )
