"""The repro window: a rerun with the same pins must reproduce its reference run's scores.

A run whose ``run_key`` (pins + config) and environment fingerprint equal an earlier valid run's
must reproduce its scores within a tolerance. Differences are stored in ``repro_violations`` and
the run is tagged :data:`NON_REPRODUCIBLE_TAG`; it stays valid (the numbers are real, just not
deterministic).
"""

from __future__ import annotations

import uuid

from evallab.store import Store
from evallab.store.checks import ReproViolation

__all__ = ["NON_REPRODUCIBLE_TAG", "ReproViolation", "find_repro_violations"]

NON_REPRODUCIBLE_TAG = "non_reproducible"


def find_repro_violations(
    store: Store, run_id: uuid.UUID, tolerance: float
) -> list[ReproViolation]:
    """Compare a run with the earliest valid run of the same ``run_key``; record differences.

    Scores are compared relative to the larger magnitude of the two (``|a-b| / max(|a|,|b|)``),
    so 0.5 % means 0.5 % of the score whichever run is larger. The reference is the *first*
    such run, not the latest: slow drift can't hide inside the tolerance step by step.

    Args:
        store: The results database.
        run_id: The run just ingested.
        tolerance: Allowed relative difference (0.005 = 0.5 %).

    Returns:
        One violation per differing (task, metric, filter); empty when the run reproduces or has
        no earlier twin.
    """
    found = store.repro_differences(run_id, tolerance)
    store.record_repro_violations(run_id, found, tag=NON_REPRODUCIBLE_TAG)
    return found
