"""The Streamlit side of "recommended next steps -> act or dismiss -> approvals -> CRM".

Pages call these helpers; the helpers call only the engine functions listed in
docs/actions-ui.md and show what they return. Every rule — permissions, approvals,
idempotency, validation — is enforced by `health.actions` / `health.roles`: a disabled
button here is a courtesy, never the guard, and the engine's messages (PermissionDenied,
ActionError) are shown as they are.

Idempotency: each action form has a token (nonce) in session_state, created when the form
first renders; the action's key is derived from it, so a double click or a rerun stores
ONE action and the outbox sends ONE Salesforce Task. The token is not rotated on success:
the saved action is shown instead of the form, and "Log another action" starts a new form
(a new token).

Session-state keys, per account x play (`base` = "<account_id>:<play>"):
    nonce:<base>        the action form's token          done:nonce:<base>  the saved action's id
    dnonce:<base>       the dismiss form's token         dismissed:<base>   the saved decision's id
    mode:<base>         "act" | "dismiss" | absent       af:<base>:* / df:<base>:*  the forms' fields
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import polars as pl
import streamlit as st

from health.actions import (
    STATUS_WORDS,
    Action,
    ActionError,
    ActionStore,
    Decision,
    action_key,
    new_form_nonce,
    sync,
)
from health.crm import CrmSink, Mailer
from health.playbooks import LoadedPlaybooks, Recommendation, load_playbooks, recommend
from health.roles import PermissionDenied, Roles, User, allowed, require
from health.yaml_config import ConfigError
from sources.writeback import CrmFile, build_mailer, build_sink, load_crm_config, plain_secrets, store_path
from ui import data

CRM_FILE = data.ROOT / "config" / "crm.yaml"
PLAYBOOKS_FILE = data.ROOT / "config" / "playbooks.yaml"
NOT_CONNECTED = "Salesforce not connected — actions are kept and will sync once it is configured"
TYPE_WORDS = {"task": "CRM task", "email": "E-mail", "note": "Note"}
CRM_NAMES = {"salesforce": "Salesforce", "hubspot": "HubSpot", "servicenow": "ServiceNow"}
PRIORITIES = ("low", "normal", "high")
HANDLED_DAYS = 30
UTC = dt.timezone.utc


# ---------------------------------------------------------------------------------------
# Wiring: config, store, playbooks, CRM connection, who is acting
# ---------------------------------------------------------------------------------------


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_resource(show_spinner=False)
def _crm_config(path: str, mtime_ns: int) -> CrmFile:
    return load_crm_config(path)


def crm_config() -> CrmFile:
    """config/crm.yaml (defaults when absent); raises ConfigError."""
    return _crm_config(str(CRM_FILE), _mtime(CRM_FILE))


@st.cache_resource(show_spinner=False)
def _store(path: str) -> ActionStore:
    return ActionStore(path)


def get_store() -> ActionStore:
    """The local action store: one per process and per file (`store:` in crm.yaml, or
    $CHI_STATE_DB), thread-safe, WAL on disk."""
    return _store(str(store_path(crm_config())))


@st.cache_resource(show_spinner=False)
def _playbooks(path: str, mtime_ns: int, model_hash: str, role_names: tuple[str, ...], _model: Any,
               _schema: Any) -> LoadedPlaybooks:
    return load_playbooks(path, _model, roles=list(role_names), columns=_schema)


def get_playbooks(book: data.Book) -> LoadedPlaybooks:
    """config/playbooks.yaml checked against the book's model and summary columns (raises
    ConfigError); re-read when the file, the model or the roles change."""
    roles = data.get_roles()
    return _playbooks(str(PLAYBOOKS_FILE), _mtime(PLAYBOOKS_FILE), book.model_hash, tuple(roles.spec.roles),
                      book.model, book.summary.schema)


def secrets() -> dict[str, Any]:
    """st.secrets as a plain dict; {} when there is no secrets file at all (st.secrets
    raises StreamlitSecretNotFoundError then)."""
    try:
        return plain_secrets(st.secrets)
    except Exception:  # noqa: BLE001 - StreamlitSecretNotFoundError and friends
        return {}


@dataclass(frozen=True)
class Crm:
    sink: CrmSink | None
    mailer: Mailer | None

    @property
    def connected(self) -> bool:
        return self.sink is not None

    @property
    def name(self) -> str:
        return CRM_NAMES.get(getattr(self.sink, "name", ""), "the CRM")


def get_crm() -> Crm:
    """The CRM sink and mailer, from config/crm.yaml + st.secrets["salesforce"] (or the
    SALESFORCE_* environment variables). Built per run: it does not connect until a sync
    (a password login then logs in afresh, so an expired session never sticks)."""
    cfg = crm_config()
    sec = secrets()
    return Crm(build_sink(cfg, sec), build_mailer(cfg, sec))


def crm_banner(crm: Crm) -> None:
    if not crm.connected:
        st.info(
            f"**{NOT_CONNECTED}.** Put the `[salesforce]` credentials in `.streamlit/secrets.toml` "
            "(or the SALESFORCE_* environment variables) — see docs/crm.md.",
            icon=":material/cloud_off:",
        )


def show_config_error(exc: ConfigError, what: str) -> None:
    st.error(f"**{what} has errors**, so actions are unavailable until it is fixed.")
    issues = getattr(exc, "issues", None) or [str(exc)]
    st.code("\n".join(str(i) for i in issues), language=None)


def acting_user() -> User:
    """Who acts: the signed-in user's roles (auth on), else the local user — or, in
    roles.yaml's demo mode, the user picked in the sidebar (default CHI_USER /
    app.local_user). Shown in the sidebar. Raises ConfigError for a broken roles.yaml."""
    roles = data.get_roles()
    act_as = None
    with st.sidebar:
        if roles.may_impersonate and not data.auth_enabled():
            people = [u.email for u in roles.users()]
            # A page switch drops a widget's state: keep the pick under a plain key too.
            if "act_as" not in st.session_state and st.session_state.get("_act_as") in people:
                st.session_state["act_as"] = st.session_state["_act_as"]
            default = data.role_user(None)
            act_as = st.selectbox(
                "Demo mode — act as",
                [None, *people],
                format_func=lambda e: f"{default.label} — default" if e is None else roles.user(e).label,
                key="act_as",
                help="No sign-in is configured and config/roles.yaml allows demo mode (local_user.impersonate), "
                "so you can act as any listed user — e.g. a CSM, then their manager to approve.",
            )
            st.session_state["_act_as"] = act_as
        user = data.role_user(act_as)
        st.caption(f"Acting as **{user.label}**: " + may_words(user))
    return user


_SCOPE_WORDS = {"own": "own accounts", "team": "their team's accounts", "all": "all accounts"}


def may_words(user: User) -> str:
    """'act, dismiss, retry (own accounts)' — what the user's roles grant, in words."""
    if not user.known:
        return "not listed in config/roles.yaml, so read-only"
    by_scope: dict[str, list[str]] = {}
    for perm, scope in user.grants.items():
        by_scope.setdefault(scope, []).append(perm)
    if not by_scope:
        return "read-only"
    return "; ".join(f"{', '.join(perms)} ({_SCOPE_WORDS.get(scope, scope)})" for scope, perms in by_scope.items())


