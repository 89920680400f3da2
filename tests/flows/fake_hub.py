"""A fake Hugging Face hub API on loopback (``huggingface_hub`` honours ``HF_ENDPOINT``).

It answers the two calls the watcher makes: ``GET /api/models/{org}/{name}`` (model_info) and
``GET /api/models?author=...`` (list_models), from a dict tests mutate to "push" commits.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, str] = {}  # repo id -> head sha
        self.requests: list[str] = []
        self.url = ""

    def push(self, repo: str, sha: str) -> None:
        self.repos[repo] = sha

    def _info(self, repo: str) -> dict[str, Any]:
        return {
            "id": repo,
            "modelId": repo,
            "sha": self.repos[repo],
            "private": False,
            "lastModified": "2026-11-20T10:00:00.000Z",
            "author": repo.split("/")[0],
        }

    def handle(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        self.requests.append(path)
        if path == "/api/models":
            author = query.get("author", [""])[0]
            return 200, [self._info(r) for r in sorted(self.repos) if r.split("/")[0] == author]
        if path.startswith("/api/models/"):
            repo = path.removeprefix("/api/models/").split("/revision/")[0]
            if repo in self.repos:
                return 200, self._info(repo)
            return 404, {"error": "Repository not found"}
        return 404, {"error": "not found"}


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            status, body = hub.handle(parts.path, parse_qs(parts.query))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 404:
                self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            self.wfile.write(data)

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
