"""The results store's one entry point: :class:`Store`.

Every SQL statement the lab runs lives in ``store/``; callers hold a ``Store`` for the length of
a command or a flow run (one connection) and call methods named for what they need::

    with Store.open() as store:
        keys = store.succeeded_run_keys(...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from evallab.store.analysis import AnalysisQueries
from evallab.store.backups import BackupQueries
from evallab.store.campaigns import CampaignQueries
from evallab.store.checks import CheckQueries
from evallab.store.db import database
from evallab.store.migrate import SchemaQueries
from evallab.store.pruning import PruneQueries
from evallab.store.queries import ResultQueries
from evallab.store.reports import ReportQueries
from evallab.store.watch import WatchQueries

__all__ = ["Store"]


class Store(
    CampaignQueries,
    ResultQueries,
    SchemaQueries,
    AnalysisQueries,
    CheckQueries,
    ReportQueries,
    WatchQueries,
    BackupQueries,
    PruneQueries,
):
    """The results database, one connection per store (see :class:`StoreConnection`).

    Args:
        dsn: The database's DSN; :meth:`open` finds it from the lab's configuration.
    """

    @classmethod
    @contextlib.contextmanager
    def open(cls, dsn: str | None = None) -> Iterator[Store]:
        """The configured results database (starting the embedded server if needed).

        Args:
            dsn: Use this database instead of the configured one.
        """
        if dsn is not None:
            with cls(dsn) as store:
                yield store
            return
        with database() as found, cls(found) as store:
            yield store
