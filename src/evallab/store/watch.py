"""Queries for the model watcher and the canary's baselines."""

from __future__ import annotations

from evallab.store.connection import StoreConnection

__all__ = ["WatchQueries"]


class WatchQueries(StoreConnection):
    """The store's methods for the model watcher and the canary's baselines."""
