"""Hub failures end within seconds with a message naming the URL, the repository and the fix.

Real parts: a real HTTP server on loopback (``tests/flows/fake_hub.py``) and a closed loopback
port for "the hub is down"; the lab's HTTP client, huggingface_hub's downloader and the Hugging
Face cache (in a temporary folder) all run for real.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from evallab.errors import HubUnreachableError, ModelError, PinError
from evallab.hub import HubClient, HubRetry, bound_hub_library_timeouts
from evallab.models import resolve_model
from evallab.pins import hub_resolver
from evallab.runtimes.process import free_port
from evallab.spec import HubModelSpec
from evallab.watch import Watchlist, hub_heads
from tests.flows.fake_hub import FakeHub, fake_hub

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "89abcdef0123456789abcdef0123456789abcdef"
# Far above what the bounded retries take (~2 s against a closed port), far below the minutes a
# hub outage used to hold a poll or a campaign.
BOUND_S = 30.0


@pytest.fixture(autouse=True)
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, no token, network allowed."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return cache


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with fake_hub() as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        yield running


@pytest.fixture
def down(monkeypatch: pytest.MonkeyPatch) -> str:
    """HF_ENDPOINT pointing at a loopback port nothing listens on."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    return url


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A loopback URL whose connections hang, like a host that drops packets.

    A listener that never accepts, with its accept queue already full: Linux drops further SYNs.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in [server, *fillers]:
            sock.close()


def model(revision: str = SHA, repo: str = "org/model") -> HubModelSpec:
    return HubModelSpec(source="hf", name="m", repo=repo, revision=revision)


def assert_unreachable_message(err: HubUnreachableError, url: str, repo: str) -> None:
    text = err.message
    assert url in text and repo in text
    assert "ConnectError" in text  # the underlying error
    assert "gave up after 3 attempts" in text  # bounded retries, then this error
    assert "HF_ENDPOINT" in text and "HF_TOKEN" in text and "HF_HUB_OFFLINE=1" in text
    assert err.transient


# ------------------------------------------------------------------------------ hub down


def test_unreachable_hub_fails_fast_naming_the_url_for_each_kind_of_call(down: str) -> None:
    calls = {
        "revision lookup": lambda: hub_resolver("model", "org/model", "main"),
        "model download": lambda: resolve_model(model(), Path(".")),
        "head polling": lambda: hub_heads(Watchlist.model_validate(WATCH)),
    }
    for what, call in calls.items():
        started = time.monotonic()
        with pytest.raises(HubUnreachableError) as err:
            call()
        elapsed = time.monotonic() - started
        assert elapsed < BOUND_S, what
        repo = "acme-ai" if what == "head polling" else "org/model"
        assert_unreachable_message(err.value, down, repo)
        print(f"{what}: failed in {elapsed:.2f} s")


WATCH = {"campaign": "deployments/demo.yaml", "watch": [{"author": "acme-ai"}]}


