"""Actions, dismissals, approvals and the outbox: write-backs that never lose an action.

Every action a CSM takes (a CRM task, an e-mail, a note) is written to the local store
FIRST — an SQLite file, `data/state.db` by default — with who, when, the account, the
play, a JSON snapshot of the evidence and the payload. An outbox then pushes it to the
CRM through the `CrmSink` port (`health.crm`), keyed by the action's idempotency key, so

* a second submit of the same form (same key), a rerun, a retry, or two syncs racing
  never create a second CRM record: the store has a UNIQUE key, and the sink upserts on it;
* a CRM that is down or refuses leaves the action in the store with its error text
  (status `failed`), retried later with exponential back-off (`next_attempt_at`,
  `attempts`), by `python -m health sync` or from the app;
* an action that policy says needs approval waits (`needs_approval`) until a user holding
  the approver role approves it; a rejected one never syncs. This is enforced here — the
  outbox never claims an unapproved action, and `approve()` checks the role.

Statuses: `needs_approval` -> (`approve`) -> `pending` -> `synced` (crm id) | `failed`
(error text; retried) ; `needs_approval` -> (`reject`) -> `rejected`.

Decisions not to act ("dismissed" with a reason from the playbooks' list and free text)
are stored too; actions, approvals, sync attempts and dismissals of an account come back
as timeline rows (`account_events`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import polars as pl
from pydantic import Field, ValidationError, field_validator

from health.crm import ACTION_TYPES, CrmError, CrmSink, CrmTask, Mail, Mailer
from health.model import Strict
from health.roles import PermissionDenied, Roles, User, allowed, require
from health.state_db import SqliteStore
from health.yaml_config import EMAIL

DEFAULT_PATH = Path("data/state.db")
STATUSES: tuple[str, ...] = ("needs_approval", "pending", "synced", "failed", "rejected")
STATUS_WORDS = {
    "needs_approval": "Waiting for approval",
    "pending": "Waiting to sync",
    "synced": "Synced",
    "failed": "Sync failed",
    "rejected": "Rejected",
}
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,80}$")
UTC = dt.timezone.utc
LEASE = dt.timedelta(minutes=5)


class ActionError(ValueError):
    """An action cannot be created or changed as asked (bad payload, wrong state, ...)."""


# ----------------------------------------------------------------------------- payload


class ActionPayload(Strict):
    """What the CSM filled in on the form."""

    subject: str = Field(min_length=1, max_length=255)
    body: str = Field(default="", max_length=32000)
    due_date: dt.date | None = None
    owner_email: str | None = None
    priority: Literal["low", "normal", "high"] = "normal"
    to: list[str] = Field(default_factory=list)
    """E-mail recipients (required for an e-mail action)."""

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("the subject is empty")
        return v

    @field_validator("owner_email")
    @classmethod
    def _owner(cls, v: str | None) -> str | None:
        if v is not None and v.strip() == "":
            return None
        if v is not None and not EMAIL.match(v.strip()):
            raise ValueError(f"{v!r} is not an e-mail address")
        return v.strip().lower() if v else v

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not EMAIL.match(a.strip())]
        if bad:
            raise ValueError(f"not e-mail addresses: {', '.join(bad)}")
        return [a.strip() for a in v]


def parse_payload(action_type: str, payload: Mapping[str, Any] | ActionPayload) -> ActionPayload:
    """Validate a form payload for `action_type`; raise `ActionError` in plain words."""
    if action_type not in ACTION_TYPES:
        raise ActionError(f"unknown action type {action_type!r}; use one of {', '.join(ACTION_TYPES)}")
    try:
        p = payload if isinstance(payload, ActionPayload) else ActionPayload.model_validate(dict(payload))
    except ValidationError as exc:
        msgs = [f"{'.'.join(str(x) for x in e['loc']) or 'payload'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise ActionError("; ".join(msgs)) from None
    if action_type == "email" and not p.to:
        raise ActionError("an e-mail action needs at least one recipient (`to`)")
    return p


# ------------------------------------------------------------------------------- keys


def new_form_nonce() -> str:
    """A fresh random token for one rendering of an action form (keep it in the form's
    session state; make a new one only after a submit succeeded)."""
    return uuid.uuid4().hex


def action_key(account_id: str, play: str | None, nonce: str, kind: str = "action") -> str:
    """The idempotency key of one form submission: the same form submitted twice (a
    double click, a rerun) gives the same key, hence one action and one CRM record."""
    digest = hashlib.sha256(f"{kind}|{account_id}|{play or ''}|{nonce}".encode()).hexdigest()[:32]
    return f"chi-{digest}"


# ------------------------------------------------------------------------ back-off


@dataclass(frozen=True)
class Backoff:
    """Delay before the next automatic attempt: base x factor^(attempts-1), capped."""

    base: dt.timedelta = dt.timedelta(minutes=1)
    factor: float = 2.0
    cap: dt.timedelta = dt.timedelta(hours=6)

    def delay(self, attempts: int) -> dt.timedelta:
        seconds = self.base.total_seconds() * (self.factor ** max(attempts - 1, 0))
        return dt.timedelta(seconds=min(seconds, self.cap.total_seconds()))


# ----------------------------------------------------------------------------- records


def _ts(v: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(v) if v else None


def _iso(v: dt.datetime) -> str:
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    return v.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Action:
    id: int
    key: str
    account_id: str
    account_name: str | None
    account_owner: str | None
    account_owner_email: str | None
    account_crm_id: str | None
    play: str | None
    play_title: str | None
    action_type: str
    created_by: str
    created_at: dt.datetime
    payload: dict[str, Any]
    evidence: dict[str, Any] | None
    status: str
    approval_role: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    decision_comment: str | None
    crm_id: str | None
    synced_at: dt.datetime | None
    attempts: int
    last_error: str | None
    error_kind: str | None
    error_retryable: bool | None
    last_attempt_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    mail_id: str | None
    mailed_at: dt.datetime | None

    @property
    def account(self) -> dict[str, Any]:
        """The account fields permission checks look at."""
        return {
            "account_id": self.account_id,
            "name": self.account_name,
            "owner": self.account_owner,
            "owner_email": self.account_owner_email,
            "crm_id": self.account_crm_id,
        }

    @property
    def subject(self) -> str:
        return str(self.payload.get("subject", ""))

    @property
    def status_text(self) -> str:
        """One line for a status badge: 'Synced (00T...)', 'Sync failed: ...'."""
        if self.status == "synced":
            return f"Synced ({self.crm_id})"
        if self.status == "failed":
            nxt = f"; next try {self.next_attempt_at:%Y-%m-%d %H:%M} UTC" if self.next_attempt_at else ""
            return f"Sync failed after {self.attempts} attempt(s): {self.last_error}{nxt}"
        if self.status == "needs_approval":
            return f"Waiting for approval by a {self.approval_role}"
        if self.status == "rejected":
            return f"Rejected by {self.decided_by}" + (f": {self.decision_comment}" if self.decision_comment else "")
        return STATUS_WORDS[self.status]


@dataclass(frozen=True)
class Decision:
    id: int
    key: str
    account_id: str
    account_name: str | None
    play: str | None
    play_title: str | None
    decided_by: str
    decided_at: dt.datetime
    reason: str
    reason_label: str
    note: str
    evidence: dict[str, Any] | None


@dataclass(frozen=True)
class Created:
    """The result of a create: the stored record, and whether this call created it
    (False: the key existed — a double submit — and nothing new was written)."""

    record: Any
    created: bool


@dataclass
class SyncReport:
    claimed: int = 0
    synced: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: str | None = None

    def __str__(self) -> str:
        if self.skipped:
            return self.skipped
        if not self.claimed:
            return "nothing to sync"
        text = f"{len(self.synced)} synced, {len(self.failed)} failed (of {self.claimed})"
        for aid, err in self.failed[:5]:
            text += f"\n  action {aid}: {err}"
        return text


# ------------------------------------------------------------------------------- store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    account_name TEXT,
    account_owner TEXT,
    account_owner_email TEXT,
    account_crm_id TEXT,
    play TEXT,
    play_title TEXT,
    action_type TEXT NOT NULL CHECK (action_type IN ('task', 'email', 'note')),
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    evidence TEXT,
    status TEXT NOT NULL CHECK (status IN ('needs_approval', 'pending', 'synced', 'failed', 'rejected')),
    approval_role TEXT,
    decision TEXT CHECK (decision IN ('approved', 'rejected')),
    decided_by TEXT,
    decided_at TEXT,
    decision_comment TEXT,
    crm_id TEXT,
    synced_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    error_kind TEXT,
    error_retryable INTEGER,
    last_attempt_at TEXT,
    next_attempt_at TEXT,
    mail_id TEXT,
    mailed_at TEXT,
    claimed_until TEXT,
    claim_token TEXT
);
CREATE INDEX IF NOT EXISTS actions_account ON actions (account_id, created_at);
CREATE INDEX IF NOT EXISTS actions_outbox ON actions (status, next_attempt_at);

CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER NOT NULL REFERENCES actions (id),
    decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    decided_by TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    account_name TEXT,
    play TEXT,
    play_title TEXT,
    decided_by TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    reason_label TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    evidence TEXT
);
CREATE INDEX IF NOT EXISTS decisions_account ON decisions (account_id, decided_at);

CREATE TABLE IF NOT EXISTS action_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER NOT NULL REFERENCES actions (id),
    at TEXT NOT NULL,
    actor TEXT,
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS action_events_action ON action_events (action_id, at);
"""


