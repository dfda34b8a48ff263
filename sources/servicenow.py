"""ServiceNow as a CRM sink (`health.crm.CrmSink`), over the REST Table API with `requests`.

Every action becomes ONE record in a task-derived table (default `sn_customerservice_case`,
or `task`, or any table extending it) on the customer account (`accounts.crm_id` = the
sys_id of the `customer_account` record):

* task  -> an open record (state `values.open_state`, due date, priority, assigned_to);
* email -> a closed record whose short description starts with "Email: ", the recipients
  at the top of the description, the text also written to the `work_notes` journal;
* note  -> a closed record starting with "Note: ", the text in the `work_notes` journal.

Idempotency: the action's key goes into `correlation_id` (a field every task has, meant
for exactly this: the id of the record in the system that created it) with
`correlation_display` = "CHI". Before inserting, the sink queries the table for the key
(`GET /api/now/table/<table>?sysparm_query=correlation_id=<key>`); found -> it updates
that record (`PATCH`) and returns its sys_id. The Table API reads its own writes, so a
retry after a lost answer finds the record.

Credentials come from the caller (`st.secrets["servicenow"]`) or the environment
(`SERVICENOW_INSTANCE_URL`, `SERVICENOW_USERNAME`, `SERVICENOW_PASSWORD`, or
`SERVICENOW_TOKEN` for an OAuth bearer token; names in config/crm.yaml). Never logged,
printed or put in an error message.

Failures become the typed errors of `health.crm`: `CrmUnavailable` (unreachable, 5xx,
429, a hibernating instance answering HTML — retried), `CrmAuthError` (401),
`CrmFieldError` (400: an invalid table or field), `CrmMissingAccount` (no crm_id, or no
customer_account with that sys_id), `CrmRejected` (403 ACL and the rest).
"""

from __future__ import annotations

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

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _name(v: str | None) -> str | None:
    if v is not None and not _NAME.match(v):
        raise ValueError(f"{v!r} is not a ServiceNow table or field name (lower case letters, digits, _)")
    return v


class ServiceNowFields(Strict):
    account: str = "account"
    subject: str = "short_description"
    body: str | None = "description"
    journal: str | None = "work_notes"
    due_date: str | None = "due_date"
    state: str | None = "state"
    priority: str | None = "priority"
    owner: str | None = "assigned_to"

    @field_validator("*")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return _name(v)


class ServiceNowValues(Strict):
    open_state: str = "1"
    done_state: str = "3"
    priorities: dict[Literal["low", "normal", "high"], str] = Field(
        default_factory=lambda: {"low": "4", "normal": "3", "high": "2"}
    )
    subject_prefixes: dict[Literal["task", "email", "note"], str] = Field(
        default_factory=lambda: {"task": "", "email": "Email: ", "note": "Note: "}
    )


class ServiceNowCredentialNames(Strict):
    secrets_section: str = "servicenow"
    env: dict[Literal["instance_url", "username", "password", "token"], str] = Field(
        default_factory=lambda: {
            "instance_url": "SERVICENOW_INSTANCE_URL",
            "username": "SERVICENOW_USERNAME",
            "password": "SERVICENOW_PASSWORD",
            "token": "SERVICENOW_TOKEN",
        }
    )


