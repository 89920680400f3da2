"""The Hugging Face webhook receiver on uvicorn: secrets, limits, deadlines, real Prefect events.

The receiver runs for real (uvicorn in a thread, or ``evallab webhook serve`` in a subprocess);
hostile clients are raw sockets so the tests control exactly which bytes are sent, and when.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from evallab.runtimes.process import free_port
from evallab.watch import ModelRelease, Watchlist
from evallab.webhook import AnnounceError, ReceiverLimits, WebhookSetupError, make_server
from tests.flows.helpers import PrefectServer, released_events

DATA = Path(__file__).parent / "data"
PUSH = (DATA / "hf_webhook_push.json").read_bytes()
SECRET = "s3cret-webhook-value"
SHA2 = "9b3a1c2d4e5f60718293a4b5c6d7e8f901234567"
HOOK = "/webhooks/huggingface"
SERVE = [sys.executable, "-m", "evallab.cli", "webhook", "serve"]
WATCHLIST = Watchlist.model_validate(
    {"campaign": "deployments/demo.yaml", "watch": [{"author": "acme-ai", "chat": True}]}
)


def push_of(repo: str, sha: str = SHA2) -> bytes:
    return PUSH.replace(b"acme-ai/tiny-chat", repo.encode()).replace(SHA2.encode(), sha.encode())


# ------------------------------------------------------------------------------- helpers


@contextmanager
def receiver(
    emit: Callable[[ModelRelease], None], limits: ReceiverLimits | None = None
) -> Iterator[int]:
    """The real receiver (uvicorn) in a thread on a free loopback port; yields the port."""
    server = make_server(
        "127.0.0.1", 0, secret=SECRET, watchlist=WATCHLIST, emit=emit, limits=limits
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.01)
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()


def post(port: int, body: bytes, secret: str | None, path: str = HOOK) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Webhook-Secret"] = secret
    return httpx.post(f"http://127.0.0.1:{port}{path}", content=body, headers=headers, timeout=30)


@dataclass
class Raw:
    """What a raw socket read back: the response bytes, and when the server closed."""

    data: bytes
    seconds: float  # from the last byte sent to the server closing the connection

    @property
    def status(self) -> int:
        return int(self.data.split(b" ", 2)[1]) if self.data else 0

    @property
    def json(self) -> Any:
        return json.loads(self.data.split(b"\r\n\r\n", 1)[1])


def head(
    *, secret: str | None = SECRET, length: int | None = None, extra: str = "", path: str = HOOK
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if secret is not None:
        lines.append(f"X-Webhook-Secret: {secret}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_to_close(sock: socket.socket, sent_at: float, timeout: float = 30) -> Raw:
    """Read until the server closes the connection (a test failure if it doesn't in time)."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return Raw(b"".join(chunks), time.perf_counter() - sent_at)


def raw(port: int, data: bytes, timeout: float = 30) -> Raw:
    """Send ``data`` (and nothing more, without closing our side), then read until closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_to_close(sock, time.perf_counter(), timeout)


# ---------------------------------------------------------------- replies and validation


def test_right_secret_announces_and_anything_else_is_401_without_emitting() -> None:
    emitted: list[ModelRelease] = []
    with receiver(emitted.append) as port:
        for secret in (None, "", "wrong", SECRET + "x", SECRET[:-1]):
            reply = post(port, PUSH, secret)
            assert reply.status_code == 401, secret
            assert reply.headers["connection"] == "close"
        assert emitted == []

        reply = post(port, PUSH, SECRET)
        assert reply.status_code == 202
        assert reply.json() == {
            "status": "announced",
            "repo": "acme-ai/tiny-chat",
            "revision": SHA2,
        }
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        assert post(port, PUSH, SECRET, path="/elsewhere").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}{HOOK}").status_code == 405
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
        (push_of("other/x"), 200, "not on the watch list"),
        (b"{not json", 400, "not JSON"),
        (
            json.dumps({"event": {"action": "update"}, "repo": {"type": "model"}}).encode(),
            422,
            "invalid webhook payload",
        ),
        (PUSH.replace(b'"version": 3', b'"version": 2'), 422, "webhook.version"),
    ],
)
def test_what_is_not_a_release_is_ignored_or_refused(body: bytes, status: int, needle: str) -> None:
    emitted: list[ModelRelease] = []
    with receiver(emitted.append) as port:
        reply = post(port, body, SECRET)
    assert reply.status_code == status
    assert needle in json.dumps(reply.json())
    assert emitted == []


def test_each_request_logs_one_line_with_method_path_status_repo_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with receiver(lambda release: None) as port, caplog.at_level(logging.INFO, "evallab.webhook"):
        assert post(port, PUSH, SECRET).status_code == 202
        assert post(port, push_of("other/x"), SECRET).status_code == 200
        assert post(port, PUSH, "wrong").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/nope").status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "evallab.webhook"]
    assert len(lines) == 4, lines
    assert [line.split(" ms")[0].rsplit(" ", 1)[0] for line in lines] == [
        f"POST {HOOK} 202 repo=acme-ai/tiny-chat",
        f"POST {HOOK} 200 repo=other/x",
        f"POST {HOOK} 401 repo=-",
        "GET /nope 404 repo=-",
    ]
    for line in lines:
        float(line.split(" ms")[0].rsplit(" ", 1)[1])  # the duration, in milliseconds
    assert lines[0].endswith(f"(announced {SHA2})")
    assert "not on the watch list" in lines[1]


# ------------------------------------------------------- hostile or broken clients, limits


def test_wrong_secret_is_refused_from_the_headers_before_any_body_arrives() -> None:
    emitted: list[ModelRelease] = []
    with receiver(emitted.append) as port:
        # A big declared body that never comes, and a client asking permission to send it:
        # the 401 must come at once, without a "100 Continue" inviting the body.
        reply = raw(port, head(secret="wrong", length=900_000, extra="Expect: 100-continue\r\n"))
    assert reply.data.startswith(b"HTTP/1.1 401 "), reply.data[:100]
    assert b"100 Continue" not in reply.data
    assert reply.json == {"error": "missing or wrong X-Webhook-Secret"}
    assert reply.seconds < 2, reply.seconds  # answered and closed; the body was never awaited
    assert emitted == []


def test_300_stalled_wrong_secret_uploads_are_all_refused_promptly() -> None:
    emitted: list[ModelRelease] = []
    with receiver(emitted.append) as port:
        start = time.perf_counter()
        socks = []
        try:
            for _ in range(300):
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                socks.append(sock)
                sock.sendall(head(secret="wrong", length=500_000))  # then nothing
            replies = [read_to_close(sock, start) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        elapsed = time.perf_counter() - start
        # The receiver is free again at once: a real delivery goes through.
        assert post(port, PUSH, SECRET).status_code == 202
    statuses = [r.status for r in replies]
    # Each is refused from its headers: 401, or uvicorn's 503 while more than
    # ReceiverLimits.max_connections are open at the same instant. None waits for its body.
    assert set(statuses) <= {401, 503} and statuses.count(401) > 0, statuses
    print(
        f"300 stalled wrong-secret uploads refused and closed in {elapsed:.3f} s "
        f"({statuses.count(401)} x 401, {statuses.count(503)} x 503)"
    )
    assert elapsed < 10, elapsed  # the threaded server held them for 60 s
    assert len(emitted) == 1


def test_over_the_connection_limit_deliveries_get_503_until_slots_free_up() -> None:
    limits = ReceiverLimits(max_connections=3, body_timeout=30)
    with receiver(lambda release: None, limits) as port:
        held = []
        try:
            for _ in range(2):  # authentic, but the body never comes: each holds a slot
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                held.append(sock)
                sock.sendall(head(length=len(PUSH), extra="Expect: 100-continue\r\n"))
                # "100 Continue": the request is in progress, waiting for its body.
                assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
            refused = post(port, PUSH, SECRET)  # the third open connection
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 10
        while (accepted := post(port, PUSH, SECRET)).status_code == 503:
            assert time.monotonic() < deadline, "the slots were not freed"
    assert (refused.status_code, refused.text) == (503, "Service Unavailable")
    assert accepted.status_code == 202


def test_declared_or_streamed_oversize_bodies_are_413() -> None:
    limits = ReceiverLimits(max_body=10_000)
    with receiver(lambda release: None, limits) as port:
        # Declared too large: refused before reading, nothing of the body sent.
        declared = raw(port, head(length=2_000_000))
        # Chunked (no length): refused once the count passes the limit.
        chunk = b"x" * 6_000
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2))
        streamed = raw(port, head(extra="Transfer-Encoding: chunked\r\n") + body)
        # Just under the limit is read (and is no JSON).
        under = raw(port, head(length=10_000, extra="Connection: close\r\n") + b"y" * 10_000)
    assert (declared.status, streamed.status, under.status) == (413, 413, 400)
    assert declared.json == {"error": "body over 10000 bytes"}
    assert declared.seconds < 2, declared.seconds


def test_a_slow_body_is_cut_off_with_408_at_the_deadline() -> None:
    limits = ReceiverLimits(body_timeout=0.5)
    with receiver(lambda release: None, limits) as port:
        reply = raw(port, head(length=len(PUSH)) + PUSH[:100])  # the rest never comes
    assert reply.status == 408
    assert reply.json == {"error": "the body did not arrive within 0.5 s"}
    assert 0.4 < reply.seconds < 5, reply.seconds


def test_slow_or_oversized_headers_are_cut_off() -> None:
    limits = ReceiverLimits(header_timeout=0.5, max_header_bytes=4096)
    with receiver(lambda release: None, limits) as port:
        silent = raw(port, b"")  # connects, sends nothing
        partial = raw(port, b"POST /webhooks/hugging")  # half a request line, then nothing
        huge = raw(port, head(length=2)[:-2] + f"X-Padding: {'p' * 8000}".encode())
        # A kept-alive connection gets the same header deadline for its next request.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            kept = read_to_close(sock, time.perf_counter())
    assert (silent.data, partial.data) == (b"", b"")  # closed without a reply...
    assert 0.4 < silent.seconds < 5 and 0.4 < partial.seconds < 5  # ...at the deadline
    assert huge.status == 400 and huge.seconds < 0.4  # refused before the header deadline
    assert kept.status == 200 and kept.seconds < 5


def test_an_emitter_that_fails_or_hangs_gives_503() -> None:
    def refuses(release: ModelRelease) -> None:
        raise AnnounceError("the Prefect API did not accept the event", value="POST x/events")

    gate = threading.Event()

    def hangs(release: ModelRelease) -> None:
        gate.wait(30)

    with receiver(refuses) as port:
        failed = post(port, PUSH, SECRET)
    with receiver(hangs, ReceiverLimits(emit_timeout=0.5)) as port:
        start = time.perf_counter()
        silent = post(port, PUSH, SECRET)
        seconds = time.perf_counter() - start
        gate.set()
    assert failed.status_code == 503
    assert "did not accept the event" in failed.json()["error"]
    assert silent.status_code == 503
    assert "did not confirm the event within 0.5 s" in silent.json()["error"]
    assert 0.4 < seconds < 5, seconds


# ------------------------------------------------------------------- a real Prefect server


@pytest.mark.prefect_server
def test_202_means_the_event_is_in_the_prefect_api_once_even_if_redelivered(
    prefect_server: PrefectServer,
) -> None:
    from flows.watch_models import release_event, release_poster

    repo = "acme-ai/thread-chat"
    with receiver(release_poster(prefect_server.url)) as port:
        first = post(port, push_of(repo), SECRET)
        again = post(port, push_of(repo), SECRET)  # Hugging Face redelivers
        marker = post(port, push_of("acme-ai/marker-chat"), SECRET)
    assert (first.status_code, again.status_code, marker.status_code) == (202, 202, 202)
    # Events are stored in order: once the later marker is visible, both deliveries were handled.
    released_events(prefect_server.url, "acme-ai/marker-chat")
    [event] = released_events(prefect_server.url, repo)
    assert event["payload"]["revision"] == SHA2 and event["payload"]["source"] == "webhook"
    release = ModelRelease(repo, SHA2, "deployments/demo.yaml", "webhook", chat=True)
    assert event["id"] == str(release_event(release).id)


def test_poster_refuses_without_api_url_and_fails_fast_on_a_dead_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.watch_models import release_poster

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # Also without the URL a session's Prefect test harness may have set in Prefect's settings.
    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(WebhookSetupError, match="PREFECT_API_URL"),
    ):
        release_poster(None)
    dead = f"http://127.0.0.1:{free_port()}/api"
    release = ModelRelease("acme-ai/x", SHA2, "deployments/demo.yaml", "webhook")
    start = time.perf_counter()
    with pytest.raises(AnnounceError, match="did not accept the event") as caught:
        release_poster(dead)(release)
    assert f"POST {dead}/events" in caught.value.message
    assert time.perf_counter() - start < 10


# ------------------------------------------------------------------ the command, end to end


def serve_command(env: dict[str, str], port: int, watchlist: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SERVE, "--port", str(port), "--watchlist", str(watchlist)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the test can see what it leaves behind
    )


def wait_healthy(proc: subprocess.Popen[str], port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "webhook serve did not become healthy"
        time.sleep(0.2)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def command_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    return {**env, "PREFECT_HOME": str(home), "EVALLAB_WEBHOOK_SECRET": SECRET, **extra}


@pytest.fixture
def watch_file(tmp_path: Path) -> Path:
    path = tmp_path / "watch.yaml"
    path.write_text("campaign: deployments/demo.yaml\nwatch:\n  - author: acme-ai\n")
    return path


@pytest.mark.prefect_server
def test_serve_announces_to_prefect_and_stops_on_sigterm_leaving_nothing(
    prefect_server: PrefectServer, tmp_path: Path, watch_file: Path
) -> None:
    port = free_port()
    repo = "acme-ai/cli-chat"
    proc = serve_command(
        command_env(tmp_path, PREFECT_API_URL=prefect_server.url), port, watch_file
    )
    try:
        wait_healthy(proc, port)
        assert descendants(proc.pid) == []  # no temporary Prefect server, no helper processes
        assert post(port, push_of(repo), "nope").status_code == 401
        assert post(port, push_of(repo), SECRET).status_code == 202
        [event] = released_events(prefect_server.url, repo)
        assert event["payload"]["revision"] == SHA2 and event["payload"]["source"] == "webhook"
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        stop_seconds = time.perf_counter() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = proc.communicate()[0]
    assert rc == -signal.SIGTERM, output  # uvicorn stops, then re-raises the signal
    assert stop_seconds < 10, stop_seconds
    assert not group_alive(proc.pid), "processes left behind after SIGTERM"
    assert f"announcing to {prefect_server.url}" in output
    assert f"POST {HOOK} 401 repo=-" in output
    assert f"POST {HOOK} 202 repo={repo}" in output
    assert "Shutting down" in output


def test_serve_takes_the_api_url_from_the_prefect_profile_and_answers_503_when_it_is_dead(
    tmp_path: Path, watch_file: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api"
    env = command_env(tmp_path)
    (Path(env["PREFECT_HOME"]) / "profiles.toml").write_text(
        f'active = "lab"\n\n[profiles.lab]\nPREFECT_API_URL = "{dead}"\n'
    )
    port = free_port()
    proc = serve_command(env, port, watch_file)
    try:
        wait_healthy(proc, port)
        start = time.perf_counter()
        reply = post(port, PUSH, SECRET)
        seconds = time.perf_counter() - start
        assert descendants(proc.pid) == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = proc.communicate()[0]
    assert reply.status_code == 503, reply.text
    assert f"POST {dead}/events" in reply.json()["error"]
    assert seconds < 10, seconds
    assert f"POST {HOOK} 503 repo=acme-ai/tiny-chat" in output
    assert not group_alive(proc.pid)


def test_serve_refuses_to_start_without_a_prefect_api_url(tmp_path: Path, watch_file: Path) -> None:
    port = free_port()
    proc = subprocess.run(
        [*SERVE, "--port", str(port), "--watchlist", str(watch_file)],
        env=command_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())
    assert "needs a Prefect server to announce releases to, and PREFECT_API_URL is not set" in (
        message
    )
    assert "Fix: export PREFECT_API_URL=" in message
    assert "listening" not in proc.stdout
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_serve_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in command_env(tmp_path).items() if k != "EVALLAB_WEBHOOK_SECRET"}
    proc = subprocess.run(
        [*SERVE, "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "needs a secret" in proc.stderr and "EVALLAB_WEBHOOK_SECRET" in proc.stderr
