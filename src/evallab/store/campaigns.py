"""The campaign engine's database operations: open/close a campaign, what is stored, store a run.

Methods of :class:`evallab.store.Store`; synchronous because the engine's steps are.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from evallab.errors import StorageError
from evallab.store.connection import StoreConnection
from evallab.store.ingest import finish_campaign, ingest_run, insert_campaign
from evallab.store.migrate import migrate
from evallab.store.records import CampaignRecord

if TYPE_CHECKING:
    from evallab.campaign.raw import StoredRun

__all__ = ["CampaignQueries", "StoredResults"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another uid
    return True


async def _close_dead(conn: asyncpg.Connection, host: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT campaign_id, name, driver, driver_pid FROM campaigns "
        "WHERE status = 'running' AND driver_host = $1 AND driver_pid IS NOT NULL",
        host,
    )
    notes = []
    for row in rows:
        if _pid_alive(row["driver_pid"]):
            continue
        reason = (
            f"its driver ({row['driver'] or 'unknown'}, pid {row['driver_pid']} on {host}) "
            "ended without closing it (killed); finished runs are stored"
        )
        await conn.execute(
            "UPDATE campaigns SET status = 'crashed', status_reason = $2, "
            "finished_at = coalesce(finished_at, now()) "
            "WHERE campaign_id = $1 AND status = 'running'",
            row["campaign_id"],
            reason,
        )
        notes.append(f"campaign {row['name']} ({row['campaign_id']}) marked crashed: {reason}")
    return notes


@dataclass(frozen=True)
class StoredResults:
    """What the database already holds for a campaign's run keys."""

    keys: set[str]
    """Run keys to skip: a result in this campaign, or (resuming) a success in any campaign."""
    run_ids: set[uuid.UUID]
    """Every stored run id with one of the keys (any campaign, any status)."""


class CampaignQueries(StoreConnection):
    """The campaign engine's reads and writes."""

    def close_dead_campaigns(self, host: str) -> list[str]:
        """Mark ``running`` campaigns of ``host`` whose driver process is gone as ``crashed``."""
        return self.run(lambda conn: _close_dead(conn, host))

    def open_campaign(self, rec: CampaignRecord) -> list[str]:
        """Migrate, close the rows of dead drivers on this host, insert (or re-open) ``rec``.

        Returns notes about campaigns found crashed.
        """

        async def work(conn: asyncpg.Connection) -> list[str]:
            await migrate(conn, schema=self.schema)
            notes = await _close_dead(conn, rec.driver_host) if rec.driver_host else []
            await insert_campaign(conn, rec)
            return notes

        return self.run(work)

    def close_campaign(self, rec: CampaignRecord) -> None:
        """Record a campaign's end status, reason and time."""

        async def work(conn: asyncpg.Connection) -> None:
            await finish_campaign(conn, rec)

        self.run(work)

    def stored_results(
        self, keys: list[str], campaign_id: uuid.UUID, resume: bool
    ) -> StoredResults:
        """Which of ``keys`` are already stored (see :class:`StoredResults`)."""

        async def work(conn: asyncpg.Connection) -> StoredResults:
            rows = await conn.fetch(
                "SELECT run_id, run_key, campaign_id, status FROM runs WHERE run_key = ANY($1)",
                keys,
            )
            skip = {
                r["run_key"]
                for r in rows
                if (r["campaign_id"] == campaign_id and r["status"] in ("succeeded", "invalid"))
                or (resume and r["status"] == "succeeded")
            }
            return StoredResults(skip, {r["run_id"] for r in rows})

        return self.run(work)

    def store_run(self, stored: StoredRun) -> None:
        """Ingest a run read from its folder, in one transaction; idempotent per run id.

        Raises:
            StorageError: the campaign already holds a result for this run key under another id.
            DatabaseError: the database went away or refused; nothing was written.
        """
        record = stored.record

        async def work(conn: asyncpg.Connection) -> None:
            if record.status in ("succeeded", "invalid"):
                other = await conn.fetchval(
                    "SELECT run_id FROM runs WHERE campaign_id = $1 AND run_key = $2 "
                    "AND status IN ('succeeded', 'invalid') AND run_id <> $3",
                    record.campaign_id,
                    record.run_key,
                    record.run_id,
                )
                if other is not None:
                    raise StorageError(
                        f"campaign {record.campaign_id} already holds a result for this run "
                        f"(run {other}, same run key); storing this folder would count it twice",
                        value=stored.folder,
                        fix="nothing to do: the run is stored; compare the two folders if their "
                        "scores should differ",
                    )
            await ingest_run(conn, record, stored.scores, stored.outcomes, stored.telemetry)

        self.run(work)

    def close_if_running(self, campaign_id: uuid.UUID, status: str, reason: str) -> bool:
        """Close a campaign row still marked ``running`` (a driver that couldn't); True if so."""

        async def work(conn: asyncpg.Connection) -> bool:
            done = await conn.execute(
                "UPDATE campaigns SET status = $2, status_reason = $3, finished_at = now() "
                "WHERE campaign_id = $1 AND status = 'running'",
                campaign_id,
                status,
                reason[:2000],
            )
            return bool(done.endswith(" 1"))

        return self.run(work)
