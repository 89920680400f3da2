"""Fixtures: a database seeded with a realistic history of campaigns and runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from seedlab import Seeded, seed_lab


@pytest.fixture(scope="session")
def seeded(make_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """A database of its own holding the seeded history (read-only for the tests)."""
    dsn = make_database(f"report_{uuid.uuid4().hex[:8]}")
    return asyncio.run(seed_lab(dsn, tmp_path_factory.mktemp("raw")))
