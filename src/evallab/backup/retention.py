"""Rotation of backups: keep the newest backup of each of the last N days and M weeks.

Applied after every backup. A backup is a manifest and its archive, dated by the UTC time in
their names; files that are not backups are never touched. The periods are those that *have* a
backup (a week without backups doesn't use up a weekly slot), and the newest backup is always
kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from evallab.backup.manifest import ARCHIVE_SUFFIX, MANIFEST_SUFFIX, stem_time

__all__ = ["Backup", "Rotation", "list_backups", "plan_rotation", "rotate_backups"]


@dataclass(frozen=True)
class Backup:
    """One complete backup in a folder.

    Attributes:
        taken_at: When it was taken (from its name).
        manifest: Its manifest file.
        archive: Its archive file.
    """

    taken_at: datetime
    manifest: Path
    archive: Path


@dataclass(frozen=True)
class Rotation:
    """Which backups rotation keeps and which it deletes."""

    keep: list[Backup]
    delete: list[Backup]


def list_backups(folder: Path) -> list[Backup]:
    """Complete backups (a manifest and its archive) in ``folder``, newest first."""
    found = []
    for manifest in folder.glob("evallab-*" + MANIFEST_SUFFIX):
        taken = stem_time(manifest.name)
        archive = manifest.with_name(manifest.name.removesuffix(MANIFEST_SUFFIX) + ARCHIVE_SUFFIX)
        if taken is not None and archive.is_file():
            found.append(Backup(taken, manifest, archive))
    return sorted(found, key=lambda b: b.taken_at, reverse=True)


def plan_rotation(backups: list[Backup], *, daily: int, weekly: int) -> Rotation:
    """Keep the newest backup of each of the last ``daily`` days and ``weekly`` ISO weeks.

    Args:
        backups: The backups, in any order.
        daily: How many days (that have backups) keep their newest backup.
        weekly: How many ISO weeks (that have backups) keep their newest backup.
    """
    ordered = sorted(backups, key=lambda b: b.taken_at, reverse=True)
    keep: dict[Path, Backup] = {}
    for count, period in ((daily, "day"), (weekly, "week")):
        seen: set[tuple[int, ...]] = set()
        for b in ordered:
            if len(seen) >= count:
                break
            iso = b.taken_at.isocalendar()
            key: tuple[int, ...] = (
                (iso.year, iso.week) if period == "week" else b.taken_at.timetuple()[:3]
            )
            if key not in seen:
                seen.add(key)
                keep[b.archive] = b
    if ordered:
        keep[ordered[0].archive] = ordered[0]
    return Rotation(
        keep=[b for b in ordered if b.archive in keep],
        delete=[b for b in ordered if b.archive not in keep],
    )


def rotate_backups(folder: Path, *, daily: int = 7, weekly: int = 4) -> Rotation:
    """Delete the backups in ``folder`` that rotation doesn't keep; returns the plan carried out.

    The manifest goes first: an archive left behind by a crash in between is no longer a
    backup and is never restored by mistake.
    """
    rotation = plan_rotation(list_backups(folder), daily=daily, weekly=weekly)
    for b in rotation.delete:
        b.manifest.unlink(missing_ok=True)
        b.archive.unlink(missing_ok=True)
    return rotation