# ---------------------------------------------------------------------------------------
# Small formatting helpers
# ---------------------------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]$<>~|"})


def md(text: Any) -> str:
    """Plain text made safe for st.markdown ($ would start LaTeX, * emphasis, ...)."""
    return str(text if text is not None else "").translate(_MD_SPECIAL)


def when(ts: dt.datetime | None) -> str:
    if ts is None:
        return "—"
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    return f"{ts:%d %b %Y %H:%M} UTC"


def type_label(playbooks: LoadedPlaybooks | None, action_type: str) -> str:
    policy = playbooks.spec.action_types.get(action_type) if playbooks is not None else None  # type: ignore[call-overload]
    return (policy.label if policy is not None and policy.label else None) or TYPE_WORDS.get(action_type, action_type)


def _dot(sub_score: float | None) -> str:
    if sub_score is None:
        return "⚪"
    return "🔴" if sub_score < 40 else "🟠" if sub_score < 70 else "🟢"


def evidence_markdown(evidence: Mapping[str, Any], *, policy: bool = True) -> str:
    """The evidence trail (a `Recommendation.evidence_snapshot()`, or the snapshot stored
    with an action) as markdown: the signals with their values, the records behind them,
    the policy. The same layout everywhere, so two plays compare line by line."""
    lines: list[str] = []
    signals = evidence.get("signals") or []
    if signals:
        lines.append("**Signals**")
        for s in signals:
            words = s.get("phrase") or f"{s.get('label')}: {s.get('value')}"
            sub = s.get("sub_score")
            score = f" · sub-score {sub:.0f}/100" if isinstance(sub, (int, float)) else ""
            lines.append(f"- {_dot(sub)} {md(words)}{score}")
    groups = evidence.get("records") or []
    if groups:
        lines.append("")
        lines.append("**Records behind it**")
        for g in groups:
            recs = g.get("records") or []
            total = g.get("total") or 0
            if not total:
                lines.append(f"- *{md(g.get('label'))}:* none found")
                continue
            more = f" ({len(recs)} of {total})" if total > len(recs) else ""
            lines.append(f"- *{md(g.get('label'))}{more}:*")
            for r in recs:
                detail = f" — {md(r.get('detail'))}" if r.get("detail") else ""
                lines.append(f"    - {md(r.get('title'))}{detail}")
    if policy and evidence.get("policy"):
        lines.append("")
        lines.append(f"**Policy:** {md(evidence['policy'])}")
    return "\n".join(lines)


