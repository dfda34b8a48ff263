"""HubSpot as a CRM sink (`health.crm.CrmSink`), over the CRM v3 API with the official
`hubspot-api-client`.

Every action becomes ONE HubSpot engagement associated to the company
(`accounts.crm_id` = the HubSpot company id):

* task  -> a task (`hs_task_status` NOT_STARTED, type TODO, due date in `hs_timestamp`,
  priority, owner);
* email -> a COMPLETED task of type EMAIL (the recipients at the top of the body);
* note  -> a note (`hs_note_body`: the subject in bold, then the text).

Idempotency: the action's key is written into a custom text property (default
`chi_idempotency_key`, create it on Tasks and on Notes, ideally with *unique values*).
Before creating, the sink searches for the key (`POST /crm/v3/objects/<type>/search`);
found -> the record is updated (`PATCH`) and its id returned, so a double submit, a
rerun or a retry after a lost answer never make a second record. With a unique
property a create that races another one answers 409, and the sink then looks the key
up again. (HubSpot's search index lags a few seconds behind writes; the unique property
closes that window.)

The token (a private app's access token) comes from the caller (`st.secrets["hubspot"]`)
or the environment (`HUBSPOT_ACCESS_TOKEN`; the name is in config/crm.yaml). It is never
logged, printed or put in an error message.

Failures become the typed errors of `health.crm`: `CrmUnavailable` (unreachable, 5xx,
429 rate limit — retried), `CrmAuthError` (401), `CrmFieldError` (400 validation: an
unknown property or a bad value), `CrmMissingAccount` (no or unknown company id),
`CrmRejected` (403 missing scopes and the rest).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
from typing import Any, Literal, Mapping
from urllib.parse import urlparse

from pydantic import Field, field_validator

from health.crm import (
    CrmAuthError,
    CrmError,
    CrmFieldError,
    CrmMissingAccount,
    CrmRejected,
    CrmTask,
    CrmUnavailable,
)
from health.model import Strict

_PROP = re.compile(r"^[a-z][a-z0-9_]*$")

# HubSpot-defined association type ids (v4 associations): engagement -> company.
TASK_TO_COMPANY = 192
NOTE_TO_COMPANY = 190


class HubSpotValues(Strict):
    open_status: str = "NOT_STARTED"
    done_status: str = "COMPLETED"
    priorities: dict[Literal["low", "normal", "high"], str] = Field(
        default_factory=lambda: {"low": "LOW", "normal": "MEDIUM", "high": "HIGH"}
    )
    task_types: dict[Literal["task", "email"], str] = Field(default_factory=lambda: {"task": "TODO", "email": "EMAIL"})


class HubSpotCredentialNames(Strict):
    secrets_section: str = "hubspot"
    env: dict[Literal["access_token"], str] = Field(default_factory=lambda: {"access_token": "HUBSPOT_ACCESS_TOKEN"})


class HubSpotConfig(Strict):
    host: str = "https://api.hubapi.com"
    timeout_seconds: float = Field(default=20, gt=0, le=300)
    owner_lookup: bool = True
    """Map the owner's e-mail to a HubSpot owner id (GET /crm/v3/owners/?email=...)."""
    idempotency_property: str = "chi_idempotency_key"
    """A custom text property on Tasks and Notes holding the action's key."""
    association_types: dict[Literal["task", "note"], int] = Field(
        default_factory=lambda: {"task": TASK_TO_COMPANY, "note": NOTE_TO_COMPANY}
    )
    values: HubSpotValues = Field(default_factory=HubSpotValues)
    extra_properties: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Constant properties added to every task and note."""
    credentials: HubSpotCredentialNames = Field(default_factory=HubSpotCredentialNames)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"host {v!r} must be a URL such as https://api.hubapi.com")
        return v.rstrip("/")

    @field_validator("idempotency_property")
    @classmethod
    def _prop(cls, v: str) -> str:
        if not _PROP.match(v):
            raise ValueError(f"{v!r} is not a HubSpot property internal name (lower case letters, digits, _)")
        return v

    @field_validator("extra_properties")
    @classmethod
    def _extra(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if not _PROP.match(k):
                raise ValueError(f"{k!r} is not a HubSpot property internal name (lower case letters, digits, _)")
        return v


CRED_HINT = (
    "set [hubspot] access_token (a private app's token) in .streamlit/secrets.toml, or the HUBSPOT_ACCESS_TOKEN "
    "environment variable named in config/crm.yaml"
)


def hubspot_credentials(
    secrets: Mapping[str, Any] | None, config: HubSpotConfig, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """{"access_token": ...} from the caller's mapping, else the environment."""
    if secrets and hasattr(secrets, "get") and secrets.get("access_token"):
        return {"access_token": str(secrets.get("access_token"))}
    env = os.environ if environ is None else environ
    tok = env.get(config.credentials.env["access_token"])
    return {"access_token": tok} if tok else {}


