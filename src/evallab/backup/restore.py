"""``evallab restore``: an archive into an empty database, verified against its manifest.

The archive's sha256 is checked before anything is written; ``pg_restore`` runs in one
transaction and stops at the first error (a failed restore leaves the database empty); then
every table's row count and content digest is compared with the manifest. Owners and grants are
not restored: the restored objects belong to the user of the DSN, on whatever server that is.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evallab.backup.manifest import BackupManifest, read_manifest
from evallab.backup.tools import PgTool, find_pg_tool, run_pg_tool
from evallab.errors import BackupError
from evallab.store import Store
from evallab.store.backups import TableDigest
from evallab.store.db import redact

__all__ = ["RestoreResult", "restore_backup", "verify_against"]


@dataclass(frozen=True)
class RestoreResult:
    """A restore that matched its manifest.

    Attributes:
        manifest: The backup's manifest.
        tables: How many tables were verified.
        rows: How many rows they hold.
    """

    manifest: BackupManifest
    tables: int
    rows: int


def verify_against(manifest: BackupManifest, digests: list[TableDigest]) -> None:
    """Compare a database's table digests with a manifest.

    Raises:
        BackupError: a table is missing, extra, or differs in rows or content; the message names
            every such table.
    """
    found = {d.table: d for d in digests}
    problems = []
    for name, want in sorted(manifest.tables.items()):
        got = found.get(name)
        if got is None:
            problems.append(f"{name}: missing")
        elif got.rows != want.rows:
            problems.append(f"{name}: {got.rows} rows, the manifest says {want.rows}")
        elif got.md5 != want.md5:
            problems.append(f"{name}: content digest {got.md5} differs from {want.md5}")
    extra = sorted(set(found) - set(manifest.tables))
    problems += [f"{name}: not in the manifest" for name in extra]
    if problems:
        raise BackupError(
            "the restored database does not match the backup's manifest: " + "; ".join(problems),
            value=manifest.archive.file,
            fix="don't use this database: drop it, check the archive and its manifest (a "
            "modified manifest or archive), and restore another backup",
        )


def _restore_tool(manifest: BackupManifest, target_major: int) -> PgTool:
    if target_major < manifest.server_major:
        raise BackupError(
            f"the backup comes from PostgreSQL {manifest.server_major} and the target server runs "
            f"PostgreSQL {target_major}: PostgreSQL can't restore into an older major version",
            value=f"{manifest.server_version} -> {target_major}",
            fix=f"restore into a PostgreSQL {manifest.server_major} or newer server (the lab's "
            "embedded server is PostgreSQL 18)",
        )
    return find_pg_tool("pg_restore", target_major)


def _without_schema_entries(tool: PgTool, archive: Path, schemas: list[str]) -> Path:
    """The archive's table of contents minus its schema entries, as a list file."""
    proc = subprocess.run(
        [str(tool.path), "--list", str(archive)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BackupError(
            f"pg_restore can't read the archive: {proc.stderr.strip()[-400:]}",
            value=archive,
            fix="the archive is damaged: restore another backup",
        )
    kept = [
        line
        for line in proc.stdout.splitlines()
        if not any(f" SCHEMA - {name} " in f"{line} " for name in schemas)
    ]
    fd, name = tempfile.mkstemp(prefix="evallab-restore-", suffix=".list")
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(kept) + "\n")
    return Path(name)


def restore_backup(archive: Path, dsn: str, *, tool: PgTool | None = None) -> RestoreResult:
    """Restore ``archive`` into the empty database at ``dsn`` and verify it.

    Args:
        archive: A ``.dump`` written by ``evallab backup`` (its manifest beside it).
        dsn: The target database; it must hold no tables, views, sequences or functions.
        tool: The ``pg_restore`` to use; default: the one of the target server's major version.

    Raises:
        BackupError: the archive doesn't match its manifest, the database isn't empty, no
            suitable ``pg_restore`` exists, the restore failed (nothing kept), or the restored
            tables don't match the manifest (named).
    """
    manifest = read_manifest(archive)
    with Store(dsn) as store:
        existing = store.user_objects()
        if existing:
            shown = ", ".join(existing[:8]) + (", ..." if len(existing) > 8 else "")
            raise BackupError(
                f"the target database is not empty: it holds {len(existing)} object(s) "
                f"({shown}). A restore only goes into an empty database, so that nothing it "
                "holds is overwritten or mixed with the backup's rows",
                value=redact(dsn),
                fix="create an empty database (CREATE DATABASE evallab_restored) and pass its "
                "DSN with --dsn, or, for the embedded server, stop it and move <lab home>/pgdata "
                "aside so the next start creates an empty one",
            )
        # The lab's role owns its schema but may not create schemas: the schemas are made (or
        # found, empty) first, and pg_restore is told to skip its own CREATE SCHEMA.
        schemas = sorted({name.split(".", 1)[0] for name in manifest.tables})
        refused = store.ensure_schemas(schemas)
        if refused:
            raise BackupError(
                f"the target database has no schema {', '.join(refused)} and this role may not "
                "create it",
                value=redact(dsn),
                fix=f"have an administrator create schema {refused[0]} owned by the role of --dsn "
                "(`evallab db roles --admin-dsn ...` does it), then restore again",
            )
        target = store.server_version()
        pg_restore = tool or _restore_tool(manifest, target.major)
        listing = _without_schema_entries(pg_restore, archive, schemas)
        try:
            run_pg_tool(
                pg_restore,
                [
                    "--single-transaction",
                    "--exit-on-error",
                    "--no-owner",
                    "--no-privileges",
                    f"--use-list={listing}",
                    str(archive),
                ],
                dsn,
                what="pg_restore of the backup",
                fix="nothing was restored (one transaction); read the message above",
            )
        finally:
            listing.unlink(missing_ok=True)
        digests = store.table_digests()
    verify_against(manifest, digests)
    return RestoreResult(manifest, len(digests), sum(d.rows for d in digests))