def action_line(a: Action, playbooks: LoadedPlaybooks | None = None) -> str:
    p = a.payload
    bits = [f"{type_label(playbooks, a.action_type)}: “{md(a.subject)}”"]
    if p.get("due_date") and a.action_type == "task":
        bits.append(f"due {p['due_date']}")
    if p.get("owner_email"):
        bits.append(f"owner {md(p['owner_email'])}")
    if p.get("to"):
        bits.append("to " + md(", ".join(p["to"])))
    bits.append(f"logged by {md(a.created_by)} on {when(a.created_at)}")
    return " · ".join(bits)


# ---------------------------------------------------------------------------------------
# Pushing to the CRM
# ---------------------------------------------------------------------------------------


def push(store: ActionStore, crm: Crm, user: User, action_ids: Sequence[int] | None = None, *,
         force: bool = False) -> str | None:
    """Sync now (the given actions, or everything the user may push). Returns a message
    for the user when the sync could not run; CRM failures are stored on the actions."""
    if not crm.connected:
        return None
    try:
        with st.spinner(f"Sending to {crm.name}…"):
            report = sync(store, crm.sink, crm.mailer, user=user, action_ids=action_ids, force=force)
    except (PermissionDenied, ActionError) as exc:
        return str(exc)
    return None if report.skipped is None else report.skipped


def show_status(a: Action, crm: Crm) -> None:
    """The action's status as a coloured box (what a CSM needs to know next)."""
    if a.status == "synced":
        st.success(f"**Synced** to {crm.name if crm.connected else 'the CRM'} — Task `{a.crm_id}` · {when(a.synced_at)}",
                   icon=":material/cloud_done:")
    elif a.status == "pending":
        if crm.connected:
            st.info("**Saved — waiting to sync.** It goes out with the next sync.", icon=":material/schedule:")
        else:
            st.info(f"**Saved — waiting to sync.** {NOT_CONNECTED}.", icon=":material/cloud_off:")
    elif a.status == "needs_approval":
        st.warning(
            f"**Needs approval** by a {a.approval_role}. Nothing is sent to Salesforce until it is approved "
            "on the Actions page.",
            icon=":material/approval:",
        )
    elif a.status == "failed":
        fix = "It is retried automatically." if a.error_retryable else "Fix the cause, then retry."
        st.error(f"**Sync failed** — {md(a.status_text)}. The action is kept. {fix}", icon=":material/sync_problem:")
    elif a.status == "rejected":
        st.error(f"**Rejected** by {md(a.decided_by)}: {md(a.decision_comment or '')}. It will not be sent.",
                 icon=":material/block:")
    else:
        st.write(STATUS_WORDS.get(a.status, a.status))


def retry_button(a: Action, store: ActionStore, crm: Crm, user: User, key: str) -> None:
    """Retry (failed or still pending actions, when the CRM is connected)."""
    if a.status not in ("failed", "pending") or not crm.connected:
        return
    may = allowed(user, "retry", a.account) or allowed(user, "act", a.account)
    label = "Retry" if a.status == "failed" else "Sync now"
    if st.button(label, key=key, icon=":material/refresh:", disabled=not may, width="stretch",
                 help=None if may else f"{user.label} may not retry actions on this account"):
        try:
            store.retry(user, a.id)
        except (PermissionDenied, ActionError) as exc:
            st.error(str(exc))
            return
        problem = push(store, crm, user, [a.id])
        if problem:
            st.session_state["actions_flash"] = ("error", problem)
        st.rerun()


