"""The lab's one exception hierarchy.

Every error names what was wrong, the offending value, and how to fix it. The CLI is the only
place these become user-facing text (see ``cli/console.py``); library code raises, never prints.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BackupError",
    "CampaignInterrupted",
    "CanaryDriftError",
    "CodeExecutionError",
    "ComparisonError",
    "ConfigError",
    "DatabaseError",
    "EnvironmentChangedError",
    "HarnessError",
    "HubUnreachableError",
    "LabError",
    "MigrationError",
    "ModelError",
    "OrchestrationError",
    "PinError",
    "PortInUseError",
    "RuntimeLaunchError",
    "SpecError",
    "StorageError",
    "UnknownTaskError",
]


class LabError(Exception):
    """Base of every error the lab raises on purpose.

    Args:
        what: One sentence saying what went wrong.
        value: The offending value (a path, a name, a DSN with its password hidden...).
        fix: What the user can do about it.

    Attributes:
        transient: Whether the same call may succeed if repeated later (an unreachable server),
            as opposed to a permanent answer (a missing file, a refused token). The campaign's
            failure policy retries transient errors and gives up at once on the others.
    """

    exit_code = 2
    transient: ClassVar[bool] = False

    def __init__(self, what: str, *, value: object = None, fix: str = "") -> None:
        self.what = what
        self.value = value
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one-paragraph text shown to the user."""
        parts = [self.what.rstrip(".") + "."]
        if self.value is not None:
            parts.append(f"Value: {self.value!s}.")
        if self.fix:
            parts.append(f"Fix: {self.fix.rstrip('.')}.")
        return " ".join(parts)


class SpecError(LabError):
    """A campaign file is missing, malformed, or names something invalid."""


class UnknownTaskError(SpecError):
    """A benchmark names a task that no harness knows."""


class ConfigError(LabError):
    """A setting of the lab (environment variable, config file) is missing or invalid."""


class OrchestrationError(LabError):
    """Prefect is missing, or its server or the lab's flows refused an operation."""


class ModelError(LabError):
    """A model can't be found, fetched or built."""


class HubUnreachableError(ModelError):
    """The Hugging Face hub didn't answer, or answered "busy", within the lab's bounded retries.

    Transient: the same request can succeed once the network or the hub is back.
    """

    transient: ClassVar[bool] = True


class PinError(LabError):
    """A pin can't be resolved or doesn't match what is installed or running."""


class EnvironmentChangedError(PinError):
    """A driver, runtime or harness version changed while a campaign was running."""


class CanaryDriftError(LabError):
    """A runtime's canary outputs differ from the recorded baseline for its combination."""


class DatabaseError(LabError):
    """The results database can't be reached or refused an operation."""


class MigrationError(DatabaseError):
    """The schema migrations are inconsistent with what the database has applied."""


class PortInUseError(LabError):
    """A TCP port the lab wants is already taken by another process."""


class RuntimeLaunchError(LabError):
    """A model server failed to install, start, answer or stay up."""


class HarnessError(LabError):
    """An evaluation harness failed while running a benchmark."""


class StorageError(LabError):
    """Raw outputs can't be written or don't match their recorded checksum."""


class BackupError(LabError):
    """A backup can't be written, or an archive can't be restored or doesn't match its manifest."""


class CodeExecutionError(LabError):
    """Generated code can't be executed safely."""


class ComparisonError(LabError):
    """Two runs can't be compared (unknown, ambiguous, or disjoint)."""


class CampaignInterrupted(LabError):
    """The user interrupted a campaign; finished runs are kept."""

    exit_code = 130
