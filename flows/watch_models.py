"""Scheduled polling for new model releases on the Hugging Face hub.

For labs that can't receive Hugging Face webhooks (``evallab webhook serve``), this flow polls
the repositories and authors of a watch list, and posts ``hf.model.released`` for every new
commit; prefect.yaml's trigger turns each event into a campaign run. What was seen is kept in
PostgreSQL, so restarts don't re-announce anything.

Both the poller and the webhook receiver announce through :func:`release_poster`: it posts the
event to the Prefect API and returns only once the API accepted it. A release is recorded as
announced only after that, so an event the API never got is announced again at the next poll
(the event id is derived from repo@revision: the API stores a re-announced event once).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from prefect import flow, get_run_logger, task
from prefect.client.orchestration import SyncPrefectClient
from prefect.events import Event, Resource
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

from blocks.lab import apply_worker_settings, results_database
from evallab.store import Store
from evallab.watch import (
    RELEASE_EVENT,
    ModelRelease,
    load_watchlist,
    mark_announced,
    poll_releases,
)
from evallab.webhook import AnnounceError, WebhookSetupError

__all__ = ["prefect_api_url", "release_event", "release_poster", "watch_models"]

WATCHLIST = "flows/watched_models.yaml"


def release_event(release: ModelRelease) -> Event:
    """The ``hf.model.released`` event of one release, with an id derived from repo@revision.

    Hugging Face redelivers a webhook it saw fail; with the same id, Prefect stores the event once
    and its triggers skip an id they have already seen, so a redelivery starts no second campaign.
    """
    key = f"{RELEASE_EVENT}/{release.repo_id}@{release.revision}"
    return Event(
        id=uuid.uuid5(uuid.NAMESPACE_URL, key),
        event=RELEASE_EVENT,
        resource=Resource(release.resource),
        payload=release.payload,
    )


def prefect_api_url() -> str:
    """``PREFECT_API_URL`` from the environment or the active Prefect profile.

    Raises:
        WebhookSetupError: it is not set (Prefect would start a temporary server instead).
    """
    url = PREFECT_API_URL.value()
    if not url:
        raise WebhookSetupError(
            "the webhook receiver needs a Prefect server to announce releases to, and "
            "PREFECT_API_URL is not set",
            value="PREFECT_API_URL (environment and active Prefect profile)",
            fix="export PREFECT_API_URL=http://<prefect-host>:4200/api (or `prefect config set "
            "PREFECT_API_URL=...`) naming the server that has the lab's deployments",
        )
    return str(url)


def release_poster(
    api_url: str | None = None, *, timeout: float = 10.0
) -> Callable[[ModelRelease], None]:
    """An emitter that posts ``hf.model.released`` to the Prefect API and waits for its answer.

    Unlike Prefect's ``emit_event`` (a background events worker, which drops events it can't
    send), the returned callable raises :class:`AnnounceError` unless the API accepted the event.

    Args:
        api_url: The Prefect API (default: ``PREFECT_API_URL`` from the environment or the active
            Prefect profile). Never a temporary server: it would have no deployments to trigger.
        timeout: Seconds for each HTTP exchange with the API.

    Raises:
        WebhookSetupError: no Prefect API URL is configured.
    """
    url = api_url or prefect_api_url()

    def post_release(release: ModelRelease) -> None:
        event = release_event(release)
        client = SyncPrefectClient(
            url,
            auth_string=PREFECT_API_AUTH_STRING.value(),
            api_key=PREFECT_API_KEY.value(),
            httpx_settings={"timeout": httpx.Timeout(timeout)},
        )
        try:
            with client:
                # 204 once the server has the event; any error status raises.
                client.request("POST", "/events", json=[event.model_dump(mode="json")])
        except httpx.HTTPError as exc:
            raise AnnounceError(
                f"the Prefect API did not accept the event: {type(exc).__name__}: {exc}",
                value=f"POST {url}/events",
                fix="check that the Prefect server is running and reachable at PREFECT_API_URL",
            ) from exc

    return post_release


# No task retries: the library already retries a flaky hub for a few seconds, and the next
# scheduled poll is the retry, so a hub that is down fails this run within ~15 s with its reason.
@task(name="poll-hub", timeout_seconds=120)
def poll_task(dsn: str, watchlist: str, endpoint: str | None) -> list[ModelRelease]:
    """Ask the hub for head commits and return the ones not announced yet."""
    with Store(dsn) as store:
        return poll_releases(store, load_watchlist(Path(watchlist)), endpoint=endpoint)


@task(name="announce", retries=2, retry_delay_seconds=10)
def announce_task(dsn: str, releases: list[ModelRelease]) -> None:
    """Post one event per release; record each as announced once the Prefect API accepted it.

    Raises:
        AnnounceError: the API did not accept an event (it is down, or refused it). The releases
            accepted before it are recorded; the others are announced again at the next poll.
    """
    try:
        post = release_poster()
    except WebhookSetupError as exc:
        raise AnnounceError(
            "the release watcher needs a Prefect server to announce releases to, and "
            "PREFECT_API_URL is not set",
            value="PREFECT_API_URL (environment and active Prefect profile)",
            fix="run the watch-models deployment on a worker of the lab's Prefect server",
        ) from exc
    with Store(dsn) as store:
        _announce(post, store, releases)


def _announce(
    post: Callable[[ModelRelease], None], store: Store, releases: list[ModelRelease]
) -> None:
    for index, release in enumerate(releases):
        try:
            post(release)
        except AnnounceError as exc:
            left = releases[index:]
            raise AnnounceError(
                f"could not announce {release.repo_id}@{release.revision[:12]}: {exc.what}; "
                f"{index} of {len(releases)} release(s) announced, {len(left)} left "
                "unannounced (the next poll announces them): "
                + ", ".join(f"{r.repo_id}@{r.revision[:12]}" for r in left),
                value=exc.value,
                fix=exc.fix,
            ) from exc
        mark_announced(store, [release])


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