class ServiceNowConfig(Strict):
    instance_url: str | None = None
    """https://<instance>.service-now.com (or [servicenow] instance_url in secrets)."""
    table: str = "sn_customerservice_case"
    account_table: str | None = "customer_account"
    """Check the account's sys_id exists there before the first write (null: do not check)."""
    timeout_seconds: float = Field(default=20, gt=0, le=300)
    owner_lookup: bool = True
    """Map the owner's e-mail to a sys_user (assigned_to)."""
    correlation_field: str = "correlation_id"
    correlation_display: str | None = "CHI"
    fields: ServiceNowFields = Field(default_factory=ServiceNowFields)
    values: ServiceNowValues = Field(default_factory=ServiceNowValues)
    extra_fields: dict[str, str | int | float | bool] = Field(default_factory=dict)
    credentials: ServiceNowCredentialNames = Field(default_factory=ServiceNowCredentialNames)

    @field_validator("table", "account_table", "correlation_field")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return _name(v)

    @field_validator("instance_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"instance_url {v!r} must be a URL such as https://acme.service-now.com")
        return v.rstrip("/") if v else v

    @field_validator("extra_fields")
    @classmethod
    def _extra(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            _name(k)
        return v


CRED_HINT = (
    "set [servicenow] instance_url with username + password (or token) in .streamlit/secrets.toml, or the "
    "SERVICENOW_* environment variables named in config/crm.yaml"
)
KEYS = ("instance_url", "username", "password", "token")


def servicenow_credentials(
    secrets: Mapping[str, Any] | None, config: ServiceNowConfig, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    out: dict[str, str] = {}
    if secrets and hasattr(secrets, "get"):
        for k in KEYS:
            v = secrets.get(k)
            if v not in (None, ""):
                out[k] = str(v)
    env = os.environ if environ is None else environ
    for k, name in config.credentials.env.items():
        v = env.get(name)
        if v and k not in out:
            out[k] = v
    return out


def _usable(c: Mapping[str, str]) -> bool:
    return bool(c.get("token") or (c.get("username") and c.get("password")))


class ServiceNowSink:
    """`health.crm.CrmSink` over the ServiceNow Table API (see the module docstring)."""

    name = "servicenow"

    def __init__(
        self,
        config: ServiceNowConfig | None = None,
        credentials: Mapping[str, Any] | None = None,
        *,
        session: Any = None,
        environ: Mapping[str, str] | None = None,
    ):
        self.config = config or ServiceNowConfig()
        self._creds = servicenow_credentials(credentials, self.config, environ)
        self._session = session
        self._owner_ids: dict[str, str | None] = {}
        self._accounts: dict[str, bool] = {}

    @property
    def base(self) -> str:
        return (self._creds.get("instance_url") or self.config.instance_url or "").rstrip("/")

    def __repr__(self) -> str:  # never show the credentials
        how = "token" if self._creds.get("token") else "password" if _usable(self._creds) else "no credentials"
        return f"ServiceNowSink({how}, {urlparse(self.base).netloc or 'no instance'}, table={self.config.table})"

    def describe(self) -> str:
        return repr(self).removeprefix("ServiceNowSink(").removesuffix(")")

    # -- http ---------------------------------------------------------------------------
    def _http(self) -> Any:
        if not self.base:
            raise CrmAuthError("no ServiceNow instance_url is configured", hint=CRED_HINT)
        if not _usable(self._creds):
            raise CrmAuthError("no ServiceNow credentials are configured", hint=CRED_HINT)
        if self._session is None:
            from sources.salesforce import http_session

            self._session = http_session(timeout=self.config.timeout_seconds)
        return self._session

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None) -> dict[str, Any]:
        import requests

        s = self._http()
        headers = {"Accept": "application/json"}
        auth = None
        if self._creds.get("token"):
            headers["Authorization"] = f"Bearer {self._creds['token']}"
        else:
            auth = (self._creds["username"], self._creds["password"])
        try:
            r = s.request(method, f"{self.base}{path}", params=params, json=json, headers=headers, auth=auth,
                          timeout=self.config.timeout_seconds)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            what = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "could not connect"
            raise CrmUnavailable(
                f"ServiceNow at {urlparse(self.base).netloc} is unreachable ({what})",
                hint="the action is kept and retried automatically; check the network or instance_url if it persists",
            ) from None
        try:
            data = r.json() if r.content else {}
        except ValueError:
            data = None
        if r.status_code >= 400 or data is None:
            err = self._error(r.status_code, data)
            err.status = r.status_code  # type: ignore[attr-defined]
            raise err
        return data if isinstance(data, dict) else {}

    def _error(self, status: int, data: Any) -> CrmError:
        err = (data or {}).get("error") if isinstance(data, dict) else None
        msg = ""
        if isinstance(err, dict):
            msg = " — ".join(str(x) for x in (err.get("message"), err.get("detail")) if x)[:400]
        host = urlparse(self.base).netloc
        if data is None and status < 400:
            return CrmUnavailable(
                f"ServiceNow at {host} answered HTML instead of JSON (the instance may be hibernating or waking up)",
                hint="retried automatically; wake the instance (developer instances sleep) or check instance_url",
            )
        if status == 401:
            return CrmAuthError(
                f"ServiceNow refused the credentials (401): {msg}".strip(),
                hint="the username/password or token is wrong or expired: " + CRED_HINT,
            )
        if status == 403:
            return CrmRejected(
                f"ServiceNow refused the request (403): {msg}".strip(),
                hint=f"give the integration user create/write on {self.config.table} (e.g. the sn_customerservice_agent "
                "or itil role) and read on customer_account and sys_user",
            )
        if status == 429:
            return CrmUnavailable(f"ServiceNow rate limit reached (429): {msg}".strip(), hint="retried automatically later")
        if status >= 500:
            return CrmUnavailable(
                f"ServiceNow answered {status}{': ' + msg if msg else ''}",
                hint="a temporary outage; the action is kept and retried automatically",
            )
        if status == 400 or (status == 404 and "table" in msg.lower()):
            return CrmFieldError(
                f"ServiceNow rejected the record ({status}): {msg}",
                hint="fix servicenow.table / fields / values in config/crm.yaml (the table must extend task and every "
                "field exist on it)",
            )
        return CrmRejected(f"ServiceNow answered {status}: {msg}".strip())

    # -- mapping ------------------------------------------------------------------------
    def _owner_id(self, email: str | None) -> str | None:
        if not email or not self.config.owner_lookup or not self.config.fields.owner:
            return None
        email = email.lower()
        if email not in self._owner_ids:
            try:
                res = self._call("GET", "/api/now/table/sys_user", params={
                    "sysparm_query": f"email={email}^active=true", "sysparm_fields": "sys_id", "sysparm_limit": "1"})
            except (CrmUnavailable, CrmAuthError):
                raise
            except CrmError:
                return None  # no read on sys_user: leave assigned_to empty
            rows = res.get("result") or []
            self._owner_ids[email] = rows[0]["sys_id"] if rows else None
        return self._owner_ids[email]

    def _check_account(self, task: CrmTask) -> None:
        sys_id = str(task.account_crm_id)
        table = self.config.account_table
        if not table or self._accounts.get(sys_id):
            return
        try:
            self._call("GET", f"/api/now/table/{table}/{sys_id}", params={"sysparm_fields": "sys_id"})
        except CrmError as exc:
            if getattr(exc, "status", None) == 404:
                raise CrmMissingAccount(
                    f"ServiceNow has no {table} with sys_id {sys_id} (account {task.account_id})",
                    hint="accounts.crm_id must hold the sys_id of the customer account: fix the crm_id column mapping "
                    "in config/sources.yaml",
                ) from None
            raise
        self._accounts[sys_id] = True

    def record(self, task: CrmTask, owner_id: str | None = None) -> dict[str, Any]:
        f, v = self.config.fields, self.config.values
        subject = task.subject
        prefix = v.subject_prefixes.get(task.kind, "")
        if prefix and not subject.startswith(prefix):
            subject = prefix + subject
        body = task.body or ""
        if task.owner_email and owner_id is None and f.owner and self.config.owner_lookup:
            body = (body + "\n\n" if body else "") + f"Owner: {task.owner_email} (no active ServiceNow user with this e-mail)"
        data: dict[str, Any] = {f.account: task.account_crm_id, f.subject: subject[:160]}
        if f.body:
            data[f.body] = body
        if f.journal and task.kind != "task" and body:
            data[f.journal] = body
        if f.due_date and task.kind == "task" and task.due_date is not None:
            data[f.due_date] = f"{task.due_date.isoformat()} 09:00:00"
        if f.state:
            data[f.state] = v.open_state if task.kind == "task" else v.done_state
        if f.priority:
            data[f.priority] = v.priorities.get(task.priority, task.priority)
        if f.owner and owner_id:
            data[f.owner] = owner_id
        if self.config.correlation_display:
            data["correlation_display"] = self.config.correlation_display
        data.update(self.config.extra_fields)
        return data

    # -- the port -----------------------------------------------------------------------
    def find_by_key(self, key: str) -> str | None:
        if "^" in key or "=" in key:
            raise CrmRejected(f"the key {key!r} cannot be used in a ServiceNow encoded query")
        res = self._call("GET", f"/api/now/table/{self.config.table}", params={
            "sysparm_query": f"{self.config.correlation_field}={key}",
            "sysparm_fields": "sys_id,number", "sysparm_limit": "2"})
        rows = res.get("result") or []
        return rows[0]["sys_id"] if rows else None

    def upsert_task(self, key: str, task: CrmTask) -> str:
        if not task.account_crm_id:
            raise CrmMissingAccount(
                f"account {task.account_id} has no CRM id, so the record cannot be put on the customer account",
                hint="map the ServiceNow customer_account sys_id column to accounts.crm_id in config/sources.yaml",
            )
        table = self.config.table
        existing = self.find_by_key(key)
        data = self.record(task, self._owner_id(task.owner_email))
        data[self.config.correlation_field] = key
        if existing is not None:
            update = {k: val for k, val in data.items() if k != self.config.fields.journal}  # no second journal entry
            self._call("PATCH", f"/api/now/table/{table}/{existing}", json=update,
                       params={"sysparm_exclude_reference_link": "true"})
            return existing
        self._check_account(task)
        res = self._call("POST", f"/api/now/table/{table}", json=data, params={"sysparm_exclude_reference_link": "true"})
        sys_id = (res.get("result") or {}).get("sys_id")
        if not sys_id:
            found = self.find_by_key(key)
            if found is None:
                raise CrmRejected(f"ServiceNow answered the insert without a sys_id and no record carries key {key}")
            return found
        return str(sys_id)


__all__ = ["ServiceNowConfig", "ServiceNowFields", "ServiceNowSink", "ServiceNowValues", "servicenow_credentials"]
