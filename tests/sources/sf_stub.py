"""A loopback HTTPS server speaking the subset of the Salesforce REST API that
`sources.salesforce` uses through the real simple-salesforce client:

* POST  /services/Soap/u/<v>                         SOAP username/password login
* POST  /services/data/v<v>/sobjects/Task/           create            -> 201 {"id": ...}
* PATCH /services/data/v<v>/sobjects/Task/<F>/<key>  upsert on ext. id -> 201 create / 204 update
* GET   /services/data/v<v>/sobjects/Task/<id>       read one Task
* GET   /services/data/v<v>/query/?q=SELECT Id FROM Task|User WHERE ...
* PATCH /services/data/v<v>/sobjects/Account/<id>    score write-back  -> 204 (404 unknown account)

It serves TLS with a certificate from a `trustme` CA made at test time (simple-salesforce
forces https). Switches simulate trouble: `stop()` / `start()` (down and back on the same
port), `fail(503)` / `fail(401, "INVALID_SESSION_ID")` / `fail(400, "INVALID_FIELD")`
for the next n data calls, `drop_next_write()` (commit, then hang up without answering:
an answer lost on the way back), an org without the external-id field
(`ext_id_field=None`), unknown Task fields, create-only TaskSubtype, Account ids that
must exist (`accounts`).
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import trustme

TASK_FIELDS = {
    "WhatId", "Subject", "Description", "ActivityDate", "Status", "Priority", "OwnerId", "Type",
    "TaskSubtype", "CHI_Key__c",
}
CREATE_ONLY = {"TaskSubtype"}
ACCOUNT_FIELDS = {"Health_Score__c", "Health_Tier__c", "Health_Score_Date__c"}


@dataclass
class Failure:
    status: int
    code: str
    message: str
    fields: list[str] = field(default_factory=list)
    only_writes: bool = False


class SalesforceStub:
    def __init__(
        self,
        tmp_path: Path,
        *,
        ext_id_field: str | None = "Idempotency_Key__c",
        session_id: str = "00Dstub!SESSION",
        accounts: set[str] | None = None,
        users: dict[str, str] | None = None,
        logins: dict[str, str] | None = None,
    ):
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(Path(tmp_path) / "stub-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.ext_id_field = ext_id_field
        self.sessions = {session_id}
        self.session_id = session_id
        self.accounts = accounts
        self.users = {k.lower(): v for k, v in (users or {}).items()}
        self.logins = logins or {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.account_fields: dict[str, dict[str, Any]] = {}
        self.account_patches = 0
        self.requests: list[tuple[str, str]] = []
        self.failures: list[Failure] = []
        self.drop_writes = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.port = _free_port()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def instance_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> "SalesforceStub":
        stub = self

        class Handler(_Handler):
            pass

        Handler.stub = stub
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.cert.configure_cert(ctx)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- switches -----------------------------------------------------------------------
    def fail(
        self,
        status: int,
        code: str = "",
        message: str = "",
        *,
        times: int = 1,
        fields: list[str] | None = None,
        only_writes: bool = False,
    ) -> None:
        """Answer the next `times` data calls (or only writes: POST / PATCH) with an error."""
        defaults = {
            503: ("SERVER_UNAVAILABLE", "Service temporarily unavailable"),
            401: ("INVALID_SESSION_ID", "Session expired or invalid"),
            400: ("INVALID_FIELD", "No such column 'Bogus__c' on sobject of type Task"),
        }
        c, m = defaults.get(status, ("", ""))
        for _ in range(times):
            self.failures.append(Failure(status, code or c, message or m, fields or [], only_writes))

    def drop_next_write(self) -> None:
        self.drop_writes += 1

    def expire_sessions(self) -> None:
        self.sessions.clear()

    # -- state helpers ------------------------------------------------------------------
    def tasks_with(self, field_name: str, value: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks.values() if t.get(field_name) == value]

    def count(self, method: str, path_part: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)

    def _new_id(self) -> str:
        return f"00T{next(self._ids):015d}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _err(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    return [{"errorCode": code, "message": message, "fields": fields or []}]


class _Handler(BaseHTTPRequestHandler):
    stub: SalesforceStub
    protocol_version = "HTTP/1.0"  # one request per connection: stop() really cuts clients off

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        return

    # -- plumbing -------------------------------------------------------------------------
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, payload: Any = None, content_type: str = "application/json") -> None:
        data = b"" if payload is None else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.stub.sessions

    def _handle(self, method: str) -> None:
        stub = self.stub
        url = urlparse(self.path)
        path = url.path
        body = self._body()
        with stub._lock:
            stub.requests.append((method, path))
        if method == "POST" and re.match(r"^/services/Soap/u/[\d.]+/?$", path):
            return self._login(body)
        m = re.match(r"^/services/data/v[\d.]+/(.*)$", path)
        if not m:
            return self._send(404, _err("NOT_FOUND", f"The requested resource does not exist: {path}"))
        if not self._authorised():
            return self._send(401, _err("INVALID_SESSION_ID", "Session expired or invalid"))
        with stub._lock:
            failure = None
            for i, f in enumerate(stub.failures):
                if not f.only_writes or method in ("POST", "PATCH"):
                    failure = stub.failures.pop(i)
                    break
        if failure is not None:
            if failure.status == 503:
                return self._send(503, _err(failure.code, failure.message))
            return self._send(failure.status, _err(failure.code, failure.message, failure.fields))
        rest = m.group(1)
        if method == "GET" and rest.rstrip("/") == "query":
            return self._query(parse_qs(url.query).get("q", [""])[0])
        parts = [unquote(p) for p in rest.strip("/").split("/")]
        if parts[:2] == ["sobjects", "Account"] and len(parts) == 3 and method in ("PATCH", "GET"):
            return self._account(method, parts[2], json.loads(body) if body else {})
        if parts[:2] != ["sobjects", "Task"]:
            return self._send(404, _err("NOT_FOUND", f"The requested resource does not exist: {path}"))
        data = json.loads(body) if body else {}
        if method == "POST" and len(parts) == 2:
            return self._create(data)
        if method == "PATCH" and len(parts) == 4:
            return self._upsert(parts[2], parts[3], data)
        if method == "GET" and len(parts) == 3:
            task = stub.tasks.get(parts[2])
            return self._send(200, task) if task else self._send(404, _err("NOT_FOUND", "The requested resource does not exist"))
        if method == "GET" and len(parts) == 4:
            found = stub.tasks_with(parts[2], parts[3])
            return self._send(200, found[0]) if found else self._send(404, _err("NOT_FOUND", "The requested resource does not exist"))
        return self._send(405, _err("METHOD_NOT_ALLOWED", f"{method} not allowed on {path}"))

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_PATCH = lambda self: self._handle("PATCH")  # noqa: E731

    # -- endpoints ----------------------------------------------------------------------
    def _login(self, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        user = re.search(r"<n1:username>(.*?)</n1:username>", text, re.S)
        pw = re.search(r"<n1:password>(.*?)</n1:password>", text, re.S)
        ok = user and pw and self.stub.logins.get(user.group(1)) == pw.group(1)
        if not ok:
            fault = (
                '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault><faultcode>INVALID_LOGIN</faultcode>'
                "<faultstring>INVALID_LOGIN: Invalid username, password, security token; or user locked out.</faultstring>"
                "<detail><sf:LoginFault><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>"
                "Invalid username, password, security token; or user locked out.</sf:exceptionMessage></sf:LoginFault>"
                "</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
            )
            return self._send(500, fault.encode(), "text/xml")
        ok_xml = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<serverUrl>{self.stub.instance_url}/services/Soap/u/62.0/00Dstub</serverUrl>"
            f"<sessionId>{self.stub.session_id}</sessionId></result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        self.stub.sessions.add(self.stub.session_id)
        return self._send(200, ok_xml.encode(), "text/xml")

    def _check_fields(self, data: dict[str, Any], *, update: bool) -> list[dict[str, Any]] | None:
        stub = self.stub
        known = TASK_FIELDS | ({stub.ext_id_field} if stub.ext_id_field else set())
        unknown = [k for k in data if k not in known]
        if unknown:
            return _err("INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type Task", [])
        if update:
            bad = [k for k in data if k in CREATE_ONLY]
            if bad:
                return _err(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {', '.join(bad)}. Please check the security settings of this field "
                    "and verify that it is read/write for your profile or permission set.",
                    bad,
                )
        what = data.get("WhatId")
        if what is not None:
            if not re.match(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$", str(what)):
                return _err("MALFORMED_ID", f"Related To ID: id value of incorrect type: {what}", ["WhatId"])
            if stub.accounts is not None and what not in stub.accounts:
                return _err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["WhatId"])
        return None

    def _commit_or_drop(self) -> bool:
        """True when the answer must be dropped (the write is kept)."""
        with self.stub._lock:
            if self.stub.drop_writes:
                self.stub.drop_writes -= 1
                return True
        return False

    def _create(self, data: dict[str, Any]) -> None:
        problem = self._check_fields(data, update=False)
        if problem:
            return self._send(400, problem)
        stub = self.stub
        with stub._lock:
            tid = stub._new_id()
            stub.tasks[tid] = {"Id": tid, **data}
        if self._commit_or_drop():
            self.close_connection = True
            return
        return self._send(201, {"id": tid, "success": True, "errors": []})

    def _upsert(self, field_name: str, key: str, data: dict[str, Any]) -> None:
        stub = self.stub
        if field_name != stub.ext_id_field:
            return self._send(
                404, _err("NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field_name}")
            )
        if field_name in data and data[field_name] != key:
            return self._send(400, _err("INVALID_FIELD", f"external id in body does not match the URL: {field_name}"))
        with stub._lock:
            found = stub.tasks_with(field_name, key)
        problem = self._check_fields(data, update=bool(found))
        if problem:
            return self._send(400, problem)
        with stub._lock:
            if found:
                found[0].update(data)
                created, tid = False, found[0]["Id"]
            else:
                tid = stub._new_id()
                stub.tasks[tid] = {"Id": tid, **data, field_name: key}
                created = True
        if self._commit_or_drop():
            self.close_connection = True
            return
        if created:
            return self._send(201, {"id": tid, "success": True, "errors": [], "created": True})
        return self._send(204)

    def _account(self, method: str, account_id: str, data: dict[str, Any]) -> None:
        """PATCH /sobjects/Account/<id> (the score write-back): 204, 404 for an unknown
        account, 400 MALFORMED_ID / INVALID_FIELD."""
        stub = self.stub
        if not re.match(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$", account_id):
            return self._send(400, _err("MALFORMED_ID", f"Account ID: id value of incorrect type: {account_id}", ["Id"]))
        if stub.accounts is not None and account_id not in stub.accounts:
            return self._send(404, _err("NOT_FOUND", "The requested resource does not exist"))
        if method == "GET":
            return self._send(200, {"Id": account_id, **stub.account_fields.get(account_id, {})})
        unknown = [k for k in data if k not in ACCOUNT_FIELDS]
        if unknown:
            return self._send(400, _err("INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type Account"))
        with stub._lock:
            stub.account_fields.setdefault(account_id, {}).update(data)
            stub.account_patches += 1
        return self._send(204)

    def _query(self, q: str) -> None:
        stub = self.stub
        m = re.match(r"^SELECT Id FROM (Task|User) WHERE (\w+) (=|LIKE) '((?:[^'\\]|\\.)*)'(.*)$", q.strip(), re.I)
        if not m:
            return self._send(400, _err("MALFORMED_QUERY", f"unexpected query: {q}"))
        obj, fld, op, raw, _tail = m.groups()
        value = re.sub(r"\\(.)", r"\1", raw)
        if obj == "User":
            if fld != "Email":
                return self._send(400, _err("INVALID_FIELD", f"No such column '{fld}' on entity 'User'"))
            uid = stub.users.get(value.lower())
            recs = [{"attributes": {"type": "User"}, "Id": uid}] if uid else []
        else:
            known = TASK_FIELDS | ({stub.ext_id_field} if stub.ext_id_field else set())
            if fld not in known:
                return self._send(400, _err("INVALID_FIELD", f"No such column '{fld}' on entity 'Task'"))
            if fld == "Description":
                return self._send(400, _err("INVALID_FIELD", "field 'Description' can not be filtered in a query call"))
            with stub._lock:
                if op.upper() == "LIKE":
                    needle = value.strip("%")
                    recs = [t for t in stub.tasks.values() if needle in str(t.get(fld) or "")]
                else:
                    recs = [t for t in stub.tasks.values() if t.get(fld) == value]
            recs = [{"attributes": {"type": "Task"}, "Id": t["Id"]} for t in recs]
        return self._send(200, {"totalSize": len(recs), "done": True, "records": recs})