# ---------------------------------------------------------------------------------------
# The account page: recommended next steps
# ---------------------------------------------------------------------------------------


@st.cache_resource(ttl=data.TTL, show_spinner=False, max_entries=256)
def _recommend(_book: data.Book, _playbooks: LoadedPlaybooks, _roles: Roles, book_key: str, playbooks_hash: str,
               roles_key: str, account_id: str) -> list[Recommendation]:
    row = _book.summary.filter(pl.col("account_id") == account_id)
    if row.is_empty():
        return []
    return recommend(row, _playbooks, _book.tables, roles=_roles)


def recommendations(book: data.Book, playbooks: LoadedPlaybooks, account_id: str) -> list[Recommendation]:
    roles = data.get_roles()
    rp = data.roles_path()
    return _recommend(book, playbooks, roles, book.key, playbooks.hash, f"{rp}@{_mtime(rp)}", account_id)


def _account_fields(account: Mapping[str, Any]) -> dict[str, Any]:
    return {k: account.get(k) for k in ("account_id", "name", "owner", "owner_email", "crm_id")}


def _drop_keys(*prefixes: str) -> None:
    for k in [k for k in st.session_state if any(str(k).startswith(p) for p in prefixes)]:
        del st.session_state[k]


def _due_default(rec: Recommendation) -> dt.date:
    """The template's due date, counted from today when the data's day is in the past
    (a sample book ending weeks ago would otherwise prefill a date already gone)."""
    today = dt.date.today()
    if rec.draft.due_date >= today or rec.as_of is None:
        return rec.draft.due_date
    return today + (rec.draft.due_date - rec.as_of)


