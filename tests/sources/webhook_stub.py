"""A loopback HTTP server standing in for Slack / Microsoft Teams incoming webhooks.

Every POST is recorded (path, headers, parsed JSON body). The answer per path is set in
`status` (default 200, body "ok" for paths containing "slack", "1" otherwise — what
Slack and the Teams connector answer); `stop()` closes the socket so the next post is
refused, `start()` opens it again on the same port.

    with WebhookStub() as hook:
        url = hook.url("/slack/T000/B000/secret")
        hook.status["/teams/x"] = 500
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookStub:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.posts: list[dict[str, Any]] = []
        self.status: dict[str, int] = {}
        self.bodies: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "WebhookStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = None
                with stub._lock:
                    stub.posts.append({"path": self.path, "headers": dict(self.headers), "json": body, "raw": raw})
                code = stub.status.get(self.path, 200)
                text = stub.bodies.get(self.path, ("ok" if "slack" in self.path else "1") if code < 400 else "server_error")
                data = text.encode()
                self.send_response(code)
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "WebhookStub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.posts if path is None or p["path"] == path]
