"""The actions UI end to end: recommended plays with their evidence on the account page,
the action form (stored first, then synced to a loopback Salesforce over real HTTPS with
the real simple-salesforce client — one Task whatever is clicked twice), dismissals with a
reason on the card and the timeline, approvals on the Actions page (a CSM sees them
read-only; the manager approves and the Task goes out), the outbox (failed with its error,
Retry, Sync now).

Every test has its own state db (CHI_STATE_DB, set in conftest), never the repo's data/.
The app reaches the stub through st.secrets["salesforce"] (session_id + instance_url) and
trusts the stub's test CA through REQUESTS_CA_BUNDLE, the way requests reads it."""

from __future__ import annotations

import os

import polars as pl
import pytest

from health.actions import ActionStore
from health.playbooks import load_playbooks, matching_plays, recommend
from health.roles import PermissionDenied, load_roles
from tests.app_pages.conftest import ROOT, app, texts
from tests.sources.sf_stub import SalesforceStub
from ui.actions import NOT_CONNECTED

EMILY = {"is_logged_in": True, "email": "emily.chen@example.com", "name": "Emily Chen"}
MARIA_TEAM = {"Carlos Mendes", "Emily Chen", "Lucas Moreau", "Priya Raman", "Tom Fischer"}
"""Owners whose manager is maria.garcia@example.com in config/roles.yaml."""
USER_IDS = {email: f"005{i:015d}" for i, email in enumerate(load_roles(ROOT / "config" / "roles.yaml").spec.users, 1)}
"""Salesforce User ids of everyone in roles.yaml (the stub answers the owner look-up)."""


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def roles():
    return load_roles(ROOT / "config" / "roles.yaml")


@pytest.fixture
def playbooks(book, roles):
    return load_playbooks(ROOT / "config" / "playbooks.yaml", book.model, roles=list(roles.spec.roles),
                          columns=book.summary.schema)


@pytest.fixture
def account(book, playbooks) -> dict:
    """An at-risk account of the sample book, owned by someone in Maria Garcia's team,
    for which the renewal risk review (needs approval), the billing follow-up and the
    training offer all apply — its summary row matches those plays."""
    hits = matching_plays(book.summary, playbooks)
    want = {"renewal_risk_review", "billing_follow_up", "training_offer"}
    per = hits.group_by("account_id").agg(pl.col("play"))
    ids = [r["account_id"] for r in per.iter_rows(named=True) if want <= set(r["play"])]
    rows = book.summary.filter(pl.col("account_id").is_in(ids) & pl.col("owner").is_in(sorted(MARIA_TEAM)))
    assert rows.height, "the sample book has such an account (e.g. ACC-00249)"
    return rows.sort("account_id").row(0, named=True)


@pytest.fixture
def store():
    s = ActionStore(os.environ["CHI_STATE_DB"])  # the file the app writes (conftest: per test)
    yield s
    s.close()


@pytest.fixture
def stub(tmp_path, monkeypatch):
    s = SalesforceStub(tmp_path, users=USER_IDS).start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", s.ca_file)  # trust the stub's test CA (requests reads it)
    yield s
    s.stop()


def sf_secrets(stub: SalesforceStub) -> dict:
    return {"session_id": stub.session_id, "instance_url": stub.instance_url}


def open_app(page: str, query: dict | None = None, *, user: dict | None = None, stub: SalesforceStub | None = None):
    at = app(query)
    if user is not None:
        at.user = user
    if stub is not None:
        at.secrets["salesforce"] = sf_secrets(stub)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def account_page(account_id: str, **kw):
    return open_app("app_pages/account.py", {"account": account_id}, **kw)


def actions_page(**kw):
    return open_app("app_pages/actions.py", **kw)


def click(at, key: str):
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def timeline_rows(at) -> pl.DataFrame:
    frames = [pl.from_pandas(d.value) for d in at.dataframe if "What" in d.value.columns]
    assert frames, "the timeline list is on the page"
    return frames[0]


def keys(at, kind: str = "button") -> set[str]:
    return {w.key for w in at.get(kind) if getattr(w, "key", None)}


# --------------------------------------------------------------------------------- tests


