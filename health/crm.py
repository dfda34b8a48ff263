"""The write-back ports: what a CRM sink and a mailer must do, and the errors they raise.

`health/` defines these protocols; `sources/` implements them (`sources.salesforce`,
`sources.smtp_mailer`). The outbox in `health.actions` only ever talks to these
protocols, so it is tested without a network and works with any CRM that can
"create or update the task with this key".

Idempotency is part of the contract: `upsert_task(key, task)` called twice with the same
key must leave ONE record in the CRM (an upsert on an external-id field, or a look-up of
the key before a create) and return its id both times.

Errors are typed so the app can say what to fix. Every `CrmError` carries `retryable`
(a network outage or a 503 will likely pass by itself; bad credentials will not) and a
`hint` naming the fix. Messages never contain secrets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

ActionType = Literal["task", "email", "note"]
ACTION_TYPES: tuple[str, ...] = ("task", "email", "note")


# ---------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class CrmTask:
    """A CRM activity, neutral of any CRM's field names.

    `kind` says how it is logged: an open task (`task`), an e-mail that was sent
    (`email`, logged completed), or a note (`note`, logged completed). The adapter maps
    the fields onto its CRM (see config/crm.yaml for Salesforce)."""

    kind: ActionType
    subject: str
    account_id: str
    account_crm_id: str | None
    body: str = ""
    due_date: dt.date | None = None
    owner_email: str | None = None
    priority: Literal["low", "normal", "high"] = "normal"
    email_to: tuple[str, ...] = ()
    created_by: str | None = None


@dataclass(frozen=True)
class Mail:
    """One e-mail to send. `message_id` is derived from the action's idempotency key, so
    a receiving system can recognise a resend."""

    to: tuple[str, ...]
    subject: str
    body: str
    message_id: str
    sender: str | None = None
    reply_to: str | None = None
    cc: tuple[str, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------ errors


class CrmError(Exception):
    """A write-back failed. `retryable`: worth trying again later without a change;
    `hint`: what to fix (shown next to the error in the app)."""

    retryable: bool = False
    kind: str = "error"

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class CrmUnavailable(CrmError):
    """The CRM could not be reached or is temporarily unavailable (connection refused,
    timeout, 5xx, request limit). The outbox retries with back-off."""

    retryable = True
    kind = "unavailable"


class CrmAuthError(CrmError):
    """The CRM refused the credentials (login failed, session expired / invalid)."""

    kind = "auth"


class CrmFieldError(CrmError):
    """The CRM rejected a field of the record (unknown field, not writable, bad value,
    external-id field missing). Fix the field mapping in config/crm.yaml."""

    kind = "field"


class CrmMissingAccount(CrmError):
    """The account has no CRM id, or the CRM does not know the id it has."""

    kind = "account"


class CrmRejected(CrmError):
    """Any other refusal by the CRM (permissions, validation rules, ...)."""

    kind = "rejected"


class CrmNotConfigured(CrmError):
    """No CRM is configured: actions stay in the local store, pending."""

    kind = "not_configured"


class MailError(CrmError):
    """The e-mail could not be sent (SMTP refused, unreachable, auth failed)."""

    kind = "mail"


# ------------------------------------------------------------------------------- ports


@runtime_checkable
class CrmSink(Protocol):
    """Where actions are written back to (Salesforce, HubSpot, ...)."""

    name: str

    def upsert_task(self, key: str, task: CrmTask) -> str:
        """Create the activity for `key`, or update the one that already has it; return
        its CRM id. Calling it again with the same key never creates a second record.
        Raises a `CrmError` subclass."""
        ...

    def find_by_key(self, key: str) -> str | None:
        """The CRM id of the activity written with `key`, or None."""
        ...


@runtime_checkable
class AccountHealthWriter(Protocol):
    """Writes an account's health score and tier onto its CRM account record (optional;
    `python -m health run`, see health/crm_scores.py)."""

    def update_account_health(self, crm_id: str, score: float | None, tier: str | None, as_of: dt.date) -> None:
        """Set the score / tier / date fields of account `crm_id`. Writing the same values
        again is harmless. Raises a `CrmError` subclass."""
        ...


@runtime_checkable
class Mailer(Protocol):
    """Sends e-mail (SMTP, a provider's API, ...)."""

    name: str

    def send(self, mail: Mail) -> str:
        """Send `mail`; return the message id. Raises `MailError`."""
        ...


class MemorySink:
    """An in-memory CrmSink (for tests and demos without a CRM): one record per key."""

    name = "memory"

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, CrmTask]] = {}
        self.accounts: dict[str, dict[str, object]] = {}
        self.calls = 0
        self.fail_with: CrmError | None = None

    def upsert_task(self, key: str, task: CrmTask) -> str:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        crm_id = self.records[key][0] if key in self.records else f"MEM{len(self.records) + 1:06d}"
        self.records[key] = (crm_id, task)
        return crm_id

    def find_by_key(self, key: str) -> str | None:
        rec = self.records.get(key)
        return rec[0] if rec else None

    def update_account_health(self, crm_id: str, score: float | None, tier: str | None, as_of: dt.date) -> None:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        self.accounts[crm_id] = {"score": score, "tier": tier, "as_of": as_of}
