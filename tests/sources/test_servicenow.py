"""The ServiceNow sink (requests over real HTTP) against the loopback Table API stub
(tests/sources/servicenow_stub.py).

What must hold: one record per action whatever happens (double submit, rerun, retry, an
answer lost after the insert); an outage, a 500, a 429, a 401, a hibernating instance
leave the action in the store with its error, and it syncs exactly once later; an
invalid table or an unknown customer account names the fix; no secret leaks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from health.actions import ActionStore, Backoff, action_key, crm_task, sync
from health.crm import CrmAuthError, CrmTask
from sources.salesforce import http_session
from sources.servicenow import ServiceNowConfig, ServiceNowSink
from sources.writeback import build_sink, parse_crm_config
from tests.sources.servicenow_stub import ServiceNowStub

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
ACCOUNT_SYS_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
CARLOS_SYS_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def stub(tmp_path):
    s = ServiceNowStub(tmp_path, accounts={ACCOUNT_SYS_ID}, users={"carlos.mendes@example.com": CARLOS_SYS_ID},
                       token="oauth-TOKEN-stub").start()
    yield s
    s.stop()


@pytest.fixture
def store(tmp_path, clock):
    st = ActionStore(tmp_path / "state.db", clock=clock, backoff=Backoff(base=dt.timedelta(seconds=30)))
    yield st
    st.close()


def make_sink(stub: ServiceNowStub, password: str | None = None, **config) -> ServiceNowSink:
    session = http_session(trust_env=False, timeout=5)
    creds = {"instance_url": stub.url, "username": stub.user, "password": password or stub.password}
    return ServiceNowSink(ServiceNowConfig(timeout_seconds=5, **config), creds, session=session, environ={})


ACCOUNT = {"account_id": "ACC-1", "name": "Acme", "owner": "Carlos Mendes", "owner_email": "carlos.mendes@example.com",
           "crm_id": ACCOUNT_SYS_ID}


def act(store, roles, playbooks, *, nonce="n1", account=ACCOUNT, play="billing_follow_up", action_type="task", **payload):
    user = roles.user("carlos.mendes@example.com")
    body = {"subject": "Call the billing contact", "body": "Invoice overdue", "due_date": "2026-12-03",
            "owner_email": "carlos.mendes@example.com", "priority": "high", **payload}
    return store.create_action(user, account, action_type=action_type, payload=body,
                               key=action_key(account["account_id"], play, nonce), playbooks=playbooks, play=play)


def test_double_submit_rerun_and_retry_make_one_record(stub, store, roles, playbooks, clock):
    sink = make_sink(stub)
    first = act(store, roles, playbooks)
    act(store, roles, playbooks)  # double submit
    assert sync(store, sink).synced == [first.record.id]
    action = store.get(first.record.id)
    recs = stub.with_key(action.key)
    assert len(recs) == 1 and recs[0]["sys_id"] == action.crm_id
    r = recs[0]
    assert r["account"] == ACCOUNT_SYS_ID and r["short_description"] == "Call the billing contact"
    assert r["description"] == "Invoice overdue" and r["due_date"] == "2026-12-03 09:00:00"
    assert r["state"] == "1" and r["priority"] == "2" and r["assigned_to"] == CARLOS_SYS_ID
    assert r["correlation_display"] == "CHI"

    assert sync(store, sink).claimed == 0
    assert sync(store, sink, force=True).claimed == 0
    assert sink.upsert_task(action.key, crm_task(action)) == action.crm_id
    assert len(stub.records()) == 1 and stub.count("PATCH") == 1

    second = act(store, roles, playbooks, nonce="n2")
    stub.drop_next_write()
    sync(store, sink)
    a = store.get(second.record.id)
    assert a.status == "failed" and a.error_kind == "unavailable" and a.error_retryable
    assert len(stub.with_key(second.record.key)) == 1
    store.retry(roles.user("carlos.mendes@example.com"), second.record.id)
    assert sync(store, sink).synced == [second.record.id]
    assert store.get(second.record.id).crm_id == stub.with_key(second.record.key)[0]["sys_id"]
    assert len(stub.records()) == 2 and stub.count("POST") == 2


def test_down_then_back_syncs_once(stub, store, roles, playbooks, clock):
    sink = make_sink(stub)
    created = act(store, roles, playbooks).record
    stub.stop()
    sync(store, sink)
    a = store.get(created.id)
    assert a.status == "failed" and a.error_kind == "unavailable" and f"127.0.0.1:{stub.port} is unreachable" in a.last_error
    stub.start()
    clock.advance(seconds=31)
    assert sync(store, sink).synced == [created.id]
    assert sync(store, sink, force=True).claimed == 0
    assert len(stub.records()) == 1


@pytest.mark.parametrize("status,payload,needle", [
    (500, {"error": {"message": "Internal server error", "detail": None}, "status": "failure"}, "ServiceNow answered 500"),
    (503, None, "ServiceNow answered 503"),
    (429, {"error": {"message": "Rate limit exceeded", "detail": "rate limit rule"}, "status": "failure"}, "rate limit"),
])
def test_5xx_and_429_are_retried(stub, store, roles, playbooks, clock, status, payload, needle):
    sink = make_sink(stub)
    created = act(store, roles, playbooks).record
    stub.fail(status, payload)
    sync(store, sink)
    a = store.get(created.id)
    assert a.error_kind == "unavailable" and a.error_retryable and needle in a.last_error
    clock.advance(minutes=1)
    assert sync(store, sink).synced == [created.id]
    assert len(stub.records()) == 1


def test_hibernating_instance_is_retried(stub, store, roles, playbooks, clock):
    sink = make_sink(stub)
    created = act(store, roles, playbooks).record
    stub.sleeping = True
    sync(store, sink)
    a = store.get(created.id)
    assert a.error_kind == "unavailable" and "hibernating" in a.last_error
    stub.sleeping = False
    clock.advance(minutes=1)
    assert sync(store, sink).synced == [created.id]


def test_401_names_the_fix_and_never_the_password(stub, store, roles, playbooks):
    bad = make_sink(stub, password="WRONG-pw")
    assert "WRONG" not in repr(bad)
    created = act(store, roles, playbooks).record
    sync(store, bad)
    a = store.get(created.id)
    assert a.error_kind == "auth" and not a.error_retryable and "401" in a.last_error
    assert "[servicenow]" in a.last_error and "WRONG" not in a.last_error
    assert sync(store, make_sink(stub), force=True).synced == [created.id]
    assert len(stub.records()) == 1


def test_bearer_token_works(stub, store, roles, playbooks):
    session = http_session(trust_env=False, timeout=5)
    sink = ServiceNowSink(ServiceNowConfig(), {"instance_url": stub.url, "token": stub.token}, session=session, environ={})
    created = act(store, roles, playbooks).record
    assert sync(store, sink).synced == [created.id]
    assert stub.token not in repr(sink)


def test_invalid_table_is_a_field_error(stub, store, roles, playbooks):
    created = act(store, roles, playbooks).record
    sync(store, make_sink(stub, table="sn_customerservice_kase"))
    a = store.get(created.id)
    assert a.error_kind == "field" and "Invalid table sn_customerservice_kase" in a.last_error and "config/crm.yaml" in a.last_error
    assert sync(store, make_sink(stub), force=True).synced == [created.id]


def test_missing_or_unknown_account(stub, store, roles, playbooks):
    sink = make_sink(stub)
    no_id = act(store, roles, playbooks, account={**ACCOUNT, "account_id": "ACC-2", "crm_id": None}).record
    unknown = act(store, roles, playbooks, account={**ACCOUNT, "account_id": "ACC-3", "crm_id": "f" * 32}).record
    sync(store, sink)
    for aid in (no_id.id, unknown.id):
        a = store.get(aid)
        assert a.status == "failed" and a.error_kind == "account", a.last_error
        assert "crm_id" in a.last_error and "config/sources.yaml" in a.last_error
    assert stub.records() == []


def test_email_and_note_are_closed_records_with_a_journal_entry(stub, store, roles, playbooks):
    sink = make_sink(stub)
    email = act(store, roles, playbooks, action_type="email", nonce="e", subject="Your overdue invoice",
                to=["ap@acme.test"]).record
    note = act(store, roles, playbooks, action_type="note", nonce="n", subject="Spoke to finance",
               owner_email="nobody@example.com").record
    assert sorted(sync(store, sink).synced) == sorted([email.id, note.id])
    e, n = stub.with_key(email.key)[0], stub.with_key(note.key)[0]
    assert e["short_description"] == "Email: Your overdue invoice" and e["state"] == "3"
    assert e["description"].startswith("To: ap@acme.test") and stub.journal[e["sys_id"]][0].startswith("To: ap@acme.test")
    assert n["short_description"] == "Note: Spoke to finance" and n["state"] == "3" and "assigned_to" not in n
    assert "nobody@example.com (no active ServiceNow user" in n["description"]
    # a second upsert does not add a second journal entry
    sink.upsert_task(note.key, crm_task(store.get(note.id)))
    assert len(stub.journal[n["sys_id"]]) == 1


def test_build_sink_from_crm_yaml(stub):
    cfg = parse_crm_config("crm: servicenow\nservicenow:\n  table: task\n  account_table: null\n")
    session = http_session(trust_env=False, timeout=5)
    sink = build_sink(cfg, {"servicenow": {"instance_url": stub.url, "username": stub.user, "password": stub.password}},
                      session=session, environ={})
    assert isinstance(sink, ServiceNowSink) and stub.password not in repr(sink)
    task = CrmTask(kind="task", subject="s", account_id="ACC-1", account_crm_id="x" * 32)
    assert sink.upsert_task("chi-k1", task) == sink.upsert_task("chi-k1", task)
    assert len(stub.records("task")) == 1
    env = {"SERVICENOW_INSTANCE_URL": stub.url, "SERVICENOW_USERNAME": stub.user, "SERVICENOW_PASSWORD": stub.password}
    assert build_sink(cfg, None, session=session, environ=env).find_by_key("chi-k1") == stub.records("task")[0]["sys_id"]
    with pytest.raises(CrmAuthError, match="secrets.toml"):
        build_sink(cfg, {}, environ={}).find_by_key("chi-x")


def test_crm_yaml_servicenow_errors_have_lines():
    from health.yaml_config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_crm_config("crm: servicenow\nservicenow:\n  tabel: task\n  instance_url: acme.service-now.com\n")
    text = str(err.value)
    assert "did you mean 'table'" in text and "servicenow.instance_url" in text
