"""Salesforce as a CRM sink (`health.crm.CrmSink`), over the REST API with simple-salesforce.

Every action becomes ONE Salesforce Task, found again by the action's idempotency key:

* `idempotency.mode: external_id` (recommended): a custom Text field on Task/Activity
  marked *External ID* and *Unique* (e.g. `Idempotency_Key__c`). The sink upserts with
  `PATCH /sobjects/Task/<field>/<key>`: 201 creates, 204 (or 200) updates the same Task.
* `idempotency.mode: query` (orgs that cannot add an external-id field): the key is
  written into a filterable text field (a custom field, or `Subject` with `marker: true`,
  which appends " [chi:<key>]"); the sink queries for the key before it creates.
  (`Description` is a long text area, which SOQL cannot filter, so it cannot hold the key.)

How action types are logged (a choice, documented in docs/crm.md):

* task  -> an open Task (Status `Not Started`, TaskSubtype `Task`, due date, owner);
* email -> a completed Task with TaskSubtype `Email` and Type `Email` (the recipients at
  the top of the Description) — the way Salesforce itself logs an e-mail activity;
* note  -> a completed Task whose Subject starts with "Note: ". A ContentNote would need a
  ContentDocumentLink and cannot be upserted on an external id, so it could not be made
  idempotent; a completed Task shows on the account's activity history just the same.

Credentials come from the caller (the app passes `st.secrets["salesforce"]`) or the
environment (`SALESFORCE_USERNAME`, ...; the names are in config/crm.yaml): either
username + password + security_token (+ domain: login / test / My Domain), or session_id
+ instance_url. They are never logged, printed or put in an error message.

Failures become the typed errors of `health.crm`, each naming the fix: `CrmUnavailable`
(unreachable, 5xx, request limit — retried), `CrmAuthError` (login failed, 401
INVALID_SESSION_ID), `CrmFieldError` (400 INVALID_FIELD and friends, missing external-id
field), `CrmMissingAccount` (no or unknown account crm_id), `CrmRejected` (the rest).
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal, Mapping
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

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

_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
CREATE_ONLY_FIELDS = ("TaskSubtype",)
"""Task fields Salesforce accepts on create but refuses on update."""

FIELD_ERROR_CODES = {
    "INVALID_FIELD",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "INVALID_TYPE_ON_FIELD_IN_RECORD",
    "FIELD_INTEGRITY_EXCEPTION",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    "REQUIRED_FIELD_MISSING",
    "STRING_TOO_LONG",
    "JSON_PARSER_ERROR",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
}
ACCOUNT_ERROR_CODES = {"MALFORMED_ID", "INVALID_CROSS_REFERENCE_KEY", "INVALID_ID_FIELD", "ENTITY_IS_DELETED"}

# ------------------------------------------------------------------------------ config


def _api_name(v: str | None) -> str | None:
    if v is not None and not _API_NAME.match(v):
        raise ValueError(f"{v!r} is not a Salesforce field API name (letters, digits, _)")
    return v


class Idempotency(Strict):
    mode: Literal["external_id", "query"] = "external_id"
    field: str = "Idempotency_Key__c"
    marker: bool = False
    """query mode only: append ' [chi:<key>]' to the field's value (for Subject)."""

    @field_validator("field")
    @classmethod
    def _field(cls, v: str) -> str:
        return _api_name(v)  # type: ignore[return-value]

    @model_validator(mode="after")
    def _modes(self) -> "Idempotency":
        if self.field == "Description" and self.mode == "query":
            raise ValueError(
                "Task.Description is a long text area, which SOQL cannot filter: keep the key in a custom "
                "text field, or in Subject with `marker: true`"
            )
        if self.marker and self.mode != "query":
            raise ValueError("`marker` only applies to `mode: query`")
        return self


