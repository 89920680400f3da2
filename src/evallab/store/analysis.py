"""Queries for comparisons between runs (selectors, outcomes, matrices)."""

from __future__ import annotations

from evallab.store.connection import StoreConnection

__all__ = ["AnalysisQueries"]


class AnalysisQueries(StoreConnection):
    """The store's methods for comparisons between runs (selectors, outcomes, matrices)."""
