"""``evallab backup`` and ``evallab restore``: archives of the results database (docs/backup.md).

Registered at top level in :mod:`evallab.cli.app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evallab.cli.console import console

__all__ = ["app"]

app = typer.Typer(help="Back up and restore the results database.", no_args_is_help=True)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@app.command("backup")
def backup(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the archive [default: <lab home>/backups]."),
    ] = None,
    keep_daily: Annotated[
        int, typer.Option("--keep-daily", min=1, help="Days whose newest backup is kept.")
    ] = 7,
    keep_weekly: Annotated[
        int, typer.Option("--keep-weekly", min=0, help="ISO weeks whose newest backup is kept.")
    ] = 4,
) -> None:
    """Write a pg_dump archive of the results database plus its manifest, then rotate backups."""
    from evallab.backup import backup_and_rotate

    with console.status("Dumping the results database"):
        result, rotation = backup_and_rotate(out, daily=keep_daily, weekly=keep_weekly)
    m = result.manifest
    console.print(
        f"backup {result.archive} ({_size(m.archive.size_bytes)}, {len(m.tables)} tables, "
        f"{m.total_rows} rows; PostgreSQL {m.server_version}, pg_dump {m.pg_dump_version}) "
        f"in {result.duration_s:.1f} s"
    )
    console.print(f"manifest {result.manifest_file}")
    console.print(f"sha256 {m.archive.sha256}")
    if rotation.delete:
        console.print(
            f"rotation kept {len(rotation.keep)} backup(s) and deleted {len(rotation.delete)}: "
            + ", ".join(b.archive.name for b in rotation.delete)
        )


@app.command("restore")
def restore(
    archive: Annotated[Path, typer.Argument(help="A .dump file written by `evallab backup`.")],
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            help="Empty database to restore into [default: the configured results database].",
        ),
    ] = None,
) -> None:
    """Restore a backup into an EMPTY database and verify every table against its manifest."""
    from evallab.backup import restore_backup
    from evallab.store.db import database, redact

    if dsn is None:
        with database() as found, console.status("Restoring"):
            result = restore_backup(archive, found)
        target = found
    else:
        with console.status("Restoring"):
            result = restore_backup(archive, dsn)
        target = dsn
    console.print(
        f"restored {archive.name} (taken {result.manifest.created_at:%Y-%m-%d %H:%M:%S} UTC) "
        f"into {redact(target)}: {result.tables} tables, {result.rows} rows, every row count "
        "and content digest matches the manifest"
    )
