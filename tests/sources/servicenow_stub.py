"""A loopback server speaking the subset of ServiceNow's REST Table API that
`sources.servicenow` calls:

* GET   /api/now/table/<table>?sysparm_query=f=v[^g=w]   query       -> 200 {"result": [...]}
* GET   /api/now/table/<table>/<sys_id>                   read one    -> 200 / 404 "No Record found"
* POST  /api/now/table/<table>                            insert      -> 201 {"result": {...}}
* PATCH /api/now/table/<table>/<sys_id>                   update      -> 200

Basic auth or a bearer token (401 otherwise), tables that do not exist -> 400 "Invalid
table", unknown fields silently ignored (as ServiceNow does), journal fields
(`work_notes`) appended as entries rather than stored, `hibernate()` answers an HTML page
with 200 (a sleeping developer instance). Trouble switches come from
`crm_http_stub.LoopbackCrm`.
"""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from typing import Any

from tests.sources.crm_http_stub import LoopbackCrm

TASK_FIELDS = {"short_description", "description", "due_date", "state", "priority", "assigned_to", "account",
               "correlation_id", "correlation_display", "number", "sys_id", "contact_type"}
JOURNAL = {"work_notes", "comments"}


class ServiceNowStub(LoopbackCrm):
    def __init__(self, tmp_path: Path | None = None, *, user: str = "chi.integration", password: str = "s3cret-PW",
                 token: str | None = None, tables: tuple[str, ...] = ("sn_customerservice_case", "task"),
                 accounts: set[str] | None = None, users: dict[str, str] | None = None):
        super().__init__(tmp_path)
        self.user, self.password, self.token = user, password, token
        self.tables = {t: {} for t in tables}
        self.tables.setdefault("customer_account", {sid: {"sys_id": sid} for sid in (accounts or set())})
        self.tables.setdefault("sys_user", {sid: {"sys_id": sid, "email": e.lower(), "active": "true"}
                                             for e, sid in (users or {}).items()})
        self.journal: dict[str, list[str]] = {}
        self.sleeping = False
        self.numbers = 0

    def records(self, table: str = "sn_customerservice_case") -> list[dict[str, Any]]:
        return list(self.tables[table].values())

    def with_key(self, key: str, table: str = "sn_customerservice_case") -> list[dict[str, Any]]:
        return [r for r in self.tables[table].values() if r.get("correlation_id") == key]

    def authorised(self, headers: Any) -> bool:
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic "):
            return base64.b64decode(auth[6:]).decode() == f"{self.user}:{self.password}"
        return bool(self.token) and auth == f"Bearer {self.token}"

    def unauthorised(self) -> tuple[int, Any]:
        return 401, {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
                     "status": "failure"}

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any] | None:
        if self.sleeping:
            return 200, "<html><body><h1>Your instance is hibernating</h1><a>Wake your instance</a></body></html>"
        m = re.match(r"^/api/now/table/([a-z0-9_]+)(?:/([0-9a-f]{32}|[^/]+))?/?$", path)
        if not m:
            return 400, {"error": {"message": "Requested URI does not represent any resource", "detail": None},
                         "status": "failure"}
        table, sys_id = m.group(1), m.group(2)
        if table not in self.tables:
            return 400, {"error": {"message": f"Invalid table {table}", "detail": None}, "status": "failure"}
        rows = self.tables[table]
        if method == "GET" and sys_id:
            r = rows.get(sys_id)
            if r is None:
                return 404, {"error": {"message": "No Record found",
                                       "detail": "Record doesn't exist or ACL restricts the record retrieval"},
                             "status": "failure"}
            return 200, {"result": r}
        if method == "GET":
            q = (query.get("sysparm_query") or [""])[0]
            conds = [c.split("=", 1) for c in q.split("^") if c]
            hits = [r for r in rows.values() if all(str(r.get(f)) == v for f, v in conds)]
            limit = int((query.get("sysparm_limit") or ["10000"])[0])
            return 200, {"result": [{"sys_id": r["sys_id"], "number": r.get("number")} for r in hits[:limit]]}
        body = body or {}
        if method == "POST" and not sys_id:
            with self.lock:
                sid = uuid.uuid4().hex
                self.numbers += 1
                rec = {"sys_id": sid, "number": f"CS{self.numbers:07d}"}
                rec.update({k: str(v) for k, v in body.items() if k in TASK_FIELDS and k not in ("sys_id", "number")})
                rows[sid] = rec
                self._journal(sid, body)
            if self.take_drop():
                return None
            return 201, {"result": rec}
        if method == "PATCH" and sys_id:
            with self.lock:
                rec = rows.get(sys_id)
                if rec is None:
                    return 404, {"error": {"message": "No Record found", "detail": None}, "status": "failure"}
                rec.update({k: str(v) for k, v in body.items() if k in TASK_FIELDS and k not in ("sys_id", "number")})
                self._journal(sys_id, body)
            if self.take_drop():
                return None
            return 200, {"result": rec}
        return 405, {"error": {"message": "Method not Supported", "detail": None}, "status": "failure"}

    def _journal(self, sid: str, body: dict[str, Any]) -> None:
        for k in JOURNAL:
            if body.get(k):
                self.journal.setdefault(sid, []).append(str(body[k]))
