"""A loopback server speaking the subset of HubSpot's CRM v3 API that `sources.hubspot`
calls through the REAL hubspot-api-client:

* POST  /crm/v3/objects/{tasks|notes}          create with inline associations -> 201
* PATCH /crm/v3/objects/{tasks|notes}/{id}     update properties               -> 200
* POST  /crm/v3/objects/{tasks|notes}/search   filterGroups EQ on a property   -> 200
* GET   /crm/v3/objects/{tasks|notes}/{id}     read one
* GET   /crm/v3/owners/?email=...              owner look-up

Bearer-token auth (401 otherwise), unknown properties -> 400 VALIDATION_ERROR, an unknown
company in an association -> 400, a duplicate value of the unique key property -> 409
CONFLICT, and `index_lag=True` makes new records invisible to search until `reindex()`
(HubSpot's search index trails writes by a few seconds). Trouble switches come from
`crm_http_stub.LoopbackCrm`.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from tests.sources.crm_http_stub import LoopbackCrm

KNOWN = {
    "tasks": {"hs_task_subject", "hs_task_body", "hs_task_status", "hs_task_priority", "hs_task_type", "hs_timestamp",
              "hubspot_owner_id"},
    "notes": {"hs_note_body", "hs_timestamp", "hubspot_owner_id"},
}
ASSOC = {"tasks": 192, "notes": 190}


def _err(status: int, category: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"status": "error", "message": message, "correlationId": "0f0e-stub", "category": category, **extra}


class HubSpotStub(LoopbackCrm):
    def __init__(self, tmp_path: Path | None = None, *, token: str = "pat-na1-stub-TOKEN", key_property: str | None = "chi_idempotency_key",
                 unique: bool = True, companies: set[str] | None = None, owners: dict[str, str] | None = None,
                 index_lag: bool = False, tls: bool = False):
        super().__init__(tmp_path, tls=tls)
        self.tokens = {token}
        self.token = token
        self.key_property = key_property
        self.unique = unique
        self.companies = companies
        self.owners = {k.lower(): v for k, v in (owners or {}).items()}
        self.index_lag = index_lag
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"tasks": {}, "notes": {}}
        self.unindexed: set[str] = set()

    # -- helpers ------------------------------------------------------------------------
    def with_key(self, key: str, obj: str | None = None) -> list[dict[str, Any]]:
        kinds = [obj] if obj else ["tasks", "notes"]
        return [o for k in kinds for o in self.objects[k].values() if o["properties"].get(self.key_property) == key]

    def total(self) -> int:
        return sum(len(v) for v in self.objects.values())

    def reindex(self) -> None:
        self.unindexed.clear()

    def authorised(self, headers: Any) -> bool:
        auth = headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def unauthorised(self) -> tuple[int, Any]:
        return _err(401, "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 authentication.")

    @staticmethod
    def _now() -> str:
        return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _known(self, obj: str) -> set[str]:
        return KNOWN[obj] | ({self.key_property} if self.key_property else set())

    def _check(self, obj: str, props: dict[str, Any]) -> tuple[int, Any] | None:
        unknown = [k for k in props if k not in self._known(obj)]
        if unknown:
            return _err(400, "VALIDATION_ERROR", f"Property values were not valid: [{{\"isValid\":false,\"message\":"
                        f"\"Property \\\"{unknown[0]}\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\","
                        f"\"name\":\"{unknown[0]}\"}}]")
        if obj == "tasks":
            if props.get("hs_task_priority") not in (None, "LOW", "MEDIUM", "HIGH"):
                return _err(400, "VALIDATION_ERROR", f"Property values were not valid: {props['hs_task_priority']!r} "
                            "was not one of the allowed options for hs_task_priority")
        return None

    # -- routes -------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any] | None:
        if method == "GET" and path.rstrip("/") == "/crm/v3/owners":
            email = (query.get("email") or [""])[0].lower()
            oid = self.owners.get(email)
            now = self._now()
            results = [{"id": oid, "email": email, "type": "PERSON", "archived": False, "createdAt": now, "updatedAt": now}] if oid else []
            return 200, {"results": results}
        m = re.match(r"^/crm/v3/objects/(tasks|notes)(?:/([^/]+))?/?$", path)
        if not m:
            return _err(404, "OBJECT_NOT_FOUND", f"resource not found: {path}")
        obj, rest = m.group(1), m.group(2)
        body = body or {}
        if method == "POST" and rest == "search":
            return self._search(obj, body)
        if method == "POST" and rest is None:
            return self._create(obj, body)
        if method == "PATCH" and rest:
            return self._update(obj, rest, body)
        if method == "GET" and rest:
            o = self.objects[obj].get(rest)
            return (200, self._public(o)) if o else _err(404, "OBJECT_NOT_FOUND", "resource not found")
        return _err(405, "METHOD_NOT_ALLOWED", f"{method} {path}")

    def _public(self, o: dict[str, Any]) -> dict[str, Any]:
        return {k: o[k] for k in ("id", "properties", "createdAt", "updatedAt", "archived")}

    def _create(self, obj: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        props = dict(body.get("properties") or {})
        problem = self._check(obj, props)
        if problem:
            return problem
        assocs = body.get("associations") or []
        for a in assocs:
            to = str((a.get("to") or {}).get("id"))
            types = [t.get("associationTypeId") for t in a.get("types") or []]
            if self.companies is not None and to not in self.companies:
                return _err(400, "VALIDATION_ERROR", f"One or more associations are invalid: toObjectId {to} "
                            "does not exist (COMPANY)")
            if ASSOC[obj] not in types:
                return _err(400, "VALIDATION_ERROR", f"association type {types} is not valid between {obj} and companies")
        key = props.get(self.key_property) if self.key_property else None
        with self.lock:
            if key is not None and self.unique and self.with_key(key, obj):
                return _err(409, "CONFLICT", f"A {obj[:-1]} with {self.key_property}={key} already exists")
            oid = str(40000000000 + next(self.ids))
            now = self._now()
            self.objects[obj][oid] = {"id": oid, "properties": {**props, "hs_object_id": oid}, "createdAt": now,
                                      "updatedAt": now, "archived": False, "associations": assocs}
            if self.index_lag:
                self.unindexed.add(oid)
        if self.take_drop():
            return None
        return 201, self._public(self.objects[obj][oid])

    def _update(self, obj: str, oid: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        props = dict(body.get("properties") or {})
        problem = self._check(obj, props)
        if problem:
            return problem
        with self.lock:
            o = self.objects[obj].get(oid)
            if o is None:
                return _err(404, "OBJECT_NOT_FOUND", "resource not found")
            o["properties"].update(props)
            o["updatedAt"] = self._now()
        if self.take_drop():
            return None
        return 200, self._public(o)

    def _search(self, obj: str, body: dict[str, Any]) -> tuple[int, Any]:
        groups = body.get("filterGroups") or []
        with self.lock:
            hits = []
            for o in self.objects[obj].values():
                if o["id"] in self.unindexed:
                    continue
                for g in groups:
                    ok = True
                    for f in g.get("filters") or []:
                        name, op, value = f.get("propertyName"), f.get("operator"), f.get("value")
                        if name not in self._known(obj) | {"hs_object_id"}:
                            return _err(400, "VALIDATION_ERROR", f"There was a problem with the request: property {name} "
                                        "does not exist")
                        if op != "EQ":
                            return _err(400, "VALIDATION_ERROR", f"operator {op} not supported by the stub")
                        ok = ok and o["properties"].get(name) == value
                    if ok:
                        hits.append(o)
                        break
        return 200, {"total": len(hits), "results": [self._public(o) for o in hits[: body.get("limit") or 10]]}
