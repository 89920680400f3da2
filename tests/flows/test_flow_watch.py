"""New-release detection by hub polling (fake hub on loopback); the webhook is in test_webhook.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from evallab.errors import HubUnreachableError, ModelError
from evallab.runtimes.process import free_port
from evallab.store import Store
from evallab.watch import Watchlist, mark_announced, poll_releases, release_campaign
from tests.flows.fake_hub import fake_hub
from tests.flows.helpers import released_events
from tests.helpers import REPO

SHA1, SHA2, SHA3 = "1" * 40, "9b3a1c2d4e5f60718293a4b5c6d7e8f901234567", "3" * 40

WATCH = {
    "campaign": "deployments/demo.yaml",
    "watch": [
        {"repo": "solo/model"},
        {"author": "acme-ai", "match": "acme-ai/*-chat", "chat": True, "campaign": "c/chat.yaml"},
    ],
}


def _poll(dsn: str, watchlist: Watchlist, endpoint: str) -> list[Any]:
    with Store(dsn) as store:
        return poll_releases(store, watchlist, endpoint=endpoint)


def test_polling_baselines_then_reports_each_new_commit_once(migrated_dsn: str) -> None:
    watchlist = Watchlist.model_validate(WATCH)
    with fake_hub() as hub, Store(migrated_dsn) as store:
        hub.push("solo/model", SHA1)
        hub.push("acme-ai/old-chat", SHA1)
        hub.push("acme-ai/tiny-base", SHA1)  # not matched by the author entry's pattern
        # First poll: what exists when the watch starts is a baseline, not a release.
        assert poll_releases(store, watchlist, endpoint=hub.url) == []
        assert poll_releases(store, watchlist, endpoint=hub.url) == []
        hub.push("solo/model", SHA2)
        hub.push("acme-ai/tiny-chat", SHA3)  # a new repository of a watched author
        hub.push("acme-ai/tiny-base", SHA2)
        found = poll_releases(store, watchlist, endpoint=hub.url)
        assert sorted((r.repo_id, r.revision, r.campaign, r.chat) for r in found) == [
            ("acme-ai/tiny-chat", SHA3, "c/chat.yaml", True),
            ("solo/model", SHA2, "deployments/demo.yaml", False),
        ]
        # Not yet marked announced: a failed emission is retried on the next poll.
        assert len(poll_releases(store, watchlist, endpoint=hub.url)) == 2
        mark_announced(store, found)
        assert poll_releases(store, watchlist, endpoint=hub.url) == []
        del hub.repos["solo/model"]
        with pytest.raises(ModelError, match="solo/model"):
            poll_releases(store, watchlist, endpoint=hub.url)


def test_release_campaign_replaces_models_with_the_pinned_release() -> None:
    from evallab.spec import HubModelSpec, load_campaign

    spec, _ = load_campaign(REPO / "deployments" / "demo.yaml")
    release = release_campaign(spec, "acme-ai/tiny-chat", SHA2, chat=True)
    [model] = release.models
    assert isinstance(model, HubModelSpec)
    assert (model.source, model.repo, model.revision, model.chat, model.name) == (
        "hf",
        "acme-ai/tiny-chat",
        SHA2,
        True,
        "tiny-chat",
    )
    assert model.is_pinned and release.benchmarks == spec.benchmarks


# --------------------------------------------------------------- events in a real Prefect API


@pytest.mark.usefixtures("prefect_harness")
def test_watch_flow_emits_release_events(pg_dsn: str, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    from flows.watch_models import watch_models

    watchlist = tmp_path / "watch.yaml"
    watchlist.write_text("campaign: deployments/demo.yaml\nwatch:\n  - repo: flowtest/model\n")
    with fake_hub() as hub:
        hub.push("flowtest/model", SHA1)
        assert watch_models(watchlist=str(watchlist), endpoint=hub.url) == []
        hub.push("flowtest/model", SHA2)
        assert watch_models(watchlist=str(watchlist), endpoint=hub.url) == [
            {"repo": "flowtest/model", "revision": SHA2, "campaign": "deployments/demo.yaml"}
        ]
        assert watch_models(watchlist=str(watchlist), endpoint=hub.url) == []
    [event] = released_events(str(PREFECT_API_URL.value()), "flowtest/model", timeout=45)
    assert event["payload"]["revision"] == SHA2
    assert event["resource"]["prefect.resource.name"] == "flowtest/model"


@pytest.mark.usefixtures("prefect_harness")
def test_watch_flow_with_the_hub_down_fails_within_seconds_naming_the_url(
    pg_dsn: str, tmp_path: Path
) -> None:
    from flows.watch_models import watch_models

    watchlist = tmp_path / "watch.yaml"
    watchlist.write_text("campaign: deployments/demo.yaml\nwatch:\n  - repo: flowtest/down\n")
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    state = watch_models(watchlist=str(watchlist), endpoint=down, return_state=True)
    elapsed = time.monotonic() - started
    # The task is not retried by Prefect: the hub client's own retries take ~2 s, and the next
    # scheduled poll is the retry. Generous bound: it used to take 12 minutes.
    assert elapsed < 60, elapsed
    assert state.is_failed()
    with pytest.raises(HubUnreachableError) as err:
        state.result()
    message = err.value.message
    assert f"the Hugging Face hub at {down} can't be reached" in message
    assert "flowtest/down" in message and "ConnectError" in message
    assert "gave up after 3 attempts" in message
    assert "HF_ENDPOINT" in message and "HF_HUB_OFFLINE=1" in message


@pytest.mark.usefixtures("prefect_harness")
def test_watch_flow_marks_a_release_announced_only_once_the_api_accepted_it(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    import flows.watch_models as watch_flow
    from evallab.webhook import AnnounceError

    watchlist = tmp_path / "watch.yaml"
    watchlist.write_text("campaign: deployments/demo.yaml\nwatch:\n  - repo: flowtest/lost\n")
    watched = Watchlist.model_validate(
        {"campaign": "deployments/demo.yaml", "watch": [{"repo": "flowtest/lost"}]}
    )
    dead = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    # The flow itself reports to the harness; only its announcements go to the dead API. Its
    # task retries (2) stay, without their 10 s delays.
    monkeypatch.setattr(watch_flow, "prefect_api_url", lambda: dead)
    monkeypatch.setattr(
        watch_flow, "announce_task", watch_flow.announce_task.with_options(retry_delay_seconds=0)
    )
    with fake_hub() as hub:
        hub.push("flowtest/lost", SHA1)
        assert watch_flow.watch_models(watchlist=str(watchlist), endpoint=hub.url) == []  # baseline
        hub.push("flowtest/lost", SHA2)
        started = time.monotonic()
        state = watch_flow.watch_models(
            watchlist=str(watchlist), endpoint=hub.url, return_state=True
        )
        assert time.monotonic() - started < 60
        assert state.is_failed()
        with pytest.raises(AnnounceError) as err:
            state.result()
        message = err.value.message
        assert f"could not announce flowtest/lost@{SHA2[:12]}" in message
        assert "the Prefect API did not accept the event" in message and "ConnectError" in message
        assert "0 of 1 release(s) announced, 1 left unannounced" in message
        assert f"POST {dead}/events" in message
        # Not recorded as announced: the next poll finds it again...
        [again] = _poll(pg_dsn, watched, hub.url)
        assert (again.repo_id, again.revision) == ("flowtest/lost", SHA2)
        # ...and announces it once the API is back.
        monkeypatch.setattr(watch_flow, "prefect_api_url", lambda: str(PREFECT_API_URL.value()))
        assert watch_flow.watch_models(watchlist=str(watchlist), endpoint=hub.url) == [
            {"repo": "flowtest/lost", "revision": SHA2, "campaign": "deployments/demo.yaml"}
        ]
        assert _poll(pg_dsn, watched, hub.url) == []
    [event] = released_events(str(PREFECT_API_URL.value()), "flowtest/lost", timeout=45)
    assert event["payload"]["revision"] == SHA2