def test_plays_are_ranked_with_their_evidence_and_policy(account, book, playbooks, roles):
    aid = account["account_id"]
    recs = recommend(account, playbooks, book.tables, roles=roles)
    at = account_page(aid)
    body = texts(at)
    assert "Recommended next steps" in [s.value for s in at.subheader]
    # ranked: the titles appear in the engine's order, each card numbered
    heads = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert [h.splitlines()[0][5:] for h in heads] == [r.title for r in recs]
    assert all(f":gray-badge[Rank {i + 1} of {len(recs)}]" in h for i, h in enumerate(heads))
    renewal = next(h for h in heads if "Renewal risk review" in h)
    assert "Needs manager approval" in renewal
    # the billing play's evidence: the signal in words, the overdue invoice, the policy
    billing = next(r for r in recs if r.play == "billing_follow_up")
    assert billing.signals[0].phrase in body  # e.g. "Invoice 38 days overdue"
    invoice = billing.records[0].records[0]
    assert invoice.ref in body and invoice.detail in body  # "INV-005002", "38 days overdue, unpaid"
    assert "**Policy:** An invoice 30 or more days overdue" in body
    # a group with nothing in it is evidence too
    assert "none found" in body
    # act / dismiss for every play; the local user (no sign-in) may do both
    for r in recs:
        assert {f"act_btn:{aid}:{r.play}", f"dismiss_btn:{aid}:{r.play}"} <= keys(at)
        assert not at.button(key=f"act_btn:{aid}:{r.play}").disabled
    assert any(NOT_CONNECTED in i.value for i in at.info)  # no secrets at all: the banner, no crash


def test_a_csm_cannot_act_on_someone_elses_account(account, book):
    other = book.summary.filter(
        (pl.col("tier") == "at_risk") & (pl.col("owner") != account["owner"]) & (pl.col("owner") != "Emily Chen")
    ).row(0, named=True)
    at = account_page(other["account_id"], user=EMILY)
    buttons = [b for b in at.button if str(b.key).startswith("act_btn:")]
    assert buttons and all(b.disabled for b in buttons)
    assert "may act only on their own accounts" in texts(at)


def test_action_form_saves_then_syncs_one_task_to_salesforce(account, book, playbooks, roles, store, stub):
    aid, play = account["account_id"], "billing_follow_up"
    base = f"{aid}:{play}"
    rec = next(r for r in recommend(account, playbooks, book.tables, roles=roles) if r.play == play)
    at = account_page(aid, stub=stub)
    assert not any(NOT_CONNECTED in i.value for i in at.info)  # connected: no banner
    click(at, f"act_btn:{base}")
    # the form is prefilled from the play's task template
    assert at.text_input(key=f"af:{base}:subject").value == rec.draft.subject
    assert at.text_input(key=f"af:{base}:owner").value == rec.draft.owner_email
    assert at.text_area(key=f"af:{base}:body").value == rec.draft.body
    assert at.selectbox(key=f"af:{base}:priority").value == "high"
    assert at.radio(key=f"af:{base}:type").options == ["CRM task", "E-mail to the customer", "Note on the account"]
    nonce = at.session_state[f"nonce:{base}"]
    at.text_input(key=f"af:{base}:subject").input("Call the billing contact about the overdue invoice")
    click(at, f"af:{base}:submit")

    # stored first (who, when, account, play, evidence, payload) ...
    [action] = store.actions_for_account(aid)
    assert action.created_by == "local@localhost" and action.play == play and action.account_crm_id == account["crm_id"]
    assert action.payload["subject"] == "Call the billing contact about the overdue invoice"
    assert action.payload["owner_email"] == rec.draft.owner_email and action.payload["priority"] == "high"
    snap = action.evidence
    assert snap["policy"] == rec.policy and snap["records"][0]["records"][0]["ref"] == rec.records[0].records[0].ref
    # ... then synced at once: one Task on the stub, upserted on the action's key
    assert action.status == "synced" and action.crm_id.startswith("00T")
    [task] = stub.tasks_with("Idempotency_Key__c", action.key)
    assert task["Id"] == action.crm_id and task["WhatId"] == account["crm_id"]
    assert task["Subject"] == "Call the billing contact about the overdue invoice"
    assert task["OwnerId"] == USER_IDS[rec.draft.owner_email] and task["Priority"] == "High" and task["Status"] == "Not Started"
    # the page shows the saved action with its status instead of the form
    assert any("Synced" in s.value and action.crm_id in s.value for s in at.success)
    assert f"af:{base}:submit" not in keys(at)
    assert at.session_state[f"nonce:{base}"] == nonce  # not rotated on success

    # a rerun, and the same form submitted again (same token), make nothing new
    at.run()
    del at.session_state[f"done:nonce:{base}"]  # bring the same form (same token) back
    at.run()
    click(at, f"af:{base}:submit")
    assert [a.id for a in store.actions_for_account(aid)] == [action.id]
    assert len(stub.tasks) == 1
    assert any(action.crm_id in s.value for s in at.success)

    # the timeline's actions lane has it
    rows = timeline_rows(at)
    assert "Actions & decisions" in set(rows["Source"])
    assert any("synced to the CRM" in t for t in rows["What"])

    # "Log another action": a new form with a new token
    click(at, f"another:{base}")
    assert f"af:{base}:submit" in keys(at)
    assert at.session_state[f"nonce:{base}"] != nonce
    assert at.text_input(key=f"af:{base}:subject").value == rec.draft.subject