def _body(exc: Any) -> dict[str, Any]:
    raw = getattr(exc, "body", None)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {"message": str(raw)[:300]}
    return data if isinstance(data, dict) else {"message": str(data)[:300]}


class HubSpotSink:
    """`health.crm.CrmSink` over HubSpot (see the module docstring)."""

    name = "hubspot"

    def __init__(
        self,
        config: HubSpotConfig | None = None,
        credentials: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        ca_file: str | None = None,
    ):
        self.config = config or HubSpotConfig()
        self._token = hubspot_credentials(credentials, self.config, environ).get("access_token")
        self._ca_file = ca_file
        self._client: Any = None
        self._owner_ids: dict[str, str | None] = {}

    def __repr__(self) -> str:  # never show the token
        how = "token" if self._token else "no credentials"
        return f"HubSpotSink({how}, {urlparse(self.config.host).netloc}, key={self.config.idempotency_property})"

    def describe(self) -> str:
        return repr(self).removeprefix("HubSpotSink(").removesuffix(")")

    # -- connection ---------------------------------------------------------------------
    def _hs(self) -> Any:
        if self._client is not None:
            return self._client
        if not self._token:
            raise CrmAuthError("no HubSpot access token is configured", hint=CRED_HINT)
        from hubspot import HubSpot
        from urllib3.util.retry import Retry

        kw: dict[str, Any] = {"host": self.config.host, "retry": Retry(total=0, redirect=0)}
        if self._ca_file:
            kw["ssl_ca_cert"] = self._ca_file
        self._client = HubSpot(access_token=self._token, **kw)
        return self._client

    def _api(self, obj: str, which: str) -> Any:
        objects = self._hs().crm.objects
        return getattr(getattr(objects, obj), which)

    def _host(self) -> str:
        return urlparse(self.config.host).netloc

    # -- errors -------------------------------------------------------------------------
    def _map(self, exc: Exception) -> CrmError:
        import urllib3

        if isinstance(exc, CrmError):
            return exc
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            what = "timed out" if "timeout" in type(exc).__name__.lower() or "timed out" in str(exc) else "could not connect"
            return CrmUnavailable(
                f"HubSpot at {self._host()} is unreachable ({what})",
                hint="the action is kept and retried automatically; check the network or hubspot.host if it persists",
            )
        status = getattr(exc, "status", None)
        if status is None:
            return CrmRejected(f"unexpected {type(exc).__name__} talking to HubSpot: {exc}")
        data = _body(exc)
        msg = str(data.get("message") or getattr(exc, "reason", "") or "")[:400]
        cat = str(data.get("category") or "")
        if status == 0:
            return CrmUnavailable(f"HubSpot at {self._host()} is unreachable ({msg or 'TLS error'})",
                                  hint="check hubspot.host and the CA bundle; will retry")
        if status == 401:
            return CrmAuthError(
                f"HubSpot refused the access token (401 {cat or 'INVALID_AUTHENTICATION'}): {msg}".strip(),
                hint="the token is wrong, expired or revoked: " + CRED_HINT,
            )
        if status == 403:
            return CrmRejected(
                f"HubSpot refused the request (403 {cat}): {msg}".strip(),
                hint="give the private app the scopes crm.objects.contacts.write and crm.objects.companies.read "
                "(tasks and notes), and crm.objects.owners.read",
            )
        if status == 429:
            return CrmUnavailable(f"HubSpot rate limit reached (429): {msg}".strip(), hint="retried automatically later")
        if status >= 500:
            return CrmUnavailable(
                f"HubSpot answered {status}{': ' + msg if msg else ''}",
                hint="a temporary outage; the action is kept and retried automatically",
            )
        low = msg.lower()
        if status in (400, 404) and ("association" in low or "toobjectid" in low or "compan" in low):
            return CrmMissingAccount(
                f"HubSpot does not accept the company id ({status}): {msg}",
                hint="accounts.crm_id must hold the HubSpot company id (a number): fix the crm_id column mapping in "
                "config/sources.yaml",
            )
        if status == 400:
            prop = self.config.idempotency_property
            return CrmFieldError(
                f"HubSpot rejected a property (400 {cat or 'VALIDATION_ERROR'}): {msg}",
                hint=f"fix hubspot.values / extra_properties in config/crm.yaml, and create the text property {prop} "
                "on Tasks and Notes (Settings > Properties)",
            )
        return CrmRejected(f"HubSpot answered {status} {cat}: {msg}".strip())

    # -- mapping ------------------------------------------------------------------------
    @staticmethod
    def _obj(task: CrmTask) -> str:
        return "notes" if task.kind == "note" else "tasks"

    def _owner_id(self, email: str | None) -> str | None:
        if not email or not self.config.owner_lookup:
            return None
        email = email.lower()
        if email not in self._owner_ids:
            try:
                page = self._hs().crm.owners.owners_api.get_page(
                    email=email, archived=False, limit=1, _request_timeout=self.config.timeout_seconds
                )
            except Exception as exc:  # noqa: BLE001
                mapped = self._map(exc)
                if isinstance(mapped, (CrmUnavailable, CrmAuthError)):
                    raise mapped from None
                return None  # no owners scope: leave the owner to HubSpot
            results = getattr(page, "results", None) or []
            self._owner_ids[email] = str(results[0].id) if results else None
        return self._owner_ids[email]

    def properties(self, task: CrmTask, owner_id: str | None = None, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """The properties sent for `task` (with the key property added by the caller)."""
        v = self.config.values
        when = now or dt.datetime.now(dt.timezone.utc)
        body = task.body or ""
        if task.owner_email and owner_id is None and self.config.owner_lookup:
            body = (body + "\n\n" if body else "") + f"Owner: {task.owner_email} (no HubSpot owner with this e-mail)"
        if task.kind == "note":
            props: dict[str, Any] = {
                "hs_note_body": f"<p><strong>{html.escape(task.subject)}</strong></p>"
                + "".join(f"<p>{html.escape(line)}</p>" for line in body.split("\n") if line.strip()),
                "hs_timestamp": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            }
        else:
            due = (
                dt.datetime.combine(task.due_date, dt.time(9, 0), dt.timezone.utc)
                if task.kind == "task" and task.due_date is not None
                else when
            )
            props = {
                "hs_task_subject": task.subject[:255],
                "hs_task_body": body,
                "hs_task_status": v.open_status if task.kind == "task" else v.done_status,
                "hs_task_priority": v.priorities.get(task.priority, task.priority),
                "hs_task_type": v.task_types["email" if task.kind == "email" else "task"],
                "hs_timestamp": due.isoformat(timespec="seconds").replace("+00:00", "Z"),
            }
        if owner_id:
            props["hubspot_owner_id"] = owner_id
        props.update({k: v for k, v in self.config.extra_properties.items()})
        return props

    # -- the port -----------------------------------------------------------------------
    def _search(self, obj: str, key: str) -> str | None:
        from hubspot.crm.objects import Filter, FilterGroup, PublicObjectSearchRequest

        req = PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=[Filter(property_name=self.config.idempotency_property, operator="EQ", value=key)])],
            properties=[self.config.idempotency_property],
            limit=2,
        )
        try:
            res = self._api(obj, "search_api").do_search(
                public_object_search_request=req, _request_timeout=self.config.timeout_seconds
            )
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        results = getattr(res, "results", None) or []
        return str(results[0].id) if results else None

    def find_by_key(self, key: str) -> str | None:
        return self._search("tasks", key) or self._search("notes", key)

    def upsert_task(self, key: str, task: CrmTask) -> str:
        if not task.account_crm_id:
            raise CrmMissingAccount(
                f"account {task.account_id} has no CRM id, so the activity cannot be associated to a company",
                hint="map the HubSpot company id column to accounts.crm_id in config/sources.yaml",
            )
        obj = self._obj(task)
        try:
            props = self.properties(task, self._owner_id(task.owner_email))
            props[self.config.idempotency_property] = key
            existing = self._search(obj, key)
            if existing is not None:
                from hubspot.crm.objects import SimplePublicObjectInput

                self._api(obj, "basic_api").update(
                    existing, simple_public_object_input=SimplePublicObjectInput(properties=props),
                    _request_timeout=self.config.timeout_seconds,
                )
                return existing
            from hubspot.crm.objects import AssociationSpec, PublicAssociationsForObject, PublicObjectId
            from hubspot.crm.objects import SimplePublicObjectInputForCreate

            assoc = PublicAssociationsForObject(
                to=PublicObjectId(id=str(task.account_crm_id)),
                types=[AssociationSpec(association_category="HUBSPOT_DEFINED",
                                       association_type_id=self.config.association_types["note" if obj == "notes" else "task"])],
            )
            try:
                created = self._api(obj, "basic_api").create(
                    simple_public_object_input_for_create=SimplePublicObjectInputForCreate(properties=props, associations=[assoc]),
                    _request_timeout=self.config.timeout_seconds,
                )
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) == 409:  # the unique key property: made by an earlier attempt
                    found = self._search(obj, key)
                    if found:
                        return found
                    raise CrmUnavailable(
                        f"HubSpot already holds a {obj[:-1]} with {self.config.idempotency_property} = {key}, "
                        "but its search index has not caught up yet (409)",
                        hint="nothing is created twice; retried automatically in a minute",
                    ) from None
                raise
            return str(created.id)
        except CrmError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None


__all__ = ["HubSpotConfig", "HubSpotCredentialNames", "HubSpotSink", "HubSpotValues", "hubspot_credentials"]
