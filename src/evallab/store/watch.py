"""Queries for the model watcher and the canary's baselines.

The watcher's tables come from ``sql/migrations/0003_model_watch.sql``; the canary's rows live in
``canaries`` (one row per prompt per session check).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

import asyncpg

from evallab.store.connection import StoreConnection

__all__ = ["CanaryBaseline", "CanaryRow", "SeenRevision", "WatchQueries"]


class SeenRevision(Protocol):
    """A repository's commit as the hub reported it (the watcher's ``HubHead``)."""

    @property
    def repo_id(self) -> str: ...

    @property
    def revision(self) -> str: ...

    @property
    def last_modified(self) -> datetime | None: ...


class _Released(SeenRevision, Protocol):
    """An announced release: a revision and which detector found it (``poll``/``webhook``)."""

    @property
    def source(self) -> str: ...


H = TypeVar("H", bound=SeenRevision)


@dataclass(frozen=True)
class CanaryRow:
    """One prompt's canary outcome as stored in ``canaries``."""

    campaign_id: uuid.UUID
    combo_key: str
    canary_version: str
    prompt_id: str
    output_hash: str
    logprob_hash: str
    is_baseline: bool
    matches_baseline: bool | None
    model_name: str
    model_revision: str
    quant: str
    runtime_label: str
    runtime_version: str
    gpu_name: str
    logprob_decimals: int
    n_tokens: int


@dataclass(frozen=True)
class CanaryBaseline:
    """A combination's current (not retired) baseline, as ``evallab canary baseline`` lists it."""

    combo_key: str
    canary_version: str
    model_name: str
    model_revision: str
    quant: str
    runtime_label: str
    runtime_version: str
    gpu_name: str
    recorded: datetime
    prompts: int


class WatchQueries(StoreConnection):
    """The store's methods for the model watcher and the canary's baselines."""

    # ----------------------------------------------------------------------------- watcher

    def unseen_revisions(self, sources: Sequence[tuple[str, Sequence[H]]]) -> list[list[H] | None]:
        """Per watch source, the heads the database hasn't seen; record first polls as baselines.

        One transaction over all sources, in order. A source polled for the first time stores
        its heads as seen-but-not-released (what exists when a watch starts is not a release)
        and gets ``None``; a known source gets its unseen heads (possibly none). Every source's
        ``last_polled_at`` is updated. Unseen heads are *not* recorded: call
        :meth:`mark_released` once they were announced.

        Args:
            sources: (source key, its current heads) per watch entry.
        """

        async def work(conn: asyncpg.Connection) -> list[list[H] | None]:
            out: list[list[H] | None] = []
            async with conn.transaction():
                for key, found in sources:
                    known = await conn.fetchval(
                        "SELECT count(*) FROM model_watch_sources WHERE source = $1", key
                    )
                    seen = {
                        (r["repo_id"], r["revision"])
                        for r in await conn.fetch(
                            "SELECT repo_id, revision FROM model_revisions_seen "
                            "WHERE repo_id = ANY($1)",
                            [h.repo_id for h in found],
                        )
                    }
                    new = [h for h in found if (h.repo_id, h.revision) not in seen]
                    if not known:
                        await conn.executemany(
                            "INSERT INTO model_revisions_seen (repo_id, revision, last_modified, "
                            "source, released) VALUES ($1, $2, $3, $4, false) "
                            "ON CONFLICT DO NOTHING",
                            [(h.repo_id, h.revision, h.last_modified, key) for h in new],
                        )
                        out.append(None)
                    else:
                        out.append(new)
                    await conn.execute(
                        "INSERT INTO model_watch_sources (source) VALUES ($1) "
                        "ON CONFLICT (source) DO UPDATE SET last_polled_at = now()",
                        key,
                    )
            return out

        return self.run(work)

    def mark_released(self, releases: Sequence[_Released]) -> None:
        """Mark announced releases as seen, so the next poll doesn't announce them again."""
        rows = [(r.repo_id, r.revision, r.last_modified, r.source) for r in releases]

        async def work(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                "INSERT INTO model_revisions_seen (repo_id, revision, last_modified, source, "
                "released) VALUES ($1, $2, $3, $4, true) ON CONFLICT DO NOTHING",
                rows,
            )

        self.run(work)

    # ------------------------------------------------------------------------------ canary

    def canary_baseline(self, combo_key: str, canary_version: str) -> dict[str, tuple[str, str]]:
        """The combination's current baseline: prompt id -> (output hash, logprob hash).

        Empty when the combination has none (never checked, or its baseline was retired).
        """

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                """
                SELECT DISTINCT ON (prompt_id) prompt_id, output_hash, logprob_hash
                  FROM canaries
                 WHERE combo_key = $1 AND canary_version = $2 AND is_baseline
                   AND retired_at IS NULL
                 ORDER BY prompt_id, created_at DESC
                """,
                combo_key,
                canary_version,
            )

        return {r["prompt_id"]: (r["output_hash"], r["logprob_hash"]) for r in self.run(work)}

    def add_canary_rows(self, rows: Sequence[CanaryRow]) -> None:
        """Store one session check's rows (one per prompt)."""
        values = [
            (
                r.campaign_id,
                r.combo_key,
                r.canary_version,
                r.prompt_id,
                r.output_hash,
                r.logprob_hash,
                r.is_baseline,
                r.matches_baseline,
                r.model_name,
                r.model_revision,
                r.quant,
                r.runtime_label,
                r.runtime_version,
                r.gpu_name,
                r.logprob_decimals,
                r.n_tokens,
            )
            for r in rows
        ]

        async def work(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                """
                INSERT INTO canaries (campaign_id, combo_key, canary_version, prompt_id,
                                      output_hash, logprob_hash, is_baseline, matches_baseline,
                                      model_name, model_revision, quant, runtime_label,
                                      runtime_version, gpu_name, logprob_decimals, n_tokens)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                """,
                values,
            )

        self.run(work)

    def retire_canary_baselines(
        self,
        *,
        model: str | None = None,
        runtime: str | None = None,
        combo_key: str | None = None,
    ) -> int:
        """Retire current baselines (all, or those matching the filters); returns how many rows.

        Old rows are kept, marked ``retired_at``.
        """

        async def work(conn: asyncpg.Connection) -> str:
            return await conn.execute(
                """
                UPDATE canaries SET retired_at = now()
                 WHERE is_baseline AND retired_at IS NULL
                   AND ($1::text IS NULL OR model_name = $1)
                   AND ($2::text IS NULL OR runtime_label = $2)
                   AND ($3::text IS NULL OR combo_key = $3)
                """,
                model,
                runtime,
                combo_key,
            )

        return int(self.run(work).split()[-1])

    def current_canary_baselines(
        self, *, model: str | None = None, runtime: str | None = None
    ) -> list[CanaryBaseline]:
        """Baselines not retired, per combination, ordered by model and runtime label."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                """
                SELECT combo_key, canary_version, model_name, model_revision, quant,
                       runtime_label, runtime_version, gpu_name, min(created_at) AS recorded,
                       count(*) AS prompts
                  FROM canaries
                 WHERE is_baseline AND retired_at IS NULL
                   AND ($1::text IS NULL OR model_name = $1)
                   AND ($2::text IS NULL OR runtime_label = $2)
                 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
                 ORDER BY model_name, runtime_label
                """,
                model,
                runtime,
            )

        return [CanaryBaseline(**dict(r)) for r in self.run(work)]
