"""A fake Hugging Face hub on loopback (``huggingface_hub`` and the lab honour ``HF_ENDPOINT``).

It answers what the lab asks a hub, from state tests mutate:

* ``GET /api/models/{org}/{name}[/revision/{rev}]`` (repository info) and
  ``GET /api/models?author=...`` (listing) from :attr:`FakeHub.repos` ("push" commits with
  :meth:`FakeHub.push`);
* ``GET /api/models/{org}/{name}/tree/{rev}`` and ``HEAD|GET /{org}/{name}/resolve/{rev}/{file}``
  (what ``snapshot_download`` uses) from :attr:`FakeHub.files`;
* 401 ``GatedRepo`` for repositories in :attr:`FakeHub.gated` unless a token is sent;
* scripted failures first: :meth:`FakeHub.fail_next` queues answers such as 503 or 429.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

Answer = tuple[int, dict[str, str], bytes]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, str] = {}  # repo id -> head sha
        self.files: dict[str, dict[str, bytes]] = {}  # repo id -> path -> content at its head
        self.gated: set[str] = set()
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[str] = []
        self.url = ""
        self._lock = threading.Lock()

    def push(self, repo: str, sha: str, files: dict[str, bytes] | None = None) -> None:
        self.repos[repo] = sha
        if files is not None:
            self.files[repo] = dict(files)

    def fail_next(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``headers``)."""
        self.script.extend([(status, dict(headers or {}))] * times)

    def _info(self, repo: str) -> dict[str, Any]:
        return {
            "id": repo,
            "modelId": repo,
            "sha": self.repos[repo],
            "private": False,
            "lastModified": "2026-11-20T10:00:00.000Z",
            "author": repo.split("/")[0],
        }

    def _known(self, repo: str, rev: str) -> Answer | None:
        """The error answer for an unknown repo or revision, None when both exist."""
        if repo not in self.repos:
            return _json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if rev not in ("", "main", self.repos[repo]):
            return _json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        return None

    def answer(self, method: str, path: str, query: dict[str, list[str]], token: bool) -> Answer:
        with self._lock:
            self.requests.append(path)
            if self.script:
                status, headers = self.script.pop(0)
                return _json(status, {"error": f"scripted {status}"}, headers)
        if path == "/api/models":
            author = query.get("author", [""])[0]
            return _json(
                200, [self._info(r) for r in sorted(self.repos) if r.split("/")[0] == author]
            )
        if path.startswith("/api/models/"):
            rest = path.removeprefix("/api/models/")
            org, name, *tail = rest.split("/", 3)
            repo = f"{org}/{name}"
            if repo in self.gated and not token:
                return _json(401, {"error": "gated"}, {"X-Error-Code": "GatedRepo"})
            kind, rev = [*tail, "", ""][:2]
            if (bad := self._known(repo, unquote(rev))) is not None:
                return bad
            if kind == "tree":
                return _json(200, self._tree(repo))
            return _json(200, self._info(repo))
        if "/resolve/" in path:
            repo, _, rest = path.lstrip("/").partition("/resolve/")
            rev, _, filename = rest.partition("/")
            if repo in self.gated and not token:
                return _json(401, {"error": "gated"}, {"X-Error-Code": "GatedRepo"})
            if (bad := self._known(repo, rev)) is not None:
                return bad
            content = self.files.get(repo, {}).get(filename)
            if content is None:
                return _json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            headers = {
                "X-Repo-Commit": self.repos[repo],
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
                "Content-Type": "application/octet-stream",
            }
            return 200, headers, content
        return _json(404, {"error": "not found"})

    def _tree(self, repo: str) -> list[dict[str, Any]]:
        return [
            {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
            for p, c in sorted(self.files.get(repo, {}).items())
        ]


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, with_body: bool) -> None:
            parts = urlsplit(self.path)
            token = bool(self.headers.get("Authorization"))
            status, headers, body = hub.answer(
                self.command, parts.path, parse_qs(parts.query), token
            )
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(with_body=True)

        def do_HEAD(self) -> None:
            self._reply(with_body=False)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
