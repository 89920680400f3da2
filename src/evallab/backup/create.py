"""``evallab backup``: a ``pg_dump -Fc`` archive of the results database, with its manifest.

The archive and the digests in its manifest come from one exported snapshot, so a campaign that
writes during the backup can't make them disagree. Both files are written under temporary names
in the destination folder, flushed to disk and renamed: a crash or a failed ``pg_dump`` never
leaves a partial file under a final name. The manifest is renamed last (a backup is complete once
its manifest exists), and each good backup is recorded in the ``backups`` table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from evallab.backup.manifest import (
    ARCHIVE_SUFFIX,
    MANIFEST_SUFFIX,
    ArchiveInfo,
    BackupManifest,
    TableInfo,
    backup_stem,
    sha256_of,
)
from evallab.backup.retention import Rotation, rotate_backups
from evallab.backup.tools import PgTool, find_pg_tool, run_pg_tool
from evallab.errors import BackupError
from evallab.paths import lab_home
from evallab.store import Store
from evallab.store.backups import BackupRow
from evallab.store.db import redact

__all__ = ["BackupResult", "backup_and_rotate", "create_backup", "default_backup_dir"]


@dataclass(frozen=True)
class BackupResult:
    """A backup written and recorded.

    Attributes:
        archive: The ``.dump`` file.
        manifest_file: Its ``.manifest.json``.
        manifest: What the manifest holds.
        duration_s: How long the backup took.
    """

    archive: Path
    manifest_file: Path
    manifest: BackupManifest
    duration_s: float


def default_backup_dir() -> Path:
    """``<lab home>/backups``."""
    return lab_home() / "backups"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Flush ``tmp`` to disk and rename it to ``final`` (atomic within one folder)."""
    _fsync(tmp)
    os.replace(tmp, final)
    _fsync(final.parent)  # the rename itself survives a crash only once the folder is flushed


def create_backup(
    store: Store,
    out_dir: Path | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    tool: PgTool | None = None,
) -> BackupResult:
    """Dump the store's database into ``out_dir``, write the manifest, record the backup.

    Args:
        store: The results database (migrated first, so ``backups`` exists).
        out_dir: Destination folder; default ``<lab home>/backups``.
        now: The clock (names the files).
        tool: The ``pg_dump`` to use; default: the one of the server's major version.

    Raises:
        BackupError: no matching ``pg_dump``, the dump failed, or the folder can't be written;
            no file is left under a final name.
    """
    started = time.monotonic()
    folder = (out_dir or default_backup_dir()).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(
            f"the backup folder can't be created: {exc}",
            value=folder,
            fix="pass --out with a folder you can write",
        ) from exc
    store.migrate()
    server = store.server_version()
    pg_dump = tool or find_pg_tool("pg_dump", server.major)
    created_at = now()
    stem = backup_stem(created_at)
    archive, manifest_file = folder / (stem + ARCHIVE_SUFFIX), folder / (stem + MANIFEST_SUFFIX)
    if archive.exists() or manifest_file.exists():
        raise BackupError(
            "a backup with this timestamp already exists",
            value=archive,
            fix="wait a second and run the backup again",
        )
    tmp_archive = folder / f".{stem}{ARCHIVE_SUFFIX}.tmp-{os.getpid()}"
    tmp_manifest = folder / f".{stem}{MANIFEST_SUFFIX}.tmp-{os.getpid()}"

    def dump(snapshot: str) -> None:
        run_pg_tool(
            pg_dump,
            ["--format=custom", f"--snapshot={snapshot}", f"--file={tmp_archive}"],
            store.dsn,
            what="pg_dump of the results database",
            fix="read the message above; no backup file was written",
        )

    try:
        digests, _ = store.with_exported_snapshot(dump)
        manifest = BackupManifest(
            created_at=created_at,
            database=redact(store.dsn),
            server_version=server.text,
            server_major=server.major,
            pg_dump_version=pg_dump.version,
            pg_dump_major=pg_dump.major,
            archive=ArchiveInfo(
                file=archive.name,
                sha256=sha256_of(tmp_archive),
                size_bytes=tmp_archive.stat().st_size,
            ),
            tables={d.table: TableInfo(rows=d.rows, md5=d.md5) for d in digests},
        )
        tmp_manifest.write_text(manifest.model_dump_json(indent=1) + "\n")
        _publish(tmp_archive, archive)
        _publish(tmp_manifest, manifest_file)
    except BaseException as exc:
        for path in (tmp_archive, tmp_manifest):
            path.unlink(missing_ok=True)
        # The archive may already be renamed when the manifest fails: without its manifest it
        # is no backup, so it goes too.
        if not manifest_file.exists():
            archive.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BackupError(
                f"the backup couldn't be written: {exc}",
                value=folder,
                fix="free space or fix the folder's permissions; nothing was kept",
            ) from exc
        raise
    duration = round(time.monotonic() - started, 3)
    store.record_backup(
        BackupRow(
            created_at=created_at,
            path=str(archive),
            sha256=manifest.archive.sha256,
            size_bytes=manifest.archive.size_bytes,
            table_rows={name: t.rows for name, t in manifest.tables.items()},
            server_version=server.text,
            pg_dump_version=pg_dump.version,
            duration_s=duration,
        )
    )
    return BackupResult(archive, manifest_file, manifest, duration)


def backup_and_rotate(
    out_dir: Path | None = None, *, daily: int = 7, weekly: int = 4, dsn: str | None = None
) -> tuple[BackupResult, Rotation]:
    """Back up the configured database, then rotate the folder's backups (CLI and nightly flow).

    Args:
        out_dir: Destination folder; default ``<lab home>/backups``.
        daily: Days whose newest backup is kept.
        weekly: ISO weeks whose newest backup is kept.
        dsn: Back up this database instead of the configured one.
    """
    with Store.open(dsn) as store:
        result = create_backup(store, out_dir)
    return result, rotate_backups(result.archive.parent, daily=daily, weekly=weekly)