class TaskFields(Strict):
    """Which Task field receives each part of an action (null: do not send it)."""

    account: str = "WhatId"
    subject: str = "Subject"
    body: str | None = "Description"
    due_date: str | None = "ActivityDate"
    status: str | None = "Status"
    priority: str | None = "Priority"
    owner: str | None = "OwnerId"
    type: str | None = "Type"
    subtype: str | None = "TaskSubtype"

    @field_validator("*")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return _api_name(v)


class TaskValues(Strict):
    open_status: str = "Not Started"
    done_status: str = "Completed"
    priorities: dict[Literal["low", "normal", "high"], str] = Field(
        default_factory=lambda: {"low": "Low", "normal": "Normal", "high": "High"}
    )
    types: dict[Literal["task", "email", "note"], str | None] = Field(
        default_factory=lambda: {"task": None, "email": "Email", "note": None}
    )
    subtypes: dict[Literal["task", "email", "note"], str] = Field(
        default_factory=lambda: {"task": "Task", "email": "Email", "note": "Task"}
    )
    note_subject_prefix: str = "Note: "


class CredentialNames(Strict):
    """Where the secrets come from: a secrets.toml section (the app) and env vars."""

    secrets_section: str = "salesforce"
    env: dict[Literal["username", "password", "security_token", "session_id", "instance_url", "domain"], str] = Field(
        default_factory=lambda: {
            "username": "SALESFORCE_USERNAME",
            "password": "SALESFORCE_PASSWORD",
            "security_token": "SALESFORCE_SECURITY_TOKEN",
            "session_id": "SALESFORCE_SESSION_ID",
            "instance_url": "SALESFORCE_INSTANCE_URL",
            "domain": "SALESFORCE_DOMAIN",
        }
    )


class AccountHealth(Strict):
    """Optional: `python -m health run` writes each account's score and tier onto the
    Salesforce Account (custom fields; PATCH /sobjects/Account/<crm_id>)."""

    enabled: bool = False
    object: str = "Account"
    fields: dict[Literal["score", "tier", "as_of"], str | None] = Field(
        default_factory=lambda: {"score": "Health_Score__c", "tier": "Health_Tier__c", "as_of": "Health_Score_Date__c"}
    )
    tiers: dict[str, str] = Field(
        default_factory=lambda: {"at_risk": "At risk", "watch": "Watch", "healthy": "Healthy",
                                 "insufficient_data": "Insufficient data"}
    )

    @field_validator("object")
    @classmethod
    def _object(cls, v: str) -> str:
        return _api_name(v)  # type: ignore[return-value]

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for name in v.values():
            _api_name(name)
        return v


class SalesforceConfig(Strict):
    api_version: str = "62.0"
    domain: str = "login"
    timeout_seconds: float = Field(default=20, gt=0, le=300)
    owner_lookup: bool = True
    """Resolve the owner's e-mail to a User Id (SELECT Id FROM User WHERE Email = ...)."""
    idempotency: Idempotency = Field(default_factory=Idempotency)
    fields: TaskFields = Field(default_factory=TaskFields)
    values: TaskValues = Field(default_factory=TaskValues)
    extra_fields: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Constant fields added to every Task (e.g. a record type or a source picklist)."""
    credentials: CredentialNames = Field(default_factory=CredentialNames)
    account_health: AccountHealth = Field(default_factory=AccountHealth)

    @field_validator("api_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.match(r"^\d{2}\.\d$", str(v)):
            raise ValueError(f"api_version {v!r} must look like 62.0")
        return str(v)

    @field_validator("extra_fields")
    @classmethod
    def _extra(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            _api_name(k)
        return v


# ------------------------------------------------------------------------- credentials

CREDENTIAL_KEYS = ("username", "password", "security_token", "session_id", "instance_url", "domain")


def credentials_from(
    secrets: Mapping[str, Any] | None,
    config: SalesforceConfig,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The credentials to use: the caller's mapping (e.g. st.secrets["salesforce"]) wins,
    else the environment variables named in config/crm.yaml."""
    out: dict[str, str] = {}
    if secrets:
        for k in CREDENTIAL_KEYS:
            v = secrets.get(k) if hasattr(secrets, "get") else None
            if v not in (None, ""):
                out[k] = str(v)
    if not (_has_password(out) or _has_session(out)):
        env = os.environ if environ is None else environ
        for k, name in config.credentials.env.items():
            v = env.get(name)
            if v and k not in out:
                out[k] = v
    return out


