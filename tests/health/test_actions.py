"""The local action store and its outbox: stored first, one CRM record per key, approvals
enforced in the engine, failures kept and retried with back-off, dismissals, timeline."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from health.actions import (
    ActionError,
    ActionStore,
    Backoff,
    action_key,
    new_form_nonce,
    sync,
)
from health.crm import CrmFieldError, CrmTask, CrmUnavailable, MemorySink
from health.model_loader import load_model
from health.playbooks import parse_playbooks, recommend
from health.roles import PermissionDenied, load_roles

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
PLAYBOOKS = (ROOT / "config" / "playbooks.yaml").read_text(encoding="utf-8")
ACME = {"account_id": "A1", "name": "Acme", "owner": "Carlos Mendes", "crm_id": "001000000000001AAA", "arr": 5.0}
BOLT = {"account_id": "A2", "name": "Bolt", "owner": "Daniel Okafor", "crm_id": "001000000000002AAA"}


class Clock:
    def __init__(self) -> None:
        self.t = dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += dt.timedelta(**kw)


@pytest.fixture(scope="module")
def model():
    return load_model(ROOT / "weights.yaml").model


@pytest.fixture(scope="module")
def roles():
    return load_roles(ROOT / "config" / "roles.yaml")


@pytest.fixture(scope="module")
def playbooks(model, roles):
    return parse_playbooks(PLAYBOOKS, model, roles=list(roles.spec.roles))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    st = ActionStore(tmp_path / "data" / "state.db", clock=clock)
    yield st
    st.close()


@pytest.fixture
def carlos(roles):
    return roles.user("carlos.mendes@example.com")


@pytest.fixture
def maria(roles):
    return roles.user("maria.garcia@example.com")


def task(store, user, playbooks, *, account=ACME, play="billing_follow_up", nonce="n1", action_type="task", **payload):
    body = {"subject": "Call the billing contact", "due_date": "2026-12-03", **payload}
    return store.create_action(user, account, action_type=action_type, payload=body,
                               key=action_key(account["account_id"], play, nonce), playbooks=playbooks, play=play,
                               evidence={"why": "invoice 45 days overdue"})


# ------------------------------------------------------------------------ storing


def test_an_action_is_stored_first_with_who_when_what_and_why(store, carlos, playbooks, clock, tmp_path):
    res = task(store, carlos, playbooks, body="Invoice I-1", owner_email="Carlos.Mendes@example.com", priority="high")
    a = res.record
    assert res.created and a.status == "pending" and a.attempts == 0
    assert a.created_by == "carlos.mendes@example.com" and a.created_at == clock()
    assert (a.account_id, a.account_name, a.account_crm_id, a.play, a.play_title) == (
        "A1", "Acme", "001000000000001AAA", "billing_follow_up", "Billing follow-up")
    assert a.payload == {"subject": "Call the billing contact", "body": "Invoice I-1", "due_date": "2026-12-03",
                         "owner_email": "carlos.mendes@example.com", "priority": "high", "to": []}
    assert a.evidence == {"why": "invoice 45 days overdue"}
    # The file is real SQLite in WAL mode, with a UNIQUE idempotency key; it survives a reopen.
    path = tmp_path / "data" / "state.db"
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        con.execute("INSERT INTO actions (idempotency_key, account_id, action_type, created_by, created_at, payload, status)"
                    " VALUES (?, 'A1', 'task', 'x', 'now', '{}', 'pending')", (a.key,))
    con.close()
    again = ActionStore(path)
    assert again.get(a.id) == a
    again.close()


def test_a_double_submit_stores_one_action(store, carlos, playbooks):
    first = task(store, carlos, playbooks)
    second = task(store, carlos, playbooks, subject="edited before the second click")
    assert first.created and not second.created and second.record == first.record
    assert len(store.actions()) == 1
    other_form = task(store, carlos, playbooks, nonce=new_form_nonce())
    assert other_form.created and len(store.actions()) == 2
    with pytest.raises(ActionError, match="already used for account A1"):
        store.create_action(carlos, {**ACME, "account_id": "A9"}, action_type="task", payload={"subject": "x"},
                            key=first.record.key, playbooks=playbooks)


def test_keys_are_stable_per_form_and_url_safe():
    n = new_form_nonce()
    assert action_key("A1", "p", n) == action_key("A1", "p", n) != action_key("A1", "p", new_form_nonce())
    assert action_key("A1", None, n).startswith("chi-") and len(action_key("A1", None, n)) == 36


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"action_type": "email"}, "needs at least one recipient"),
        ({"action_type": "email", "to": ["not-an-address"]}, "not e-mail addresses: not-an-address"),
        ({"action_type": "sms"}, "unknown action type 'sms'"),
        ({"subject": "   "}, "subject: the subject is empty"),
        ({"subject": "x" * 300}, "subject: String should have at most 255 characters"),
        ({"owner_email": "nobody"}, "'nobody' is not an e-mail address"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"play": "renewal_risk_review", "action_type": "email", "to": ["a@b.c"]},
         "the play 'Renewal risk review' allows task, note, not email"),
    ],
)
def test_bad_payloads_are_refused_in_plain_words(store, carlos, playbooks, kwargs, message):
    with pytest.raises(ActionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        task(store, carlos, playbooks, **kwargs)
    assert store.actions() == []


def test_acting_needs_the_permission_on_the_account(store, carlos, roles, playbooks):
    with pytest.raises(PermissionDenied, match="only on their own accounts"):
        task(store, carlos, playbooks, account=BOLT)
    with pytest.raises(PermissionDenied, match="none of their roles grants it"):
        task(store, roles.user("olivia.novak@example.com"), playbooks)  # ops: no `act`
    assert store.actions() == []


# ------------------------------------------------------------------------- outbox


def test_sync_sends_each_action_once(store, carlos, playbooks):
    a = task(store, carlos, playbooks).record
    sink = MemorySink()
    report = sync(store, sink)
    assert report.synced == [a.id] and str(report) == "1 synced, 0 failed (of 1)"
    crm_id, sent = sink.records[a.key]
    assert sent == CrmTask(kind="task", subject="Call the billing contact", account_id="A1",
                           account_crm_id="001000000000001AAA", body="", due_date=dt.date(2026, 12, 3),
                           owner_email=None, priority="normal", email_to=(), created_by="carlos.mendes@example.com")
    got = store.get(a.id)
    assert got.status == "synced" and got.crm_id == crm_id and got.status_text == f"Synced ({crm_id})"
    assert sync(store, sink).claimed == 0 and sync(store, sink, force=True).claimed == 0 and sink.calls == 1


def test_failures_are_kept_and_retried_with_exponential_backoff(store, carlos, roles, playbooks, clock):
    a = task(store, carlos, playbooks).record
    sink = MemorySink()
    sink.fail_with = CrmUnavailable("Salesforce is down", hint="retried automatically")
    delays = []
    for _ in range(4):
        sync(store, sink, force=True)
        got = store.get(a.id)
        delays.append(got.next_attempt_at - clock())
    assert delays == [dt.timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert got.status == "failed" and got.attempts == 4 and got.error_kind == "unavailable" and got.error_retryable
    assert got.last_error == "Salesforce is down — retried automatically"
    assert got.status_text.startswith("Sync failed after 4 attempt(s): Salesforce is down")
    assert Backoff().delay(20) == dt.timedelta(hours=6)  # capped
    # Not due yet: a plain sync leaves it alone; a retry from the app makes it due now.
    assert sync(store, sink).claimed == 0
    sink.fail_with = None
    with pytest.raises(PermissionDenied):
        store.retry(roles.user("daniel.okafor@example.com"), a.id)
    store.retry(carlos, a.id)
    assert sync(store, sink).synced == [a.id] and sink.calls == 5 and len(sink.records) == 1
    with pytest.raises(ActionError, match="only failed or pending actions can be retried"):
        store.retry(carlos, a.id)


def test_a_permanent_error_and_an_unexpected_one_are_kept_too(store, carlos, playbooks):
    a = task(store, carlos, playbooks).record

    class Broken(MemorySink):
        def upsert_task(self, key, t):  # noqa: ANN001, ANN201
            raise ZeroDivisionError("boom")

    report = sync(store, Broken())
    assert report.failed == [(a.id, "unexpected ZeroDivisionError: boom")]
    sink = MemorySink()
    sink.fail_with = CrmFieldError("Salesforce rejected a Task field (400 INVALID_FIELD)", hint="fix config/crm.yaml")
    sync(store, sink, force=True)
    got = store.get(a.id)
    assert got.error_kind == "field" and not got.error_retryable and got.attempts == 2


def test_no_crm_configured_keeps_actions_pending(store, carlos, playbooks):
    a = task(store, carlos, playbooks).record
    report = sync(store, None)
    assert "No CRM is configured" in str(report) and store.get(a.id).status == "pending"


def test_who_may_run_a_sync(store, carlos, roles, playbooks):
    a = task(store, carlos, playbooks).record
    with pytest.raises(PermissionDenied):
        sync(store, MemorySink(), user=carlos)  # everyone's actions: needs `sync`
    with pytest.raises(PermissionDenied):
        sync(store, MemorySink(), user=roles.user("daniel.okafor@example.com"), action_ids=[a.id])
    assert sync(store, MemorySink(), user=carlos, action_ids=[a.id]).synced == [a.id]  # their own action
    b = task(store, carlos, playbooks, nonce="n2").record
    assert sync(store, MemorySink(), user=roles.user("olivia.novak@example.com")).synced == [b.id]


def test_two_syncs_racing_send_each_action_once(tmp_path, carlos, playbooks):
    path = tmp_path / "state.db"
    app, cron = ActionStore(path), ActionStore(path)  # two processes on one file
    ids = [task(app, carlos, playbooks, nonce=f"n{i}").record.id for i in range(6)]
    calls: list[str] = []
    lock = threading.Lock()

    class Slow(MemorySink):
        def upsert_task(self, key, t):  # noqa: ANN001, ANN201
            with lock:
                calls.append(key)
            time.sleep(0.02)
            return super().upsert_task(key, t)

    threads = [threading.Thread(target=sync, args=(s, Slow())) for s in (app, cron, app, cron)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(calls) == sorted({app.get(i).key for i in ids}) and len(calls) == 6
    assert {app.get(i).status for i in ids} == {"synced"}
    app.close()
    cron.close()


# ---------------------------------------------------------------------- approvals


def test_approval_required_actions_wait_and_only_approvers_may_approve(store, carlos, maria, roles, playbooks):
    a = task(store, carlos, playbooks, play="renewal_risk_review", subject="Save plan").record
    assert a.status == "needs_approval" and a.approval_role == "manager"
    assert a.status_text == "Waiting for approval by a manager"
    sink = MemorySink()
    assert sync(store, sink).claimed == 0 and sync(store, sink, force=True).claimed == 0 and sink.calls == 0

    for who, why in [
        (carlos, "needs approval by a manager"),
        (roles.user("david.kim@example.com"), "their team's accounts"),
        (roles.user("olivia.novak@example.com"), "needs approval by a manager"),
        (roles.user("someone@else.com"), "not listed in config/roles.yaml"),
    ]:
        with pytest.raises(PermissionDenied, match=why):
            store.approve(who, a.id, roles, "ok")
    assert store.get(a.id).status == "needs_approval"
    assert [x.id for x in store.approvals_queue(maria, roles)] == [a.id]
    assert store.approvals_queue(carlos, roles) == []
    assert store.approvals_queue(roles.user("david.kim@example.com"), roles) == []

    approved = store.approve(maria, a.id, roles, "Go ahead")
    assert approved.status == "pending" and approved.decided_by == "maria.garcia@example.com"
    assert approved.decision_comment == "Go ahead"
    assert [d["decision"] for d in store.approvals(a.id)] == ["approved"]
    assert sync(store, sink).synced == [a.id] and sink.calls == 1
    with pytest.raises(ActionError, match="does not wait for approval"):
        store.approve(maria, a.id, roles)


def test_a_manager_cannot_approve_their_own_action(store, maria, roles, playbooks):
    a = task(store, maria, playbooks, play="renewal_risk_review").record
    with pytest.raises(PermissionDenied, match="may not approve it themselves"):
        store.approve(maria, a.id, roles)
    store.approve(roles.user("rachel.stone@example.com"), a.id, roles)  # her manager may


def test_a_rejected_action_never_syncs(store, carlos, maria, roles, playbooks):
    a = task(store, carlos, playbooks, play="renewal_risk_review").record
    with pytest.raises(ActionError, match="comment is required"):
        store.reject(maria, a.id, roles, "  ")
    with pytest.raises(PermissionDenied):
        store.reject(carlos, a.id, roles, "no")
    rejected = store.reject(maria, a.id, roles, "Talk to me first")
    assert rejected.status == "rejected" and rejected.status_text == "Rejected by maria.garcia@example.com: Talk to me first"
    sink = MemorySink()
    assert sync(store, sink, force=True).claimed == 0 and sink.calls == 0
    with pytest.raises(ActionError):
        store.retry(carlos, a.id)
    with pytest.raises(ActionError):
        store.approve(maria, a.id, roles)


def test_an_action_type_can_need_approval_whatever_the_play(store, carlos, maria, roles, model):
    pb = parse_playbooks(PLAYBOOKS.replace("  email: { label: E-mail to the customer }",
                                           "  email: { label: E-mail to the customer, approval: manager }"), model,
                         roles=list(roles.spec.roles))
    mail = task(store, carlos, pb, action_type="email", to=["ap@acme.test"], nonce="e").record
    note = task(store, carlos, pb, action_type="note", nonce="n").record
    assert (mail.status, note.status) == ("needs_approval", "pending")
    adhoc = store.create_action(carlos, ACME, action_type="email", payload={"subject": "hi", "to": ["a@b.c"]},
                                key=action_key("A1", None, "x1"), playbooks=pb).record
    assert adhoc.status == "needs_approval" and adhoc.play is None


# --------------------------------------------------------------------- dismissals


def test_dismissals_are_stored_with_reason_and_note(store, carlos, roles, playbooks, model):
    key = action_key("A1", "training_offer", "d1", kind="dismiss")
    res = store.dismiss(carlos, ACME, play="training_offer", reason="in_progress", note="Training booked for Jan",
                        key=key, playbooks=playbooks, evidence={"seat_utilisation": "22%"})
    d = res.record
    assert res.created and d.reason_label == "Already in progress with the customer" and d.play_title.startswith("Training")
    assert not store.dismiss(carlos, ACME, play="training_offer", reason="in_progress", key=key, playbooks=playbooks).created
    with pytest.raises(ActionError, match="say why in the note"):
        store.dismiss(carlos, ACME, play="training_offer", reason="other", key=action_key("A1", "t", "d2"), playbooks=playbooks)
    with pytest.raises(ActionError, match="unknown reason 'lazy'"):
        store.dismiss(carlos, ACME, play="training_offer", reason="lazy", key=action_key("A1", "t", "d3"), playbooks=playbooks)
    with pytest.raises(PermissionDenied):
        store.dismiss(carlos, BOLT, play="training_offer", reason="in_progress", key=action_key("A2", "t", "d4"),
                      playbooks=playbooks)
    assert [x.id for x in store.decisions_for_account("A1")] == [d.id]
    task(store, carlos, playbooks, nonce="z")
    assert store.handled_plays("A1") == {"training_offer": "dismissed: Already in progress with the customer",
                                         "billing_follow_up": "task: waiting to sync"}


def test_account_events_make_timeline_rows(store, carlos, maria, roles, playbooks, clock):
    from health.timeline import SCHEMA

    a = task(store, carlos, playbooks, play="renewal_risk_review", subject="Save plan").record
    clock.advance(hours=1)
    store.approve(maria, a.id, roles, "ok")
    clock.advance(hours=1)
    sink = MemorySink()
    sink.fail_with = CrmUnavailable("down")
    sync(store, sink)
    clock.advance(hours=1)
    sink.fail_with = None
    sync(store, sink, force=True)
    clock.advance(hours=1)
    store.dismiss(carlos, ACME, play="training_offer", reason="not_relevant", key=action_key("A1", "t", "d"),
                  playbooks=playbooks)
    events = store.account_events("A1")
    assert events.schema == pl.Schema(SCHEMA)
    assert events["event"].to_list() == ["dismissed", "action_synced", "action_failed", "action_approved", "action_created"]
    assert events["title"].to_list()[1:] == [
        "Task synced to the CRM: Save plan", "Task sync failed: Save plan",
        "Task approved by maria.garcia@example.com: Save plan", "Task logged: Save plan",
    ]
    assert events["tone"].to_list() == ["info", "good", "bad", "good", "info"]
    assert events["at"][0] == dt.datetime(2026, 12, 1, 13, 0)
    assert store.account_events("nobody").is_empty()
    counts = store.status_counts()
    assert counts["synced"] == 1 and sum(counts.values()) == 1


def test_recommendation_evidence_is_snapshotted(store, carlos, playbooks):
    row = {"account_id": "A1", "name": "Acme", "owner": "Carlos Mendes", "tier": "watch", "score": 70.0,
           "days_overdue": 45.0, "renewal_date": dt.date(2027, 6, 1), "as_of": dt.date(2026, 11, 30)}
    rec = recommend(row, playbooks, {}, plays=["billing_follow_up"])[0]
    a = store.create_action(carlos, ACME, action_type="task", payload={"subject": rec.draft.subject},
                            key=action_key("A1", rec.play, "r"), playbooks=playbooks, play=rec.play, evidence=rec).record
    assert a.evidence["signals"][0]["phrase"] == "Invoice 45 days overdue"
    assert a.evidence["policy"].startswith("An invoice 30 or more days overdue")
    assert store.outbox()[0].id == a.id