def test_errors_keep_what_was_typed_and_a_failed_sync_can_be_retried(account, store, stub):
    aid, play = account["account_id"], "billing_follow_up"
    base = f"{aid}:{play}"
    at = account_page(aid, stub=stub)
    click(at, f"act_btn:{base}")
    at.text_input(key=f"af:{base}:subject").input("Chase the PO number")
    at.text_input(key=f"af:{base}:owner").input("not an address")
    click(at, f"af:{base}:submit")
    # the engine's ActionError, as it is; nothing stored; the form keeps the values
    assert any("owner_email" in e.value and "is not an e-mail address" in e.value for e in at.error)
    assert store.actions_for_account(aid) == []
    assert at.text_input(key=f"af:{base}:subject").value == "Chase the PO number"
    assert at.text_input(key=f"af:{base}:owner").value == "not an address"

    # Salesforce answers 503: the action is kept as failed with the error text and a Retry
    at.text_input(key=f"af:{base}:owner").input("")
    stub.fail(503, times=3)
    click(at, f"af:{base}:submit")
    [action] = store.actions_for_account(aid)
    assert action.status == "failed" and "503" in action.last_error
    assert any("Sync failed" in e.value and "503" in e.value for e in at.error)
    stub.failures.clear()
    click(at, f"retry:{base}:{action.id}")
    action = store.get(action.id)
    assert action.status == "synced" and len(stub.tasks) == 1
    assert any("Synced" in s.value for s in at.success)


def test_dismiss_with_a_reason_is_logged_shown_and_on_the_timeline(account, store):
    aid, play = account["account_id"], "training_offer"
    base = f"{aid}:{play}"
    at = account_page(aid)
    click(at, f"dismiss_btn:{base}")
    assert at.selectbox(key=f"df:{base}:reason").options == [
        "Already done outside the app", "Already in progress with the customer", "Does not fit this account right now",
        "The data behind it is wrong", "Other (say why)",
    ]
    click(at, f"df:{base}:submit")
    assert any("Pick a reason" in e.value for e in at.error)
    at.selectbox(key=f"df:{base}:reason").select("other")
    click(at, f"df:{base}:submit")
    assert any("say why in the note" in e.value for e in at.error)  # the engine's words
    assert store.decisions_for_account(aid) == []
    at.text_area(key=f"df:{base}:note").input("Training already booked for January")
    click(at, f"df:{base}:submit")

    [d] = store.decisions_for_account(aid)
    assert (d.play, d.reason, d.note, d.decided_by) == (play, "other", "Training already booked for January", "local@localhost")
    assert d.evidence["play"] == play and d.evidence["signals"]
    shown = [i.value for i in at.info if "Dismissed:" in i.value]
    assert shown and "Other (say why)" in shown[0] and "Training already booked for January" in shown[0]
    # the timeline (frame and list) carries the decision
    events = store.account_events(aid)
    assert "dismissed" in set(events["event"])
    rows = timeline_rows(at)
    assert any(w.startswith("Not done: Training offer (low adoption) — Other (say why)") for w in rows["What"])
    # "Done": the play is folded into the handled ones, the decision still shown on its card
    click(at, f"dismiss_done:{base}")
    assert any(e.label.startswith("Handled in the last 30 days: Training offer (low adoption) (dismissed: Other")
               for e in at.expander)
    assert "Dismissed by local@localhost" in texts(at)

    # a fresh session sees the same: the decision is stored, not kept in the session
    again = account_page(aid)
    assert "Dismissed by local@localhost" in texts(again)
    assert any("Not done: Training offer" in w for w in timeline_rows(again)["What"])