def _row_action(r: sqlite3.Row) -> Action:
    return Action(
        id=r["id"],
        key=r["idempotency_key"],
        account_id=r["account_id"],
        account_name=r["account_name"],
        account_owner=r["account_owner"],
        account_owner_email=r["account_owner_email"],
        account_crm_id=r["account_crm_id"],
        play=r["play"],
        play_title=r["play_title"],
        action_type=r["action_type"],
        created_by=r["created_by"],
        created_at=_ts(r["created_at"]),  # type: ignore[arg-type]
        payload=json.loads(r["payload"]),
        evidence=json.loads(r["evidence"]) if r["evidence"] else None,
        status=r["status"],
        approval_role=r["approval_role"],
        decided_by=r["decided_by"],
        decided_at=_ts(r["decided_at"]),
        decision_comment=r["decision_comment"],
        crm_id=r["crm_id"],
        synced_at=_ts(r["synced_at"]),
        attempts=r["attempts"],
        last_error=r["last_error"],
        error_kind=r["error_kind"],
        error_retryable=None if r["error_retryable"] is None else bool(r["error_retryable"]),
        last_attempt_at=_ts(r["last_attempt_at"]),
        next_attempt_at=_ts(r["next_attempt_at"]),
        mail_id=r["mail_id"],
        mailed_at=_ts(r["mailed_at"]),
    )


