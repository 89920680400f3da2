"""Queries for repro and regression checks, telemetry validity."""

from __future__ import annotations

from evallab.store.connection import StoreConnection

__all__ = ["CheckQueries"]


class CheckQueries(StoreConnection):
    """The store's methods for repro and regression checks, telemetry validity."""
