"""A small base for loopback CRM servers (HubSpot, ServiceNow): a real HTTP(S) server on
127.0.0.1 with switches for trouble — `stop()` / `start()` (down and back on the same
port), `fail(status, times=n)` for the next n API calls (optionally writes only, with a
JSON body), `drop_next_write()` (commit the write, then hang up without answering: an
answer lost on the way back). Subclasses implement `route(method, path, query, body)`
returning `(status, payload)` or None to drop the connection.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Failure:
    status: int
    payload: Any = None
    only_writes: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCrm:
    WRITES = ("POST", "PATCH", "PUT")

    def __init__(self, tmp_path: Path | None = None, *, tls: bool = False):
        self.tls = tls
        self.ca_file: str | None = None
        if tls:
            import trustme

            self.ca = trustme.CA()
            self.cert = self.ca.issue_cert("127.0.0.1", "localhost")
            self.ca_file = str(Path(tmp_path or ".") / "crm-stub-ca.pem")
            self.ca.cert_pem.write_to_path(self.ca_file)
        self.requests: list[tuple[str, str]] = []
        self.failures: list[Failure] = []
        self.drop_writes = 0
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.port = free_port()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self):  # noqa: ANN201
        stub = self

        class Handler(_Handler):
            pass

        Handler.stub = stub
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.cert.configure_cert(ctx)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail(self, status: int, payload: Any = None, *, times: int = 1, only_writes: bool = False,
             headers: dict[str, str] | None = None) -> None:
        for _ in range(times):
            self.failures.append(Failure(status, payload, only_writes, headers or {}))

    def drop_next_write(self) -> None:
        self.drop_writes += 1

    def count(self, method: str, path_part: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)

    # -- for subclasses -----------------------------------------------------------------
    def authorised(self, headers: Any) -> bool:
        return True

    def unauthorised(self) -> tuple[int, Any]:
        return 401, {"message": "unauthorised"}

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any] | None:
        raise NotImplementedError

    def take_drop(self) -> bool:
        with self.lock:
            if self.drop_writes:
                self.drop_writes -= 1
                return True
        return False


class _Handler(BaseHTTPRequestHandler):
    stub: LoopbackCrm
    protocol_version = "HTTP/1.0"  # one request per connection: stop() really cuts clients off

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        return

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        text = isinstance(payload, str)  # an HTML page instead of JSON
        data = b"" if payload is None else payload.encode() if text else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html;charset=utf-8" if text else "application/json;charset=utf-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _handle(self, method: str) -> None:
        stub = self.stub
        url = urlparse(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        with stub.lock:
            stub.requests.append((method, url.path))
        if not stub.authorised(self.headers):
            return self._send(*stub.unauthorised())
        with stub.lock:
            failure = None
            for i, f in enumerate(stub.failures):
                if not f.only_writes or method in stub.WRITES:
                    failure = stub.failures.pop(i)
                    break
        if failure is not None:
            return self._send(failure.status, failure.payload, failure.headers)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._send(400, {"message": "body is not JSON"})
        out = stub.route(method, url.path, parse_qs(url.query), body)
        if out is None:  # the write is committed, the answer lost
            self.close_connection = True
            return
        self._send(*out)

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_PATCH = lambda self: self._handle("PATCH")  # noqa: E731
    do_PUT = lambda self: self._handle("PUT")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731
