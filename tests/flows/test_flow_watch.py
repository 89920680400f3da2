"""New-release detection both ways: hub polling (fake hub on loopback) and the webhook receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from evallab.errors import ModelError
from evallab.watch import ModelRelease, Watchlist, mark_announced, poll_releases, release_campaign
from evallab.webhook import make_server
from tests.flows.conftest import REPO, free_port
from tests.flows.fake_hub import fake_hub

DATA = Path(__file__).parent / "data"
SECRET = "s3cret-webhook-value"
SHA1, SHA2, SHA3 = "1" * 40, "9b3a1c2d4e5f60718293a4b5c6d7e8f901234567", "3" * 40

WATCH = {
    "campaign": "deployments/demo.yaml",
    "watch": [
        {"repo": "solo/model"},
        {"author": "acme-ai", "match": "acme-ai/*-chat", "chat": True, "campaign": "c/chat.yaml"},
    ],
}


def test_polling_baselines_then_reports_each_new_commit_once(migrated_dsn: str) -> None:
    watchlist = Watchlist.model_validate(WATCH)
    with fake_hub() as hub:
        hub.push("solo/model", SHA1)
        hub.push("acme-ai/old-chat", SHA1)
        hub.push("acme-ai/tiny-base", SHA1)  # not matched by the author entry's pattern
        # First poll: what exists when the watch starts is a baseline, not a release.
        assert poll_releases(migrated_dsn, watchlist, endpoint=hub.url) == []
        assert poll_releases(migrated_dsn, watchlist, endpoint=hub.url) == []
        hub.push("solo/model", SHA2)
        hub.push("acme-ai/tiny-chat", SHA3)  # a new repository of a watched author
        hub.push("acme-ai/tiny-base", SHA2)
        found = poll_releases(migrated_dsn, watchlist, endpoint=hub.url)
        assert sorted((r.repo_id, r.revision, r.campaign, r.chat) for r in found) == [
            ("acme-ai/tiny-chat", SHA3, "c/chat.yaml", True),
            ("solo/model", SHA2, "deployments/demo.yaml", False),
        ]
        # Not yet marked announced: a failed emission is retried on the next poll.
        assert len(poll_releases(migrated_dsn, watchlist, endpoint=hub.url)) == 2
        mark_announced(migrated_dsn, found)
        assert poll_releases(migrated_dsn, watchlist, endpoint=hub.url) == []
        del hub.repos["solo/model"]
        with pytest.raises(ModelError, match="solo/model"):
            poll_releases(migrated_dsn, watchlist, endpoint=hub.url)


def test_release_campaign_replaces_models_with_the_pinned_release() -> None:
    from evallab.spec import load_campaign

    spec, _ = load_campaign(REPO / "deployments" / "demo.yaml")
    release = release_campaign(spec, "acme-ai/tiny-chat", SHA2, chat=True)
    [model] = release.models
    assert (model.source, model.repo, model.revision, model.chat, model.name) == (
        "hf",
        "acme-ai/tiny-chat",
        SHA2,
        True,
        "tiny-chat",
    )
    assert model.is_pinned and release.benchmarks == spec.benchmarks


# ------------------------------------------------------------------------------- webhook


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[ModelRelease]]]:
    emitted: list[ModelRelease] = []
    watchlist = Watchlist.model_validate(
        {"campaign": "deployments/demo.yaml", "watch": [{"author": "acme-ai", "chat": True}]}
    )
    server = make_server("127.0.0.1", 0, secret=SECRET, watchlist=watchlist, emit=emitted.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks/huggingface", emitted
    finally:
        server.shutdown()
        server.server_close()


def post(url: str, body: bytes, secret: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Webhook-Secret"] = secret
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_webhook_rejects_bad_secrets_and_announces_pushes(
    receiver: tuple[str, list[ModelRelease]],
) -> None:
    url, emitted = receiver
    push = (DATA / "hf_webhook_push.json").read_bytes()
    for secret in (None, "", "wrong", SECRET + "x", SECRET[:-1]):
        reply = post(url, push, secret)
        assert reply.status_code == 401, secret
    assert emitted == []

    reply = post(url, push, SECRET)
    assert reply.status_code == 202
    assert reply.json() == {"status": "announced", "repo": "acme-ai/tiny-chat", "revision": SHA2}
    [release] = emitted
    assert (release.repo_id, release.revision, release.source, release.chat) == (
        "acme-ai/tiny-chat",
        SHA2,
        "webhook",
        True,
    )
    assert release.resource == {
        "prefect.resource.id": "hf.model.acme-ai/tiny-chat",
        "prefect.resource.name": "acme-ai/tiny-chat",
    }
    assert release.payload["campaign"] == "deployments/demo.yaml"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ((DATA / "hf_webhook_discussion.json").read_bytes(), 200, "not a push"),
        ((DATA / "hf_webhook_branch_push.json").read_bytes(), 200, "default branch"),
        (
            (DATA / "hf_webhook_push.json").read_bytes().replace(b"acme-ai/tiny-chat", b"other/x"),
            200,
            "not on the watch list",
        ),
        (b"{not json", 400, "not JSON"),
        (
            json.dumps({"event": {"action": "update"}, "repo": {"type": "model"}}).encode(),
            422,
            "invalid webhook payload",
        ),
        (
            (DATA / "hf_webhook_push.json").read_bytes().replace(b'"version": 3', b'"version": 2'),
            422,
            "webhook.version",
        ),
    ],
)
def test_webhook_ignores_or_refuses_what_is_not_a_release(
    receiver: tuple[str, list[ModelRelease]], body: bytes, status: int, needle: str
) -> None:
    url, emitted = receiver
    reply = post(url, body, SECRET)
    assert reply.status_code == status
    assert needle in json.dumps(reply.json())
    assert emitted == []


# --------------------------------------------------------------- events in a real Prefect API


def released_events(api_url: str, repo: str, timeout: float = 45) -> list[dict[str, Any]]:
    """hf.model.released events for ``repo`` recorded by the Prefect server (waits for them)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.post(
            f"{api_url}/events/filter",
            json={
                "filter": {
                    "event": {"name": ["hf.model.released"]},
                    "resource": {"id": [f"hf.model.{repo}"]},
                },
                "limit": 50,
            },
            timeout=10,
        )
        reply.raise_for_status()
        events = reply.json()["events"]
        if events or time.monotonic() > deadline:
            return list(events)
        time.sleep(1)


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
    [event] = released_events(str(PREFECT_API_URL.value()), "flowtest/model")
    assert event["payload"]["revision"] == SHA2
    assert event["resource"]["prefect.resource.name"] == "flowtest/model"


@pytest.mark.usefixtures("prefect_harness")
def test_webhook_serve_command_emits_the_prefect_event(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value())
    watchlist = tmp_path / "watch.yaml"
    watchlist.write_text("campaign: deployments/demo.yaml\nwatch:\n  - author: acme-ai\n")
    port = free_port()
    env = {**os.environ, "PREFECT_API_URL": api, "EVALLAB_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evallab.cli",
            "webhook",
            "serve",
            "--port",
            str(port),
            "--watchlist",
            str(watchlist),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        push = (DATA / "hf_webhook_push.json").read_bytes()
        assert post(f"{url}/webhooks/huggingface", push, "nope").status_code == 401
        assert post(f"{url}/webhooks/huggingface", push, SECRET).status_code == 202
        [event] = released_events(api, "acme-ai/tiny-chat")
        assert event["payload"]["revision"] == SHA2 and event["payload"]["source"] == "webhook"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_webhook_serve_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVALLAB_WEBHOOK_SECRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "evallab.cli", "webhook", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "needs a secret" in proc.stderr and "EVALLAB_WEBHOOK_SECRET" in proc.stderr
