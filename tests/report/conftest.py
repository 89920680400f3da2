"""Fixtures: a database seeded with a realistic history of campaigns and runs."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from seedlab import Seeded, seed_lab

from evallab.store.embedded import EmbeddedPostgres
from evallab.store.migrate import migrate


async def _create(server: EmbeddedPostgres, name: str) -> str:
    admin = await asyncpg.connect(f"postgresql://evallab@127.0.0.1:{server.port}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = f"postgresql://evallab@127.0.0.1:{server.port}/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


@pytest.fixture(scope="session")
def seeded(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """A database of its own holding the seeded history (read-only for the tests)."""

    async def go() -> Seeded:
        dsn = await _create(pg_server, f"report_{uuid.uuid4().hex[:8]}")
        return await seed_lab(dsn, tmp_path_factory.mktemp("raw"))

    return asyncio.run(go())
