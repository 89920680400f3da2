"""A backup's manifest: what the archive holds and how to check a restore against it.

``evallab-<UTC time>.dump`` (a ``pg_dump -Fc`` archive) comes with
``evallab-<UTC time>.manifest.json``: the server and ``pg_dump`` versions, the archive's sha256
and size, and per table its row count and content digest (see :mod:`evallab.store.backups`).
The manifest is written last, so its presence means the backup is complete.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from evallab.errors import BackupError

__all__ = [
    "ARCHIVE_SUFFIX",
    "FORMAT",
    "MANIFEST_SUFFIX",
    "ArchiveInfo",
    "BackupManifest",
    "TableInfo",
    "backup_stem",
    "manifest_path",
    "read_manifest",
    "sha256_of",
    "stem_time",
]

FORMAT = "evallab-backup/1"
ARCHIVE_SUFFIX = ".dump"
MANIFEST_SUFFIX = ".manifest.json"
_STEM_TIME = "%Y%m%dT%H%M%SZ"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableInfo(_Strict):
    """One table in the archive: its row count and content digest."""

    rows: int
    md5: str


class ArchiveInfo(_Strict):
    """The archive file: its name (beside the manifest), sha256 and size."""

    file: str
    sha256: str
    size_bytes: int


class BackupManifest(_Strict):
    """Everything needed to check a backup and a restore of it."""

    format: str = FORMAT
    created_at: datetime
    database: str
    server_version: str
    server_major: int
    pg_dump_version: str
    pg_dump_major: int
    archive: ArchiveInfo
    tables: dict[str, TableInfo]

    @property
    def total_rows(self) -> int:
        """Rows over every table."""
        return sum(t.rows for t in self.tables.values())


def backup_stem(when: datetime) -> str:
    """The file-name stem of a backup taken at ``when``: ``evallab-20260101T020000Z``."""
    return "evallab-" + when.astimezone(UTC).strftime(_STEM_TIME)


def stem_time(name: str) -> datetime | None:
    """When a backup file (archive or manifest) was taken, from its name; None if not one."""
    if not name.startswith("evallab-"):
        return None
    stamp = name.removeprefix("evallab-").split(".", 1)[0]
    try:
        return datetime.strptime(stamp, _STEM_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def manifest_path(archive: Path) -> Path:
    """The manifest beside an archive."""
    return archive.with_name(archive.name.removesuffix(ARCHIVE_SUFFIX) + MANIFEST_SUFFIX)


def sha256_of(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(archive: Path) -> BackupManifest:
    """The manifest of an archive, checked against the archive's size and sha256.

    Raises:
        BackupError: the archive or its manifest is missing, unreadable, or they don't match.
    """
    if not archive.is_file():
        raise BackupError(
            "the backup archive does not exist",
            value=archive,
            fix="pass a .dump file written by `evallab backup` (default: <lab home>/backups)",
        )
    path = manifest_path(archive)
    try:
        manifest = BackupManifest.model_validate_json(path.read_text())
    except FileNotFoundError as exc:
        raise BackupError(
            "the backup has no manifest beside it, so a restore of it can't be verified",
            value=path,
            fix="keep the .manifest.json that `evallab backup` wrote next to the archive",
        ) from exc
    except (OSError, ValidationError) as exc:
        raise BackupError(
            f"the backup's manifest can't be read: {exc}",
            value=path,
            fix="restore an older backup, or the manifest from a copy",
        ) from exc
    if manifest.format != FORMAT:
        raise BackupError(
            "the manifest is of an unknown format", value=manifest.format, fix=f"expected {FORMAT}"
        )
    actual = sha256_of(archive)
    if actual != manifest.archive.sha256:
        raise BackupError(
            f"the archive's sha256 is {actual[:16]}..., not the {manifest.archive.sha256[:16]}... "
            "its manifest records: the archive was modified or damaged",
            value=archive,
            fix="restore another backup, or this one from an intact copy",
        )
    return manifest