class Panel:
    """The plays of one account, with the store, the CRM and the user around them."""

    def __init__(self, book: data.Book, account: Mapping[str, Any], playbooks: LoadedPlaybooks, store: ActionStore,
                 crm: Crm, user: User):
        self.book, self.playbooks, self.store, self.crm, self.user = book, playbooks, store, crm, user
        self.account = _account_fields(account)
        self.account_id = str(account["account_id"])
        self._actions = store.actions_for_account(self.account_id)
        self.total = 0
        self._decisions = store.decisions_for_account(self.account_id)

    # -- one play ---------------------------------------------------------------------------
    def base(self, rec: Recommendation) -> str:
        return f"{self.account_id}:{rec.play}"

    def touched(self, rec: Recommendation) -> bool:
        b = self.base(rec)
        return any(k in st.session_state for k in (f"mode:{b}", f"done:nonce:{b}", f"dismissed:{b}"))

    def card(self, rec: Recommendation, rank: int, handled: str | None) -> None:
        with st.container(border=True):
            badges = [f":gray-badge[Rank {rank} of {self.total}]"]
            need = sorted({r for r in rec.approval.values() if r})
            if need:
                types = [type_label(self.playbooks, t) for t, r in rec.approval.items() if r]
                which = "" if len(types) == len(rec.action_types) else f" for {', '.join(types)}"
                badges.append(f":orange-badge[:material/approval: Needs {', '.join(need)} approval{which}]")
            if handled:
                badges.append(f":green-badge[:material/check: {md(handled)}]")
            st.markdown(f"#### {md(rec.title)}\n" + " ".join(badges))
            st.markdown(evidence_markdown(rec.evidence_snapshot()))
            for note in rec.notes:
                st.caption(f":material/warning: {md(note)}")
            self.history(rec)
            self.act_zone(rec)

    def history(self, rec: Recommendation) -> None:
        """What was already done or decided about this play on this account."""
        b = self.base(rec)
        shown = {st.session_state.get(f"done:nonce:{b}")}
        lines = []
        for a in self._actions:
            if a.play == rec.play and a.id not in shown:
                lines.append((a.created_at, f"{type_label(self.playbooks, a.action_type)} “{md(a.subject)}” by "
                              f"{md(a.created_by)}, {when(a.created_at)} — {md(a.status_text)}"))
        shown_d = st.session_state.get(f"dismissed:{b}")
        for d in self._decisions:
            if d.play == rec.play and d.id != shown_d:
                note = f" — “{md(d.note)}”" if d.note else ""
                lines.append((d.decided_at, f"Dismissed by {md(d.decided_by)}, {when(d.decided_at)}: "
                              f"{md(d.reason_label)}{note}"))
        if lines:
            lines.sort(key=lambda x: x[0], reverse=True)
            st.markdown("**Already logged**\n" + "\n".join(f"- {t}" for _, t in lines[:3])
                        + (f"\n- … and {len(lines) - 3} more on the timeline" if len(lines) > 3 else ""))

    def act_zone(self, rec: Recommendation) -> None:
        b = self.base(rec)
        flash = st.session_state.pop(f"flash:{b}", None)
        if flash:
            getattr(st, flash[0])(flash[1])
        done = st.session_state.get(f"done:nonce:{b}")
        if done is not None:
            self.saved_action(rec, int(done))
            return
        dismissed = st.session_state.get(f"dismissed:{b}")
        if dismissed is not None:
            self.saved_decision(rec, int(dismissed))
            return
        mode = st.session_state.get(f"mode:{b}")
        if mode == "act":
            self.action_form(rec)
            return
        if mode == "dismiss":
            self.dismiss_form(rec)
            return
        why_not = {}
        for perm in ("act", "dismiss"):
            try:
                require(self.user, perm, self.account)
            except PermissionDenied as exc:
                why_not[perm] = str(exc)
        c1, c2 = st.columns(2)
        if c1.button("Take action", key=f"act_btn:{b}", type="primary", icon=":material/add_task:", width="stretch",
                     disabled="act" in why_not, help=why_not.get("act")):
            st.session_state[f"mode:{b}"] = "act"
            st.rerun()
        if c2.button("Dismiss…", key=f"dismiss_btn:{b}", icon=":material/do_not_disturb_on:", width="stretch",
                     disabled="dismiss" in why_not, help=why_not.get("dismiss")):
            st.session_state[f"mode:{b}"] = "dismiss"
            st.rerun()
        if why_not:
            st.caption(":material/lock: " + md(why_not.get("act") or why_not.get("dismiss")))

    # -- act ----------------------------------------------------------------------------------
    def action_form(self, rec: Recommendation) -> None:
        b = self.base(rec)
        nonce_key = f"nonce:{b}"
        nonce = st.session_state.setdefault(nonce_key, new_form_nonce())
        d = rec.draft
        with st.form(f"act:{b}", border=False):
            st.markdown("**Log an action**")
            action_type = st.radio(
                "Log as", list(rec.action_types), key=f"af:{b}:type", horizontal=True,
                format_func=lambda t: type_label(self.playbooks, t)
                + (f" (needs {rec.approval[t]} approval)" if rec.approval.get(t) else ""),
            )
            subject = st.text_input("Subject", value=d.subject, key=f"af:{b}:subject", max_chars=255)
            c1, c2 = st.columns(2)
            due = c1.date_input("Due date", value=_due_default(rec), key=f"af:{b}:due", format="YYYY-MM-DD",
                                help="For a CRM task; e-mails and notes are logged as done.")
            priority = c2.selectbox("Priority", PRIORITIES, index=PRIORITIES.index(d.priority) if d.priority in PRIORITIES else 1,
                                    key=f"af:{b}:priority", format_func=str.capitalize)
            owner = st.text_input("Owner (e-mail)", value=d.owner_email or "", key=f"af:{b}:owner",
                                  help="Who the Salesforce Task is assigned to (matched to a Salesforce user by e-mail).")
            body = st.text_area("Description", value=d.body, key=f"af:{b}:body", height=130)
            to = ""
            if "email" in rec.action_types:
                to = st.text_input("To (e-mail only; comma-separated)", key=f"af:{b}:to",
                                   placeholder="name@customer.com, other@customer.com")
            c1, c2 = st.columns(2)
            submitted = c1.form_submit_button("Save action", key=f"af:{b}:submit", type="primary",
                                              icon=":material/save:", width="stretch")
            cancel = c2.form_submit_button("Cancel", key=f"af:{b}:cancel", width="stretch")
        if cancel:
            _drop_keys(f"mode:{b}", f"af:{b}:")
            st.rerun()
        if not submitted:
            return
        payload = {
            "subject": subject,
            "body": body,
            "due_date": due if action_type == "task" else None,
            "owner_email": owner.strip() or None,
            "priority": priority,
            "to": [a.strip() for a in to.split(",") if a.strip()] if action_type == "email" else [],
        }
        try:
            res = self.store.create_action(
                self.user, self.account, action_type=action_type, payload=payload,
                key=action_key(self.account_id, rec.play, nonce), playbooks=self.playbooks, play=rec.play, evidence=rec,
            )
        except (PermissionDenied, ActionError) as exc:
            st.error(str(exc))  # the form keeps what was typed (its widgets keep their keys)
            return
        st.session_state[f"done:{nonce_key}"] = res.record.id
        if res.record.status in ("pending", "failed"):
            problem = push(self.store, self.crm, self.user, [res.record.id])
            if problem:
                st.session_state[f"flash:{b}"] = ("error", problem)
        st.rerun()

    def saved_action(self, rec: Recommendation, action_id: int) -> None:
        b = self.base(rec)
        try:
            a = self.store.get(action_id)
        except ActionError as exc:
            st.error(str(exc))
            _drop_keys(f"done:nonce:{b}")
            return
        show_status(a, self.crm)
        st.caption(action_line(a, self.playbooks) + f" · action #{a.id}")
        retry_button(a, self.store, self.crm, self.user, key=f"retry:{b}:{a.id}")
        if st.button("Log another action", key=f"another:{b}", icon=":material/add:", width="stretch"):
            _drop_keys(f"nonce:{b}", f"done:nonce:{b}", f"af:{b}:")
            st.session_state[f"mode:{b}"] = "act"
            st.rerun()

    # -- dismiss ------------------------------------------------------------------------------
    def dismiss_form(self, rec: Recommendation) -> None:
        b = self.base(rec)
        nonce = st.session_state.setdefault(f"dnonce:{b}", new_form_nonce())
        reasons = self.playbooks.dismiss_reasons
        with st.form(f"dismiss:{b}", border=False):
            st.markdown("**Dismiss this play** — the decision and its reason are logged on the account's timeline.")
            reason = st.selectbox("Reason", list(reasons), index=None, format_func=lambda r: reasons[r],
                                  placeholder="Pick a reason", key=f"df:{b}:reason")
            note = st.text_area("Note", key=f"df:{b}:note", height=80,
                                placeholder="Why — required when the reason is “Other”")
            c1, c2 = st.columns(2)
            submitted = c1.form_submit_button("Dismiss play", key=f"df:{b}:submit", type="primary", width="stretch")
            cancel = c2.form_submit_button("Cancel", key=f"df:{b}:cancel", width="stretch")
        if cancel:
            _drop_keys(f"mode:{b}", f"df:{b}:")
            st.rerun()
        if not submitted:
            return
        if reason is None:
            st.error("Pick a reason from the list.")
            return
        try:
            res = self.store.dismiss(
                self.user, self.account, play=rec.play, reason=reason, note=note,
                key=action_key(self.account_id, rec.play, nonce, kind="dismiss"), playbooks=self.playbooks, evidence=rec,
            )
        except (PermissionDenied, ActionError) as exc:
            st.error(str(exc))
            return
        st.session_state[f"dismissed:{b}"] = res.record.id
        st.rerun()

    def saved_decision(self, rec: Recommendation, decision_id: int) -> None:
        b = self.base(rec)
        d = next((x for x in self._decisions if x.id == decision_id), None)
        if d is None:
            _drop_keys(f"dismissed:{b}")
            return
        note = f" — “{md(d.note)}”" if d.note else ""
        st.info(f"**Dismissed:** {md(d.reason_label)}{note}  \nLogged by {md(d.decided_by)} on {when(d.decided_at)}; "
                "shown on the account's timeline.", icon=":material/do_not_disturb_on:")
        if st.button("Done", key=f"dismiss_done:{b}", width="stretch"):
            _drop_keys(f"dismissed:{b}", f"dnonce:{b}", f"mode:{b}", f"df:{b}:")
            st.rerun()

    # -- all plays ----------------------------------------------------------------------------
    def grid(self, recs: list[tuple[int, Recommendation, str | None]]) -> None:
        """Two plays per row, each card with the same structure, so they compare side by side."""
        for i in range(0, len(recs), 2):
            cols = st.columns(2)
            for col, (rank, rec, handled) in zip(cols, recs[i : i + 2]):
                with col:
                    self.card(rec, rank, handled)


