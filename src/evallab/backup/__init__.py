"""Backups of the results database: archives, verified restores, rotation (docs/backup.md)."""

from evallab.backup.create import (
    BackupResult,
    backup_and_rotate,
    create_backup,
    default_backup_dir,
)
from evallab.backup.restore import RestoreResult, restore_backup
from evallab.backup.retention import Rotation, rotate_backups

__all__ = [
    "BackupResult",
    "RestoreResult",
    "Rotation",
    "backup_and_rotate",
    "create_backup",
    "default_backup_dir",
    "restore_backup",
    "rotate_backups",
]
