"""Regression checks: a score far on the worse side of its series' history.

A series is (model, quant, runtime label, task, metric, filter); its history is the earlier runs
with status ``succeeded`` (invalid runs never count). Every score's check is stored in
``score_checks``; ``v_regressions`` lists the regressions of runs that are still valid.
"""

from __future__ import annotations

import uuid

from evallab.spec import ChecksSpec
from evallab.store import Store
from evallab.store.checks import Regression

__all__ = ["Regression", "find_regressions"]


def find_regressions(store: Store, run_id: uuid.UUID, checks: ChecksSpec) -> list[Regression]:
    """Check every score of a run against its history, store the result, return regressions.

    A score regresses when at least ``checks.regression_min_history`` earlier valid runs of its
    series exist and it lies more than ``checks.regression_sigma`` standard deviations on the
    worse side of their mean (above it for lower-is-better metrics).

    Args:
        store: The results database.
        run_id: The run just ingested (its status decides nothing here; a later invalidation
            removes its regressions from ``v_regressions``).
        checks: Thresholds.

    Returns:
        The run's regressions, worst first.
    """
    return store.check_scores(run_id, checks.regression_sigma, checks.regression_min_history)