def next_steps(book: data.Book, account: Mapping[str, Any], current: Mapping[str, Any] | None) -> pl.DataFrame | None:
    """The account page's "Recommended next steps" section. Returns the account's actions
    and decisions as timeline rows (for the "Actions & decisions" lane), or None when the
    store is unavailable."""
    st.subheader("Recommended next steps")
    try:
        user = acting_user()
        crm_config()
        store = get_store()
        playbooks = get_playbooks(book)
    except ConfigError as exc:
        show_config_error(exc, "The action settings (config/roles.yaml, crm.yaml or playbooks.yaml)")
        return None
    account_id = str(account["account_id"])
    crm = get_crm()
    if current is None:
        st.caption("No plays: the account has no score as of the data's latest day.")
        return store.account_events(account_id)
    recs = recommendations(book, playbooks, account_id)
    if not recs:
        st.caption("No play applies to this account right now (config/playbooks.yaml).")
        return store.account_events(account_id)
    panel = Panel(book, account, playbooks, store, crm, user)
    panel.total = len(recs)
    handled = store.handled_plays(account_id, within_days=HANDLED_DAYS)
    ranked = [(i + 1, r, handled.get(r.play)) for i, r in enumerate(recs)]
    now = [x for x in ranked if x[2] is None or panel.touched(x[1])]
    earlier = [x for x in ranked if x[2] is not None and not panel.touched(x[1])]
    st.caption(
        f"{len(recs)} play(s) from config/playbooks.yaml apply, most urgent first — each with the signals and "
        "records that triggered it and the team's policy. Take action (saved here first, then sent to Salesforce) "
        "or dismiss it with a reason."
    )
    crm_banner(crm)
    if now:
        panel.grid(now)
    if earlier:
        names = "; ".join(f"{r.title} ({h})" for _, r, h in earlier)
        with st.expander(f"Handled in the last {HANDLED_DAYS} days: {names}"):
            panel.grid(earlier)
    return store.account_events(account_id)