def _row_decision(r: sqlite3.Row) -> Decision:
    return Decision(
        id=r["id"],
        key=r["idempotency_key"],
        account_id=r["account_id"],
        account_name=r["account_name"],
        play=r["play"],
        play_title=r["play_title"],
        decided_by=r["decided_by"],
        decided_at=_ts(r["decided_at"]),  # type: ignore[arg-type]
        reason=r["reason"],
        reason_label=r["reason_label"],
        note=r["note"],
        evidence=json.loads(r["evidence"]) if r["evidence"] else None,
    )


def _json(v: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, (dt.date, dt.datetime)):
            return o.isoformat()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return json.dumps(v, default=default, ensure_ascii=False, sort_keys=True)


def _evidence(evidence: Any) -> dict[str, Any] | None:
    if evidence is None:
        return None
    snap = getattr(evidence, "evidence_snapshot", None)
    return snap() if callable(snap) else dict(evidence)


def _clean(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


class ActionStore(SqliteStore):
    """The local store (SQLite, WAL). One instance per process is enough (it serialises
    its own calls); several processes (the app and `python -m health sync`) may share
    the file."""

    def __init__(
        self,
        path: str | Path = DEFAULT_PATH,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        backoff: Backoff | None = None,
    ):
        super().__init__(path, _SCHEMA, clock=clock)
        self.backoff = backoff or Backoff()

    def _event(self, con: sqlite3.Connection, action_id: int, event: str, actor: str | None, detail: str = "") -> None:
        con.execute(
            "INSERT INTO action_events (action_id, at, actor, event, detail) VALUES (?, ?, ?, ?, ?)",
            (action_id, _iso(self.now()), actor, event, detail),
        )

    # -- reading ------------------------------------------------------------------------
    def get(self, action_id: int) -> Action:
        with self._lock:
            r = self._con.execute("SELECT * FROM actions WHERE id = ?", (action_id,)).fetchone()
        if r is None:
            raise ActionError(f"no action with id {action_id}")
        return _row_action(r)

    def by_key(self, key: str) -> Action | None:
        with self._lock:
            r = self._con.execute("SELECT * FROM actions WHERE idempotency_key = ?", (key,)).fetchone()
        return _row_action(r) if r else None

    def actions(
        self,
        *,
        account_id: str | None = None,
        statuses: Sequence[str] | None = None,
        created_by: str | None = None,
        limit: int = 500,
    ) -> list[Action]:
        """Actions newest first, filtered by account, status and/or author."""
        where, args = [], []
        if account_id is not None:
            where.append("account_id = ?")
            args.append(account_id)
        if statuses:
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise ActionError(f"unknown status {bad[0]!r}; use one of {', '.join(STATUSES)}")
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if created_by is not None:
            where.append("created_by = ?")
            args.append(created_by.lower())
        sql = "SELECT * FROM actions" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._con.execute(sql, (*args, limit)).fetchall()
        return [_row_action(r) for r in rows]

    def actions_for_account(self, account_id: str) -> list[Action]:
        return self.actions(account_id=account_id)

    def outbox(self, statuses: Sequence[str] = ("pending", "failed", "needs_approval"), *, limit: int = 500) -> list[Action]:
        """What is not yet in the CRM (by default): waiting, failed, or awaiting approval."""
        return self.actions(statuses=statuses, limit=limit)

    def status_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._con.execute("SELECT status, COUNT(*) AS n FROM actions GROUP BY status").fetchall()
        counts = {s: 0 for s in STATUSES}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    def decisions(self, *, account_id: str | None = None, limit: int = 500) -> list[Decision]:
        sql = "SELECT * FROM decisions" + (" WHERE account_id = ?" if account_id is not None else "")
        sql += " ORDER BY decided_at DESC, id DESC LIMIT ?"
        args: tuple[Any, ...] = ((account_id, limit) if account_id is not None else (limit,))
        with self._lock:
            rows = self._con.execute(sql, args).fetchall()
        return [_row_decision(r) for r in rows]

    def decisions_for_account(self, account_id: str) -> list[Decision]:
        return self.decisions(account_id=account_id)

    def events(self, action_id: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT at, actor, event, detail FROM action_events WHERE action_id = ? ORDER BY id", (action_id,)
            ).fetchall()
        return [{"at": _ts(r["at"]), "actor": r["actor"], "event": r["event"], "detail": r["detail"]} for r in rows]

    def handled_plays(self, account_id: str, *, within_days: int = 30) -> dict[str, str]:
        """Plays recently acted on or dismissed for the account (play -> a short status),
        so the UI can fold them away instead of recommending them again."""
        since = self.now() - dt.timedelta(days=within_days)
        out: dict[str, str] = {}
        for d in self.decisions(account_id=account_id):
            if d.play and d.decided_at >= since and d.play not in out:
                out[d.play] = f"dismissed: {d.reason_label}"
        for a in self.actions(account_id=account_id):
            if a.play and a.created_at >= since and a.status != "rejected":
                out.setdefault(a.play, f"{a.action_type}: {STATUS_WORDS[a.status].lower()}")
        return out

    # -- acting ---------------------------------------------------------------------------
    def create_action(
        self,
        user: User,
        account: Mapping[str, Any],
        *,
        action_type: str,
        payload: Mapping[str, Any] | ActionPayload,
        key: str,
        playbooks: Any,
        play: str | None = None,
        evidence: Any = None,
    ) -> Created:
        """Store an action (before anything is sent anywhere).

        `account`: the account row (account_id, name, owner, owner_email, crm_id);
        `key`: `action_key(...)` of the form submission — the same key returns the stored
        action with `created=False` and writes nothing; `playbooks`: the loaded playbooks
        (they say whether this play / action type needs approval and by whom); `evidence`:
        a `Recommendation` or a JSON-able dict, stored as a snapshot.
        Raises `PermissionDenied` (no `act` permission on the account) or `ActionError`."""
        if not KEY_RE.match(key or ""):
            raise ActionError("the idempotency key must be 8-80 letters, digits, '-' or '_' (use action_key())")
        account_id = _clean(account.get("account_id"))
        if account_id is None:
            raise ActionError("the account has no account_id")
        existing = self.by_key(key)
        if existing is not None:
            if existing.account_id != account_id:
                raise ActionError(f"key {key} was already used for account {existing.account_id}")
            return Created(existing, False)
        require(user, "act", account)
        p = parse_payload(action_type, payload)
        title = None
        if play is not None:
            spec = playbooks.play(play)
            title = spec.title
            if action_type not in spec.action_types:
                raise ActionError(
                    f"the play {spec.title!r} allows {', '.join(spec.action_types)}, not {action_type}"
                )
        role = playbooks.approval_role(play, action_type)
        status = "needs_approval" if role else "pending"
        now = _iso(self.now())
        with self.tx() as con:
            cur = con.execute(
                """INSERT INTO actions (idempotency_key, account_id, account_name, account_owner,
                       account_owner_email, account_crm_id, play, play_title, action_type, created_by,
                       created_at, payload, evidence, status, approval_role)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (idempotency_key) DO NOTHING""",
                (
                    key, account_id, _clean(account.get("name")), _clean(account.get("owner")),
                    (_clean(account.get("owner_email")) or "").lower() or None, _clean(account.get("crm_id")),
                    play, title, action_type, user.email, now, _json(p.model_dump(mode="json")),
                    _json(_evidence(evidence)) if evidence is not None else None, status, role,
                ),
            )
            created = cur.rowcount == 1
            row = con.execute("SELECT * FROM actions WHERE idempotency_key = ?", (key,)).fetchone()
            if created:
                detail = f"{action_type}: {p.subject}" + (f"; needs approval by a {role}" if role else "")
                self._event(con, row["id"], "created", user.email, detail)
        return Created(_row_action(row), created)

    def dismiss(
        self,
        user: User,
        account: Mapping[str, Any],
        *,
        play: str | None,
        reason: str,
        key: str,
        playbooks: Any,
        note: str = "",
        evidence: Any = None,
    ) -> Created:
        """Document that a recommended play was NOT done, and why (`reason`: a code from
        the playbooks' dismiss_reasons; `other` needs a `note`). Idempotent by `key`."""
        if not KEY_RE.match(key or ""):
            raise ActionError("the idempotency key must be 8-80 letters, digits, '-' or '_' (use action_key())")
        account_id = _clean(account.get("account_id"))
        if account_id is None:
            raise ActionError("the account has no account_id")
        with self._lock:
            r = self._con.execute("SELECT * FROM decisions WHERE idempotency_key = ?", (key,)).fetchone()
        if r is not None:
            return Created(_row_decision(r), False)
        require(user, "dismiss", account)
        reasons = playbooks.dismiss_reasons
        if reason not in reasons:
            raise ActionError(f"unknown reason {reason!r}; use one of: {', '.join(reasons)}")
        note = (note or "").strip()
        if reason == "other" and not note:
            raise ActionError("say why in the note when the reason is 'other'")
        title = playbooks.play(play).title if play is not None else None
        with self.tx() as con:
            con.execute(
                """INSERT INTO decisions (idempotency_key, account_id, account_name, play, play_title,
                       decided_by, decided_at, reason, reason_label, note, evidence)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING""",
                (key, account_id, _clean(account.get("name")), play, title, user.email, _iso(self.now()),
                 reason, reasons[reason], note, _json(_evidence(evidence)) if evidence is not None else None),
            )
            row = con.execute("SELECT * FROM decisions WHERE idempotency_key = ?", (key,)).fetchone()
        return Created(_row_decision(row), True)

    # -- approvals ------------------------------------------------------------------------
    def approvals_queue(self, user: User, roles: Roles) -> list[Action]:
        """Actions waiting for approval that `user` may approve, oldest first."""
        out = []
        for a in reversed(self.actions(statuses=["needs_approval"])):
            try:
                roles.require_approver(user, a.approval_role or "", a.account, a.created_by)
            except PermissionDenied:
                continue
            out.append(a)
        return out

    def _decide(self, user: User, action_id: int, roles: Roles, decision: str, comment: str) -> Action:
        with self.tx() as con:
            r = con.execute("SELECT * FROM actions WHERE id = ?", (action_id,)).fetchone()
            if r is None:
                raise ActionError(f"no action with id {action_id}")
            a = _row_action(r)
            if a.status != "needs_approval":
                raise ActionError(f"action {action_id} does not wait for approval (it is {a.status})")
            roles.require_approver(user, a.approval_role or "", a.account, a.created_by)
            now = _iso(self.now())
            con.execute(
                """UPDATE actions SET status = ?, decision = ?, decided_by = ?, decided_at = ?,
                       decision_comment = ? WHERE id = ? AND status = 'needs_approval'""",
                ("pending" if decision == "approved" else "rejected", decision, user.email, now, comment, action_id),
            )
            con.execute(
                "INSERT INTO approvals (action_id, decision, decided_by, decided_at, comment) VALUES (?, ?, ?, ?, ?)",
                (action_id, decision, user.email, now, comment),
            )
            self._event(con, action_id, decision, user.email, comment)
            r = con.execute("SELECT * FROM actions WHERE id = ?", (action_id,)).fetchone()
        return _row_action(r)

    def approve(self, user: User, action_id: int, roles: Roles, comment: str = "") -> Action:
        """Approve an action waiting for approval; it becomes `pending` and the next
        sync sends it. Raises `PermissionDenied` unless `user` holds the approver role
        the action needs (with scope over the account, and not for their own action
        unless roles.yaml allows self-approval)."""
        return self._decide(user, action_id, roles, "approved", (comment or "").strip())

    def reject(self, user: User, action_id: int, roles: Roles, comment: str) -> Action:
        """Reject an action waiting for approval (a comment is required); it never syncs."""
        comment = (comment or "").strip()
        if not comment:
            raise ActionError("say why the action is rejected (a comment is required)")
        return self._decide(user, action_id, roles, "rejected", comment)

    def approvals(self, action_id: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT decision, decided_by, decided_at, comment FROM approvals WHERE action_id = ? ORDER BY id",
                (action_id,),
            ).fetchall()
        return [dict(r) | {"decided_at": _ts(r["decided_at"])} for r in rows]

    # -- outbox ---------------------------------------------------------------------------
    def retry(self, user: User, action_id: int) -> Action:
        """Make a failed (or pending) action due now; the next sync pushes it again."""
        a = self.get(action_id)
        require(user, "retry", a.account)
        if a.status not in ("failed", "pending"):
            raise ActionError(f"action {action_id} is {a.status}; only failed or pending actions can be retried")
        with self.tx() as con:
            con.execute("UPDATE actions SET next_attempt_at = ? WHERE id = ?", (_iso(self.now()), action_id))
            self._event(con, action_id, "retry", user.email, "retry requested")
        return self.get(action_id)

    def claim(self, *, limit: int = 50, force: bool = False, action_ids: Sequence[int] | None = None) -> list[tuple[Action, str]]:
        """Lease the actions due for a sync (approved or not needing approval, pending or
        failed, due now unless `force`, not leased by another sync)."""
        now = _iso(self.now())
        token = uuid.uuid4().hex
        where = [
            "status IN ('pending', 'failed')",
            "(approval_role IS NULL OR decision = 'approved')",
            "(claimed_until IS NULL OR claimed_until < ?)",
        ]
        args: list[Any] = [now]
        if not force:
            where.append("(next_attempt_at IS NULL OR next_attempt_at <= ?)")
            args.append(now)
        if action_ids is not None:
            if not action_ids:
                return []
            where.append(f"id IN ({', '.join('?' * len(action_ids))})")
            args.extend(action_ids)
        with self.tx() as con:
            rows = con.execute(
                f"SELECT id FROM actions WHERE {' AND '.join(where)} ORDER BY created_at, id LIMIT ?", (*args, limit)
            ).fetchall()
            ids = [r["id"] for r in rows]
            if ids:
                con.execute(
                    f"UPDATE actions SET claimed_until = ?, claim_token = ? WHERE id IN ({', '.join('?' * len(ids))})",
                    (_iso(self.now() + LEASE), token, *ids),
                )
            claimed = con.execute(
                f"SELECT * FROM actions WHERE id IN ({', '.join('?' * len(ids))}) ORDER BY created_at, id", ids
            ).fetchall() if ids else []
        return [(_row_action(r), token) for r in claimed]

    def mark_mailed(self, action_id: int, token: str, mail_id: str) -> None:
        with self.tx() as con:
            con.execute("UPDATE actions SET mail_id = ?, mailed_at = ? WHERE id = ? AND claim_token = ?",
                        (mail_id, _iso(self.now()), action_id, token))
            self._event(con, action_id, "mailed", None, mail_id)

    def mark_synced(self, action_id: int, token: str, crm_id: str, sink: str = "crm") -> None:
        with self.tx() as con:
            con.execute(
                """UPDATE actions SET status = 'synced', crm_id = ?, synced_at = ?, attempts = attempts + 1,
                       last_attempt_at = ?, last_error = NULL, error_kind = NULL, error_retryable = NULL,
                       next_attempt_at = NULL, claimed_until = NULL, claim_token = NULL
                   WHERE id = ? AND claim_token = ?""",
                (crm_id, _iso(self.now()), _iso(self.now()), action_id, token),
            )
            self._event(con, action_id, "synced", None, f"{sink} {crm_id}")

    def mark_failed(self, action_id: int, token: str, error: str, kind: str, retryable: bool) -> None:
        with self.tx() as con:
            r = con.execute("SELECT attempts FROM actions WHERE id = ? AND claim_token = ?", (action_id, token)).fetchone()
            if r is None:
                return
            attempts = r["attempts"] + 1
            nxt = self.now() + self.backoff.delay(attempts)
            con.execute(
                """UPDATE actions SET status = 'failed', attempts = ?, last_error = ?, error_kind = ?,
                       error_retryable = ?, last_attempt_at = ?, next_attempt_at = ?, claimed_until = NULL,
                       claim_token = NULL
                   WHERE id = ? AND claim_token = ?""",
                (attempts, error, kind, int(retryable), _iso(self.now()), _iso(nxt), action_id, token),
            )
            self._event(con, action_id, "failed", None, error)

    # -- timeline -------------------------------------------------------------------------
    def account_events(self, account_id: str) -> pl.DataFrame:
        """The account's actions, approvals, sync results and dismissals as timeline
        rows (the shape of `health.timeline.account_timeline`, source 'actions'),
        newest first — concatenate them with the account's timeline."""
        from health.timeline import SCHEMA

        with self._lock:
            rows = self._con.execute(
                """SELECT e.at, e.actor, e.event, e.detail, a.id, a.action_type, a.payload, a.play_title,
                          a.approval_role, a.crm_id
                   FROM action_events e JOIN actions a ON a.id = e.action_id
                   WHERE a.account_id = ? ORDER BY e.id""",
                (account_id,),
            ).fetchall()
        out: list[dict[str, Any]] = []
        words = {"task": "Task", "email": "E-mail", "note": "Note"}
        for r in rows:
            kind = words.get(r["action_type"], r["action_type"])
            subject = json.loads(r["payload"]).get("subject", "")
            ev = r["event"]
            title, tone, detail = "", "info", ""
            if ev == "created":
                title = f"{kind} logged: {subject}"
                detail = "; ".join(x for x in (f"by {r['actor']}", f"play: {r['play_title']}" if r["play_title"] else "",
                                               f"needs approval by a {r['approval_role']}" if r["approval_role"] else "") if x)
            elif ev == "approved":
                title, tone = f"{kind} approved by {r['actor']}: {subject}", "good"
                detail = r["detail"]
            elif ev == "rejected":
                title, tone = f"{kind} rejected by {r['actor']}: {subject}", "bad"
                detail = r["detail"]
            elif ev == "synced":
                title, tone = f"{kind} synced to the CRM: {subject}", "good"
                detail = r["detail"]
            elif ev == "failed":
                title, tone = f"{kind} sync failed: {subject}", "bad"
                detail = r["detail"]
            elif ev == "mailed":
                title, tone = f"E-mail sent: {subject}", "good"
                detail = r["detail"]
            elif ev == "retry":
                title, detail = f"{kind} retry requested: {subject}", f"by {r['actor']}"
            else:
                title, detail = f"{kind} {ev}: {subject}", r["detail"]
            out.append({"at": _ts(r["at"]).astimezone(UTC).replace(tzinfo=None), "source": "actions", "event": f"action_{ev}",
                        "title": title, "detail": detail or "", "ref": str(r["id"]), "tone": tone})
        for d in self.decisions(account_id=account_id):
            out.append({
                "at": d.decided_at.astimezone(UTC).replace(tzinfo=None), "source": "actions", "event": "dismissed",
                "title": f"Not done: {d.play_title or 'recommendation'} — {d.reason_label}",
                "detail": "; ".join(x for x in (f"by {d.decided_by}", d.note) if x), "ref": f"D{d.id}", "tone": "info",
            })
        if not out:
            return pl.DataFrame(schema=SCHEMA)
        return pl.DataFrame(out, schema=SCHEMA).sort("at", descending=True, maintain_order=True)


# ------------------------------------------------------------------------------- sync


def crm_task(action: Action) -> CrmTask:
    """The neutral CRM record an action becomes."""
    p = action.payload
    body = p.get("body", "") or ""
    to = tuple(p.get("to") or ())
    if action.action_type == "email" and to:
        body = f"To: {', '.join(to)}\n\n{body}"
    due = p.get("due_date")
    return CrmTask(
        kind=action.action_type,  # type: ignore[arg-type]
        subject=p.get("subject", ""),
        account_id=action.account_id,
        account_crm_id=action.account_crm_id,
        body=body,
        due_date=dt.date.fromisoformat(due) if isinstance(due, str) else due,
        owner_email=p.get("owner_email"),
        priority=p.get("priority", "normal"),
        email_to=to,
        created_by=action.created_by,
    )


def action_mail(action: Action, sender: str | None = None) -> Mail:
    p = action.payload
    return Mail(
        to=tuple(p.get("to") or ()),
        subject=p.get("subject", ""),
        body=p.get("body", "") or "",
        message_id=f"<{action.key}@customer-health.local>",
        sender=sender,
        reply_to=action.created_by if EMAIL.match(action.created_by or "") else None,
    )


def sync(
    store: ActionStore,
    sink: CrmSink | None,
    mailer: Mailer | None = None,
    *,
    user: User | None = None,
    action_ids: Sequence[int] | None = None,
    force: bool = False,
    limit: int = 50,
) -> SyncReport:
    """Push the due actions to the CRM (and send the e-mails of e-mail actions when a
    mailer is configured). Never raises for a CRM failure: the action keeps the error
    and is retried after back-off. `force`: ignore the back-off (retry everything failed
    now, e.g. after fixing the credentials). `user`: who asks (None = the system, e.g.
    the scheduled `python -m health sync`); a user needs `sync` to push everyone's
    actions, or `act`/`retry` on each of the `action_ids` they push."""
    report = SyncReport()
    if user is not None:
        if action_ids is None:
            require(user, "sync")
        else:
            for aid in action_ids:
                a = store.get(aid)
                if not (allowed(user, "act", a.account) or allowed(user, "retry", a.account) or allowed(user, "sync")):
                    require(user, "retry", a.account)
    if sink is None:
        report.skipped = "No CRM is configured (config/crm.yaml): actions stay in the local store, pending."
        return report
    claimed = store.claim(limit=limit, force=force, action_ids=action_ids)
    report.claimed = len(claimed)
    for action, token in claimed:
        try:
            if action.action_type == "email" and mailer is not None and action.mailed_at is None and action.payload.get("to"):
                mail_id = mailer.send(action_mail(action))
                store.mark_mailed(action.id, token, mail_id)
            crm_id = sink.upsert_task(action.key, crm_task(action))
            store.mark_synced(action.id, token, crm_id, getattr(sink, "name", "crm"))
            report.synced.append(action.id)
        except CrmError as exc:
            store.mark_failed(action.id, token, str(exc), exc.kind, exc.retryable)
            report.failed.append((action.id, str(exc)))
        except Exception as exc:  # noqa: BLE001 - an unexpected failure must not lose the action
            text = f"unexpected {type(exc).__name__}: {exc}"
            store.mark_failed(action.id, token, text, "unexpected", True)
            report.failed.append((action.id, text))
    return report


__all__ = [
    "Action",
    "ActionError",
    "ActionPayload",
    "ActionStore",
    "Backoff",
    "Created",
    "Decision",
    "STATUSES",
    "SyncReport",
    "action_key",
    "crm_task",
    "new_form_nonce",
    "parse_payload",
    "sync",
]
