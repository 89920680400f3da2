"""Scheduled polling for new model releases on the Hugging Face hub.

For labs that can't receive Hugging Face webhooks (``evallab webhook serve``), this flow polls
the repositories and authors of a watch list, and emits ``hf.model.released`` for every new
commit; prefect.yaml's trigger turns each event into a campaign run. What was seen is kept in
PostgreSQL, so restarts don't re-announce anything.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.events import emit_event

from blocks.lab import apply_worker_settings, results_database
from evallab.watch import (
    RELEASE_EVENT,
    ModelRelease,
    load_watchlist,
    mark_announced,
    poll_releases,
)

__all__ = ["emit_release", "watch_models"]

WATCHLIST = "flows/watched_models.yaml"


def emit_release(release: ModelRelease) -> None:
    """Emit ``hf.model.released`` for one release (the webhook receiver uses this too)."""
    emit_event(event=RELEASE_EVENT, resource=release.resource, payload=release.payload)


@task(name="poll-hub", retries=3, retry_delay_seconds=[30, 120, 600], timeout_seconds=600)
def poll_task(dsn: str, watchlist: str, endpoint: str | None) -> list[ModelRelease]:
    """Ask the hub for head commits and return the ones not announced yet."""
    return poll_releases(dsn, load_watchlist(Path(watchlist)), endpoint=endpoint)


@task(name="announce", retries=2, retry_delay_seconds=10)
def announce_task(dsn: str, releases: list[ModelRelease]) -> None:
    """Emit one event per release, then record them as announced."""
    for release in releases:
        emit_release(release)
    mark_announced(dsn, releases)


@flow(name="watch-models", log_prints=True)
def watch_models(watchlist: str = WATCHLIST, endpoint: str | None = None) -> list[dict[str, str]]:
    """Poll the hub for new commits of watched models and announce them.

    Args:
        watchlist: Watch list YAML (see docs/orchestration.md).
        endpoint: Hub URL (default ``$HF_ENDPOINT``, else huggingface.co).

    Returns:
        One ``{"repo", "revision", "campaign"}`` per announced release.
    """
    logger = get_run_logger()
    apply_worker_settings()
    with results_database() as dsn:
        releases = poll_task(dsn, watchlist, endpoint)
        if releases:
            announce_task(dsn, releases)
    for r in releases:
        logger.info("new release %s@%s -> campaign %s", r.repo_id, r.revision, r.campaign)
    return [{"repo": r.repo_id, "revision": r.revision, "campaign": r.campaign} for r in releases]