# ---------------------------------------------------------------------------------------
# The Actions page helpers
# ---------------------------------------------------------------------------------------


def why_not_approve(roles: Roles, user: User, a: Action) -> str | None:
    """None when `user` may approve `a`; else the engine's reason (PermissionDenied)."""
    try:
        roles.require_approver(user, a.approval_role or "", a.account, a.created_by)
    except PermissionDenied as exc:
        return str(exc)
    return None


def actions_frame(actions: Sequence[Action], playbooks: LoadedPlaybooks | None = None) -> pl.DataFrame:
    rows = [
        {
            "When": a.created_at.astimezone(UTC).replace(tzinfo=None),
            "Logged by": a.created_by,
            "Account": f"/account?account={a.account_id}#{a.account_name or a.account_id}",
            "Account owner": a.account_owner or "",
            "Play": a.play_title or "(ad hoc)",
            "Type": type_label(playbooks, a.action_type),
            "Subject": a.subject,
            "Status": STATUS_WORDS.get(a.status, a.status),
            "Detail": a.status_text if a.status in ("failed", "rejected", "needs_approval") else (a.crm_id or ""),
        }
        for a in actions
    ]
    schema = {"When": pl.Datetime("us"), "Logged by": pl.String, "Account": pl.String, "Account owner": pl.String,
              "Play": pl.String, "Type": pl.String, "Subject": pl.String, "Status": pl.String, "Detail": pl.String}
    return pl.DataFrame(rows, schema=schema)


def decisions_frame(decisions: Sequence[Decision]) -> pl.DataFrame:
    rows = [
        {
            "When": d.decided_at.astimezone(UTC).replace(tzinfo=None),
            "Decided by": d.decided_by,
            "Account": f"/account?account={d.account_id}#{d.account_name or d.account_id}",
            "Play": d.play_title or "",
            "Reason": d.reason_label,
            "Note": d.note,
        }
        for d in decisions
    ]
    schema = {"When": pl.Datetime("us"), "Decided by": pl.String, "Account": pl.String, "Play": pl.String,
              "Reason": pl.String, "Note": pl.String}
    return pl.DataFrame(rows, schema=schema)


ACCOUNT_LINK = st.column_config.LinkColumn("Account", display_text=r"#(.*)$", width="medium")


__all__ = [
    "NOT_CONNECTED",
    "Crm",
    "Panel",
    "acting_user",
    "actions_frame",
    "crm_banner",
    "crm_config",
    "decisions_frame",
    "evidence_markdown",
    "get_crm",
    "get_playbooks",
    "get_store",
    "md",
    "next_steps",
    "push",
    "retry_button",
    "secrets",
    "show_status",
    "when",
    "why_not_approve",
]