def test_a_hub_that_drops_connections_fails_within_the_bound(
    blackhole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", blackhole)
    started = time.monotonic()
    with pytest.raises(HubUnreachableError) as err:
        hub_resolver("model", "org/model", "main")
    elapsed = time.monotonic() - started
    # 3 connect attempts of 3 s each, 0.5 s and 1 s apart (the OS alone would wait ~2 min).
    assert elapsed < BOUND_S
    assert "ConnectTimeout" in err.value.message and blackhole in err.value.message
    print(f"dropped connections: failed in {elapsed:.2f} s")


def test_huggingface_hub_requests_get_the_connect_bound_too(blackhole: str) -> None:
    from huggingface_hub import get_session

    bound_hub_library_timeouts()
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        # What huggingface_hub does in many calls: timeout=None, i.e. wait for the OS.
        get_session().get(f"{blackhole}/api/models/org/model", timeout=None)
    assert type(err.value).__name__ == "ConnectTimeout"
    assert time.monotonic() - started < BOUND_S


def test_unreachable_hub_falls_back_to_the_cached_ref(down: str, hub_env: Path) -> None:
    refs = hub_env / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(SHA)
    assert hub_resolver("model", "org/model", "main") == SHA


def test_offline_without_a_cached_snapshot_says_so_without_network(
    down: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        resolve_model(model(), Path("."))
    assert not err.value.transient
    assert "HF_HUB_OFFLINE is set" in err.value.message
    assert f"hf download org/model --revision {SHA}" in err.value.message


# --------------------------------------------------------------------- permanent answers


def test_unknown_repo_or_revision_fails_at_once_without_retry(hub: FakeHub) -> None:
    hub.push("org/model", SHA)
    cases = [
        (lambda: HubClient().repo_info("model", "org/missing"), ModelError, "repository id"),
        (lambda: hub_resolver("model", "org/missing", "main"), PinError, "repository id"),
        (lambda: hub_resolver("model", "org/model", "v9"), PinError, "check the revision 'v9'"),
        (lambda: resolve_model(model(OTHER_SHA), Path(".")), ModelError, "check the revision"),
    ]
    for call, kind, fix in cases:
        hub.requests.clear()
        with pytest.raises(kind) as err:
            call()
        assert not isinstance(err.value, HubUnreachableError)
        assert not err.value.transient
        assert len(hub.requests) == 1, hub.requests  # asked once: a 404 doesn't heal by waiting
        assert hub.url in err.value.message and "HTTP 404" in err.value.message
        assert fix in err.value.message


def test_gated_model_fails_at_once_naming_the_token(hub: FakeHub) -> None:
    hub.push("org/gated", SHA, {"config.json": b"{}"})
    hub.gated.add("org/gated")
    with pytest.raises(ModelError) as err:
        resolve_model(model(repo="org/gated"), Path("."))
    assert len(hub.requests) == 1 and not err.value.transient
    assert "HTTP 401 GatedRepo" in err.value.message
    assert "set HF_TOKEN" in err.value.message and f"{hub.url}/org/gated" in err.value.message


# --------------------------------------------------------------------- transient answers


def test_503_then_200_succeeds_after_one_retry(hub: FakeHub) -> None:
    hub.push("org/model", SHA)
    hub.fail_next(503)
    assert HubClient().repo_info("model", "org/model", "main").sha == SHA
    assert len(hub.requests) == 2


def test_429_waits_for_retry_after_up_to_the_cap(hub: FakeHub) -> None:
    hub.push("org/model", SHA)
    hub.fail_next(429, headers={"Retry-After": "1"})
    started = time.monotonic()
    assert HubClient().repo_info("model", "org/model").sha == SHA
    assert time.monotonic() - started >= 1.0  # honoured
    hub.fail_next(429, headers={"Retry-After": "3600"})
    started = time.monotonic()
    assert HubClient(retry=HubRetry(retry_after_cap_s=0.2)).repo_info("model", "org/model")
    assert time.monotonic() - started < BOUND_S  # an hour was cut to the cap


def test_a_hub_failing_for_good_is_reported_as_transient_after_bounded_retries(
    hub: FakeHub,
) -> None:
    hub.push("org/model", SHA)
    hub.fail_next(503, times=10)
    with pytest.raises(HubUnreachableError) as err:
        hub_heads(Watchlist.model_validate({**WATCH, "watch": [{"repo": "org/model"}]}))
    assert len(hub.requests) == 3
    assert "is failing or busy" in err.value.message and "HTTP 503" in err.value.message


# ------------------------------------------------------------------------------ downloads


def test_download_through_the_hub_then_from_the_cache_with_the_hub_gone(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": b"weights"}
    with fake_hub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.push("org/model", SHA, files)
        hub.fail_next(503)  # the first request (the API check) is retried
        artifact = resolve_model(model(), Path("."))
        assert artifact.revision == SHA and artifact.path.is_relative_to(hub_env)
        assert (artifact.path / "model.safetensors").read_bytes() == b"weights"
    # The hub is gone now: a complete snapshot of a commit needs no network.
    again = resolve_model(model(), Path("."))
    assert (again.path, again.sha256) == (artifact.path, artifact.sha256)


def test_branch_revision_is_resolved_then_refused_or_downloaded(hub: FakeHub) -> None:
    hub.push("org/model", SHA, {"config.json": b"{}"})
    with pytest.raises(PinError, match=f"set revision: {SHA}"):
        resolve_model(model("main"), Path("."))
    artifact = resolve_model(model("main"), Path("."), allow_unpinned=True)
    assert (artifact.revision, artifact.pinned) == (SHA, False)


# ------------------------------------------------------------------ the campaign's policy


def test_the_campaign_policy_retries_an_unreachable_hub_and_stops_on_a_refusal(
    down: str, hub: FakeHub
) -> None:
    from evallab.campaign.policy import DEFAULT_POLICY, Action, Step

    with pytest.raises(HubUnreachableError) as unreachable:
        HubClient(down).repo_info("model", "org/model")
    with pytest.raises(ModelError) as missing:
        HubClient(hub.url).repo_info("model", "org/missing")
    for step in (Step.VERIFY_PINS, Step.FETCH_MODEL):
        assert DEFAULT_POLICY.decide(step, unreachable.value).action is Action.RETRY
        assert DEFAULT_POLICY.decide(step, missing.value).action is Action.STOP_CAMPAIGN