def test_approvals_csm_waits_manager_approves_and_it_syncs(account, store, stub, roles, monkeypatch):
    aid, play = account["account_id"], "renewal_risk_review"
    base = f"{aid}:{play}"
    owner_email = roles.by_owner(account["owner"]).email
    csm = {"is_logged_in": True, "email": owner_email, "name": account["owner"]}

    # the account's CSM (signed in) logs the renewal risk review: it needs approval
    at = account_page(aid, user=csm, stub=stub)
    click(at, f"act_btn:{base}")
    assert "(needs manager approval)" in at.radio(key=f"af:{base}:type").options[0]
    click(at, f"af:{base}:submit")
    [action] = store.actions_for_account(aid)
    assert action.status == "needs_approval" and action.created_by == owner_email
    assert any("Needs approval" in w.value for w in at.warning)
    assert stub.tasks == {}  # nothing sent before approval

    # the CSM sees the queue read-only; the engine refuses them too
    page = actions_page(user=csm, stub=stub)
    assert {m.label: m.value for m in page.metric}["Needs approval"] == "1"
    assert any("Read-only" in i.value for i in page.info)
    assert f"approve:{action.id}" not in keys(page)
    assert "may not approve" in texts(page) and "Maria Garcia" in texts(page)  # and who can
    assert "Evidence the CSM saw" in texts(page)
    with pytest.raises(PermissionDenied):
        store.approve(roles.user(owner_email), action.id, roles)

    # the manager (demo mode: CHI_USER, no sign-in) approves: it goes to Salesforce at once
    monkeypatch.setenv("CHI_USER", "maria.garcia@example.com")
    page = actions_page(stub=stub)
    assert "Acting as **Maria Garcia (manager)**: act, dismiss, retry, approve (their team's accounts)" in "\n".join(
        c.value for c in page.sidebar.caption)
    assert not any("Read-only" in i.value for i in page.info)
    page.text_input(key=f"comment:{action.id}").input("Go ahead, loop me in on the exec call")
    click(page, f"approve:{action.id}")
    action = store.get(action.id)
    assert action.status == "synced" and action.decided_by == "maria.garcia@example.com"
    assert [t["Id"] for t in stub.tasks_with("Idempotency_Key__c", action.key)] == [action.crm_id]
    assert any("Approved" in s.value and action.crm_id in s.value for s in page.success)
    assert {m.label: m.value for m in page.metric}["Synced"] == "1"

    # back on the account: approved and synced, in the card and on the timeline
    at = account_page(aid, user=csm, stub=stub)
    what = list(timeline_rows(at)["What"])
    assert any(w.startswith("Task approved by maria.garcia@example.com") for w in what)
    assert any("synced to the CRM" in w for w in what)


def test_a_rejected_action_needs_a_comment_and_is_never_sent(account, store, stub, monkeypatch):
    aid, play = account["account_id"], "renewal_risk_review"
    base = f"{aid}:{play}"
    at = account_page(aid, stub=stub)  # the local user (no sign-in) logs it
    click(at, f"act_btn:{base}")
    click(at, f"af:{base}:submit")
    [action] = store.actions_for_account(aid)
    monkeypatch.setenv("CHI_USER", "maria.garcia@example.com")
    page = actions_page(stub=stub)
    click(page, f"reject:{action.id}")
    assert any("comment is required" in e.value for e in page.error)
    page.text_input(key=f"comment:{action.id}").input("Talk to me first")
    click(page, f"reject:{action.id}")
    assert store.get(action.id).status == "rejected"
    assert stub.tasks == {}


def test_outbox_waits_without_salesforce_and_sync_now_sends_it(account, store, stub):
    aid, play = account["account_id"], "billing_follow_up"
    base = f"{aid}:{play}"
    at = account_page(aid)  # no secrets: not connected
    click(at, f"act_btn:{base}")
    click(at, f"af:{base}:submit")
    [action] = store.actions_for_account(aid)
    assert action.status == "pending"
    assert any("Saved — waiting to sync" in i.value and NOT_CONNECTED in i.value for i in at.info)

    page = actions_page()
    assert any(NOT_CONNECTED in i.value for i in page.info)
    assert page.button(key="sync_now").disabled
    assert {m.label: m.value for m in page.metric}["Waiting to sync"] == "1"

    page = actions_page(stub=stub)  # Salesforce configured now
    assert not page.button(key="sync_now").disabled
    click(page, "sync_now")
    assert store.get(action.id).status == "synced" and len(stub.tasks) == 1
    assert any("1 synced, 0 failed" in s.value for s in page.success)
    recent = [pl.from_pandas(d.value) for d in page.dataframe if "Logged by" in d.value.columns and "Subject" in d.value.columns]
    assert recent and recent[0]["Status"].to_list() == ["Synced"]
