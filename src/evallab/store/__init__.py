"""The results store: PostgreSQL through asyncpg."""
