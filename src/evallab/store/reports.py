"""Queries for the static leaderboard site and Grafana-facing reads."""

from __future__ import annotations

from evallab.store.connection import StoreConnection

__all__ = ["ReportQueries"]


class ReportQueries(StoreConnection):
    """The store's methods for the static leaderboard site and Grafana-facing reads."""