def _has_password(c: Mapping[str, str]) -> bool:
    return all(c.get(k) for k in ("username", "password", "security_token"))


def _has_session(c: Mapping[str, str]) -> bool:
    return all(c.get(k) for k in ("session_id", "instance_url"))


# ------------------------------------------------------------------------ http session


def http_session(verify: bool | str = True, *, trust_env: bool = True, timeout: float = 20.0):  # noqa: ANN201
    """A requests.Session with a default timeout (simple-salesforce sets none). `verify`:
    True, or the path of a CA bundle; `trust_env=False` ignores REQUESTS_CA_BUNDLE and
    proxy variables (needed for a loopback server with its own CA)."""
    import requests

    class _TimeoutSession(requests.Session):
        def request(self, method, url, **kwargs):  # type: ignore[no-untyped-def, override]
            kwargs.setdefault("timeout", timeout)
            return super().request(method, url, **kwargs)

    s = _TimeoutSession()
    s.verify = verify
    s.trust_env = trust_env
    return s


# ------------------------------------------------------------------------------- errors


def _errors(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [e for e in content if isinstance(e, dict)]
    if isinstance(content, dict):
        return [content]
    return [{"errorCode": "", "message": str(content)[:300]}]


def _first(content: Any) -> tuple[str, str, list[str]]:
    errs = _errors(content)
    if not errs:
        return "", "", []
    e = errs[0]
    return str(e.get("errorCode", "")), str(e.get("message", "")), [str(f) for f in e.get("fields") or []]


CRED_HINT = (
    "set [salesforce] username, password and security_token (or session_id and instance_url) in "
    ".streamlit/secrets.toml, or the SALESFORCE_* environment variables named in config/crm.yaml"
)


class SalesforceSink:
    """`health.crm.CrmSink` over Salesforce REST (see the module docstring)."""

    name = "salesforce"

    def __init__(
        self,
        config: SalesforceConfig | None = None,
        credentials: Mapping[str, Any] | None = None,
        *,
        session: Any = None,
        environ: Mapping[str, str] | None = None,
    ):
        self.config = config or SalesforceConfig()
        self._credentials = credentials_from(credentials, self.config, environ)
        self._session = session
        self._sf: Any = None
        self._owner_ids: dict[str, str | None] = {}

    def __repr__(self) -> str:  # never show the credentials
        c = self._credentials
        how = "password" if _has_password(c) else "session" if _has_session(c) else "no credentials"
        where = urlparse(c["instance_url"]).hostname if c.get("instance_url") else c.get("domain") or self.config.domain
        return f"SalesforceSink({how}, {where}, key={self.config.idempotency.mode}:{self.config.idempotency.field})"

    def describe(self) -> str:
        return repr(self).removeprefix("SalesforceSink(").removesuffix(")")

    # -- connection ---------------------------------------------------------------------
    def _client(self) -> Any:
        if self._sf is not None:
            return self._sf
        from simple_salesforce import Salesforce

        c = self._credentials
        session = self._session or http_session(timeout=self.config.timeout_seconds)
        try:
            if _has_password(c):
                self._sf = Salesforce(
                    username=c["username"], password=c["password"], security_token=c["security_token"],
                    domain=c.get("domain") or self.config.domain, version=self.config.api_version, session=session,
                )
            elif _has_session(c):
                url = c["instance_url"]
                if not url.startswith(("https://", "http://")):
                    url = "https://" + url
                self._sf = Salesforce(
                    session_id=c["session_id"], instance_url=url, version=self.config.api_version, session=session
                )
            else:
                raise CrmAuthError("no Salesforce credentials are configured", hint=CRED_HINT)
        except CrmError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        return self._sf

    def _host(self) -> str:
        c = self._credentials
        if c.get("instance_url"):
            return urlparse(c["instance_url"] if "://" in c["instance_url"] else "https://" + c["instance_url"]).netloc
        return f"{c.get('domain') or self.config.domain}.salesforce.com"

    # -- errors -------------------------------------------------------------------------
    def _map(self, exc: Exception) -> CrmError:
        import requests
        from simple_salesforce.exceptions import (
            SalesforceAuthenticationFailed,
            SalesforceError,
            SalesforceExpiredSession,
            SalesforceMalformedRequest,
            SalesforceMoreThanOneRecord,
            SalesforceRefusedRequest,
            SalesforceResourceNotFound,
        )

        if isinstance(exc, CrmError):
            return exc
        if isinstance(exc, requests.exceptions.SSLError):
            return CrmUnavailable(
                f"TLS handshake with Salesforce at {self._host()} failed",
                hint="check the instance URL and the CA bundle (REQUESTS_CA_BUNDLE); will retry",
            )
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            what = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "could not connect"
            return CrmUnavailable(
                f"Salesforce at {self._host()} is unreachable ({what})",
                hint="the action is kept and retried automatically; check the network or instance URL if it persists",
            )
        if isinstance(exc, SalesforceAuthenticationFailed):
            code = getattr(exc, "code", "") or ""
            msg = getattr(exc, "auth_message", None) or getattr(exc, "message", "") or ""
            return CrmAuthError(
                f"Salesforce login failed ({code}): {msg}".strip(),
                hint="check username, password and security token (a new token is e-mailed after a password "
                "change); use domain = 'test' for a sandbox or your My Domain; " + CRED_HINT,
            )
        if isinstance(exc, SalesforceExpiredSession):
            code, msg, _ = _first(exc.content)
            return CrmAuthError(
                f"Salesforce refused the session (401 {code or 'INVALID_SESSION_ID'}): {msg}".strip(),
                hint="the session id is expired or wrong: refresh session_id in [salesforce] of .streamlit/secrets.toml, "
                "or give username/password/security_token so the client logs in again",
            )
        if isinstance(exc, SalesforceMalformedRequest):
            code, msg, fields = _first(exc.content)
            acct = self.config.fields.account
            if code in ACCOUNT_ERROR_CODES and (acct in fields or acct.lower() in msg.lower() or "id" in msg.lower()):
                return CrmMissingAccount(
                    f"Salesforce does not accept the account id ({code}): {msg}",
                    hint="accounts.crm_id must hold the account's 18-character Salesforce Id: fix the crm_id column "
                    "mapping in config/sources.yaml",
                )
            if code in FIELD_ERROR_CODES:
                return CrmFieldError(
                    f"Salesforce rejected a Task field (400 {code}): {msg}"
                    + (f" [fields: {', '.join(fields)}]" if fields else ""),
                    hint="fix salesforce.fields / salesforce.values in config/crm.yaml: every field must exist on Task "
                    "and be writable by the integration user, and picklist values must exist in your org",
                )
            return CrmRejected(f"Salesforce refused the request (400 {code}): {msg}")
        if isinstance(exc, SalesforceResourceNotFound):
            code, msg, _ = _first(exc.content)
            if "external id" in msg.lower() or "external_id" in msg.lower():
                f = self.config.idempotency.field
                return CrmFieldError(
                    f"Salesforce has no external-id field {f} on Task (404 {code}): {msg}",
                    hint=f"create {f} on Activity (Text(80), External ID, Unique) and give the integration user "
                    "access, or set salesforce.idempotency.mode: query in config/crm.yaml",
                )
            return CrmRejected(f"Salesforce resource not found (404 {code}): {msg}")
        if isinstance(exc, SalesforceRefusedRequest):
            code, msg, _ = _first(exc.content)
            if code == "REQUEST_LIMIT_EXCEEDED":
                return CrmUnavailable(f"Salesforce API request limit exceeded: {msg}", hint="retried automatically later")
            return CrmRejected(
                f"Salesforce refused the request (403 {code}): {msg}",
                hint="give the integration user create/edit access to Tasks and read access to Users",
            )
        if isinstance(exc, SalesforceMoreThanOneRecord):
            return CrmRejected(
                f"several Tasks carry the same key in {self.config.idempotency.field}",
                hint="mark the field Unique in Salesforce and delete the duplicates",
            )
        if isinstance(exc, SalesforceError):
            status = getattr(exc, "status", 0) or 0
            code, msg, _ = _first(getattr(exc, "content", ""))
            if status >= 500:
                return CrmUnavailable(
                    f"Salesforce answered {status}{' ' + code if code else ''}{': ' + msg if msg else ''}",
                    hint="a temporary outage; the action is kept and retried automatically",
                )
            return CrmRejected(f"Salesforce answered {status} {code}: {msg}".strip())
        return CrmRejected(f"unexpected {type(exc).__name__} talking to Salesforce: {exc}")

    # -- mapping ------------------------------------------------------------------------
    def _owner_id(self, sf: Any, email: str | None) -> str | None:
        if not email or not self.config.owner_lookup or not self.config.fields.owner:
            return None
        email = email.lower()
        if email not in self._owner_ids:
            from simple_salesforce.format import format_soql

            try:
                res = sf.query(format_soql("SELECT Id FROM User WHERE Email = {} AND IsActive = true LIMIT 1", email))
            except Exception as exc:  # noqa: BLE001
                mapped = self._map(exc)
                if isinstance(mapped, (CrmUnavailable, CrmAuthError)):
                    raise mapped from None
                return None  # an org without access to User: leave the owner to Salesforce
            recs = res.get("records") or []
            self._owner_ids[email] = recs[0]["Id"] if recs else None
        return self._owner_ids[email]

    def record(self, task: CrmTask, owner_id: str | None = None) -> dict[str, Any]:
        """The Task fields sent for `task` (without the key)."""
        f, v = self.config.fields, self.config.values
        subject = task.subject
        if task.kind == "note" and not subject.startswith(v.note_subject_prefix):
            subject = v.note_subject_prefix + subject
        body = task.body or ""
        if task.owner_email and owner_id is None and f.owner:
            body = (body + "\n\n" if body else "") + f"Owner: {task.owner_email} (no active Salesforce user with this e-mail)"
        data: dict[str, Any] = {f.account: task.account_crm_id, f.subject: subject[:255]}
        if f.body:
            data[f.body] = body
        if f.due_date and task.due_date is not None:
            data[f.due_date] = task.due_date.isoformat()
        if f.status:
            data[f.status] = v.open_status if task.kind == "task" else v.done_status
        if f.priority:
            data[f.priority] = v.priorities.get(task.priority, task.priority)
        if f.owner and owner_id:
            data[f.owner] = owner_id
        if f.type and v.types.get(task.kind):
            data[f.type] = v.types[task.kind]
        if f.subtype and v.subtypes.get(task.kind):
            data[f.subtype] = v.subtypes[task.kind]
        data.update(self.config.extra_fields)
        return data

    def _marker(self, key: str) -> str:
        return f"[chi:{key}]"

    # -- the port -----------------------------------------------------------------------
    def find_by_key(self, key: str) -> str | None:
        from simple_salesforce.format import format_soql

        sf = self._client()
        idem = self.config.idempotency
        if idem.mode == "query" and idem.marker:
            soql = format_soql("SELECT Id FROM Task WHERE {:literal} LIKE '%{:like}%' LIMIT 2", idem.field, self._marker(key))
        else:
            soql = format_soql("SELECT Id FROM Task WHERE {:literal} = {} LIMIT 2", idem.field, key)
        try:
            res = sf.query(soql)
        except Exception as exc:  # noqa: BLE001
            mapped = self._map(exc)
            if isinstance(mapped, CrmRejected) and "INVALID_FIELD" in str(mapped):
                raise CrmFieldError(
                    str(mapped),
                    hint=f"create the field {idem.field} on Task, or point salesforce.idempotency.field at one that exists",
                ) from None
            raise mapped from None
        recs = res.get("records") or []
        return recs[0]["Id"] if recs else None

    def upsert_task(self, key: str, task: CrmTask) -> str:
        if not task.account_crm_id:
            raise CrmMissingAccount(
                f"account {task.account_id} has no CRM id, so the Task cannot be attached to it",
                hint="map the Salesforce Account Id column to accounts.crm_id in config/sources.yaml",
            )
        sf = self._client()
        idem = self.config.idempotency
        try:
            data = self.record(task, self._owner_id(sf, task.owner_email))
            if idem.mode == "external_id":
                try:
                    resp = sf.Task.upsert(f"{idem.field}/{key}", data, raw_response=True)
                except Exception as exc:  # noqa: BLE001
                    mapped = self._map(exc)
                    # Already created by an earlier attempt whose answer was lost: an update
                    # may not touch create-only fields (TaskSubtype). The Task is there.
                    if isinstance(mapped, CrmFieldError) and any(c in str(mapped) for c in CREATE_ONLY_FIELDS):
                        found = self.find_by_key(key)
                        if found:
                            return found
                    raise mapped from None
                body: Any = None
                if resp.content:
                    try:
                        body = resp.json()
                    except ValueError:
                        body = None
                if isinstance(body, dict) and body.get("id"):
                    return str(body["id"])
                found = self.find_by_key(key)
                if found is None:
                    raise CrmRejected(f"Salesforce answered {resp.status_code} to the upsert but no Task carries key {key}")
                return found
            existing = self.find_by_key(key)
            if existing is not None:
                return existing
            if idem.marker:
                base = str(data.get(idem.field) or "")
                mark = self._marker(key)
                data[idem.field] = (base[: 254 - len(mark)] + " " + mark).strip()
            else:
                data[idem.field] = key
            res = sf.Task.create(data)
            return str(res["id"])
        except CrmError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None

    def update_account_health(self, crm_id: str, score: float | None, tier: str | None, as_of: Any) -> None:
        """`health.crm.AccountHealthWriter`: set the score / tier / date fields of the
        Account (salesforce.account_health in config/crm.yaml). Idempotent: a PATCH of
        the same values."""
        cfg = self.config.account_health
        data: dict[str, Any] = {}
        if cfg.fields.get("score"):
            data[cfg.fields["score"]] = score
        if cfg.fields.get("tier"):
            data[cfg.fields["tier"]] = cfg.tiers.get(tier or "", tier)
        if cfg.fields.get("as_of"):
            data[cfg.fields["as_of"]] = as_of.isoformat() if hasattr(as_of, "isoformat") else str(as_of)
        if not data:
            return
        sf = self._client()
        try:
            getattr(sf, cfg.object).update(crm_id, data)
        except Exception as exc:  # noqa: BLE001
            from simple_salesforce.exceptions import SalesforceResourceNotFound

            mapped = self._map(exc)
            if isinstance(exc, SalesforceResourceNotFound) or isinstance(mapped, CrmMissingAccount):
                raise CrmMissingAccount(
                    f"Salesforce has no {cfg.object} {crm_id}",
                    hint="accounts.crm_id must hold the account's Salesforce Id: fix the crm_id column mapping in "
                    "config/sources.yaml",
                ) from None
            if isinstance(mapped, CrmFieldError):
                raise CrmFieldError(
                    mapped.message,
                    hint=f"create the fields {', '.join(str(f) for f in cfg.fields.values() if f)} on {cfg.object} "
                    "(writable by the integration user), or fix salesforce.account_health in config/crm.yaml",
                ) from None
            raise mapped from None


__all__ = [
    "AccountHealth",
    "CredentialNames",
    "Idempotency",
    "SalesforceConfig",
    "SalesforceSink",
    "TaskFields",
    "TaskValues",
    "credentials_from",
    "http_session",
]
