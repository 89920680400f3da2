"""The results store: PostgreSQL through asyncpg. Every SQL statement of the lab lives here.

Callers use :class:`Store` (``with Store.open() as store: ...``); nothing outside this package
imports asyncpg (a test enforces it).
"""

from evallab.store.facade import Store

__all__ = ["Store"]
