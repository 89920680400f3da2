"""The campaign engine's database operations: open/close a campaign, what is stored, store a run.

Methods of :class:`evallab.store.Store`; synchronous because the engine's steps are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from evallab.errors import StorageError
from evallab.store.connection import StoreConnection
from evallab.store.ingest import finish_campaign, ingest_run, insert_campaign
from evallab.store.migrate import migrate
from evallab.store.records import CampaignRecord

if TYPE_CHECKING:
    from evallab.campaign.raw import StoredRun

__all__ = ["CampaignQueries", "RunningCampaign", "StoredResults"]


async def _refuse_second_result(conn: asyncpg.Connection, stored: StoredRun) -> None:
    """A campaign holds one result per run key: another run id with it is refused."""
    record = stored.record
    if record.status not in ("succeeded", "invalid"):
        return
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


@dataclass(frozen=True)
class RunningCampaign:
    """A campaign row still marked ``running``, with the process that drives it."""

    campaign_id: uuid.UUID
    name: str
    driver: str
    driver_host: str
    driver_pid: int
    driver_started_at: datetime | None


@dataclass(frozen=True)
class StoredResults:
    """What the database already holds for a campaign's run keys."""

    keys: set[str]
    """Run keys to skip: a result in this campaign, or (resuming) a success in any campaign."""
    run_ids: set[uuid.UUID]
    """Every stored run id with one of the keys (any campaign, any status)."""


class CampaignQueries(StoreConnection):
    """The campaign engine's reads and writes."""

    def running_campaigns(self, host: str) -> list[RunningCampaign]:
        """Campaigns of ``host`` still marked ``running`` whose driver recorded its pid."""

        async def work(conn: asyncpg.Connection) -> list[RunningCampaign]:
            rows = await conn.fetch(
                "SELECT campaign_id, name, driver, driver_host, driver_pid, driver_started_at "
                "FROM campaigns WHERE status = 'running' AND driver_host = $1 "
                "AND driver_pid IS NOT NULL ORDER BY started_at",
                host,
            )
            return [RunningCampaign(**dict(r)) for r in rows]

        return self.run(work)

    def mark_campaign_crashed(self, campaign_id: uuid.UUID, reason: str) -> bool:
        """Close a ``running`` campaign whose driver is gone as ``crashed``; True if it was."""
        return self.close_if_running(campaign_id, "crashed", reason)

    def open_campaign(self, rec: CampaignRecord) -> None:
        """Migrate, then insert (or re-open) ``rec``."""

        async def work(conn: asyncpg.Connection) -> None:
            await migrate(conn, schema=self.schema)
            await insert_campaign(conn, rec)

        self.run(work)

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

    def store_run(self, stored: StoredRun, *, replace: bool = False) -> str:
        """Ingest a run read from its folder, in one transaction.

        The same content (run.json's seal) again is a no-op; other content under a stored run
        id is refused unless ``replace``, which swaps the stored run for it in the transaction.

        Returns:
            ``"stored"``, ``"unchanged"`` (already stored with the same content) or
            ``"replaced"``.

        Raises:
            StorageError: the campaign already holds a result for this run key under another id,
                or the run id is stored with other content (and not ``replace``).
            DatabaseError: the database went away or refused; nothing was written.
        """
        record = stored.record

        async def work(conn: asyncpg.Connection) -> str:
            async with conn.transaction():
                await _refuse_second_result(conn, stored)
                row = await conn.fetchrow(
                    "SELECT content_sha256, raw_sha256, results_sha256, status FROM runs "
                    "WHERE run_id = $1 FOR UPDATE",
                    record.run_id,
                )
                outcome = "stored"
                if row is not None:
                    if row["content_sha256"]:
                        same = row["content_sha256"] == record.content_sha256
                    else:  # stored before runs recorded their content: compare what they did
                        same = (row["raw_sha256"], row["results_sha256"], row["status"]) == (
                            record.raw_sha256,
                            record.results_sha256,
                            record.status,
                        )
                    if same and row["content_sha256"]:
                        return "unchanged"
                    if not same and not replace:
                        raise StorageError(
                            f"run {record.run_id} is already stored with other content (stored "
                            f"{row['status']} run, content sha256 "
                            f"{row['content_sha256'] or 'not recorded'}; this folder holds a "
                            f"{record.status} run, content sha256 {record.content_sha256})",
                            value=stored.folder,
                            fix="nothing was written; pass --replace to replace the stored run "
                            "with this folder, or ingest the folder the stored run came from",
                        )
                    outcome = "unchanged" if same else "replaced"
                await ingest_run(conn, record, stored.scores, stored.outcomes, stored.telemetry)
                return outcome

        return self.run(work)

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
