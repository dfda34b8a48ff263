"""The HubSpot sink through the REAL hubspot-api-client, over real HTTP(S), against the
loopback stub (tests/sources/hubspot_stub.py) — the client is only pointed at the stub
through its configuration `host`.

What must hold: one task per action whatever happens (double submit, rerun, retry, an
answer lost after the write, a search index that lags behind the write); an outage, a
500, a 401, a 429 leave the action in the store with its error and it syncs exactly once
later; a validation error or an unknown company names the fix; the token never leaks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from health.actions import ActionStore, Backoff, action_key, crm_task, sync
from health.crm import CrmAuthError, CrmTask
from sources.hubspot import HubSpotConfig, HubSpotSink
from sources.writeback import build_sink, parse_crm_config
from tests.sources.hubspot_stub import HubSpotStub

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
COMPANY = "9876543210"
CARLOS_OWNER = "55501"


@pytest.fixture
def stub(tmp_path):
    s = HubSpotStub(tmp_path, companies={COMPANY}, owners={"carlos.mendes@example.com": CARLOS_OWNER}).start()
    yield s
    s.stop()


@pytest.fixture
def store(tmp_path, clock):
    st = ActionStore(tmp_path / "state.db", clock=clock, backoff=Backoff(base=dt.timedelta(seconds=30)))
    yield st
    st.close()


def make_sink(stub: HubSpotStub, token: str | None = None, **config) -> HubSpotSink:
    cfg = HubSpotConfig(host=stub.url, timeout_seconds=5, **config)
    return HubSpotSink(cfg, {"access_token": token or stub.token}, environ={}, ca_file=stub.ca_file)


ACCOUNT = {"account_id": "ACC-1", "name": "Acme", "owner": "Carlos Mendes", "owner_email": "carlos.mendes@example.com",
           "crm_id": COMPANY}


def act(store, roles, playbooks, *, nonce="n1", account=ACCOUNT, play="billing_follow_up", action_type="task", **payload):
    user = roles.user("carlos.mendes@example.com")
    body = {"subject": "Call the billing contact", "body": "Invoice overdue", "due_date": "2026-12-03",
            "owner_email": "carlos.mendes@example.com", "priority": "high", **payload}
    return store.create_action(user, account, action_type=action_type, payload=body,
                               key=action_key(account["account_id"], play, nonce), playbooks=playbooks, play=play)


def test_double_submit_rerun_and_retry_make_one_task(stub, store, roles, playbooks, clock):
    sink = make_sink(stub)
    first = act(store, roles, playbooks)
    again = act(store, roles, playbooks)  # the same form submitted twice
    assert first.created and not again.created

    assert sync(store, sink).synced == [first.record.id]
    action = store.get(first.record.id)
    assert action.status == "synced"
    tasks = stub.with_key(action.key)
    assert len(tasks) == 1 and tasks[0]["id"] == action.crm_id
    t = tasks[0]
    p = t["properties"]
    assert p["hs_task_subject"] == "Call the billing contact" and p["hs_task_body"] == "Invoice overdue"
    assert p["hs_task_status"] == "NOT_STARTED" and p["hs_task_priority"] == "HIGH" and p["hs_task_type"] == "TODO"
    assert p["hs_timestamp"] == "2026-12-03T09:00:00Z" and p["hubspot_owner_id"] == CARLOS_OWNER
    assert t["associations"] == [{"to": {"id": COMPANY},
                                  "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}]

    # A rerun syncs nothing more; a direct second upsert of the same key updates the same task.
    assert sync(store, sink).claimed == 0
    assert sync(store, sink, force=True).claimed == 0
    assert sink.upsert_task(action.key, crm_task(action)) == action.crm_id
    assert stub.total() == 1 and stub.count("PATCH", "/crm/v3/objects/tasks/") == 1

    # The answer to the create is lost after HubSpot committed it: the retry finds it.
    second = act(store, roles, playbooks, nonce="n2")
    stub.drop_next_write()
    sync(store, sink)
    a = store.get(second.record.id)
    assert a.status == "failed" and a.error_kind == "unavailable" and a.error_retryable
    assert len(stub.with_key(second.record.key)) == 1
    store.retry(roles.user("carlos.mendes@example.com"), second.record.id)
    assert sync(store, sink).synced == [second.record.id]
    assert store.get(second.record.id).crm_id == stub.with_key(second.record.key)[0]["id"]
    assert stub.total() == 2 and stub.count("POST", "/crm/v3/objects/tasks") - stub.count("POST", "/search") == 2


def test_search_index_lag_is_covered_by_the_unique_key_property(tmp_path, store, roles, playbooks, clock):
    stub = HubSpotStub(tmp_path, companies={COMPANY}, index_lag=True).start()
    try:
        sink = make_sink(stub, owner_lookup=False)
        created = act(store, roles, playbooks).record
        stub.drop_next_write()
        sync(store, sink)
        assert store.get(created.id).status == "failed"
        # The retry's search does not see the task yet; the create answers 409 (unique
        # property) — and once the index catches up, the sink returns that task.
        clock.advance(minutes=1)
        sync(store, sink)
        a = store.get(created.id)
        assert a.status == "failed" and a.error_kind == "unavailable" and a.error_retryable
        assert "409" in a.last_error and "search index" in a.last_error and stub.total() == 1
        stub.reindex()
        clock.advance(minutes=5)
        assert sync(store, sink).synced == [created.id]
        assert store.get(created.id).crm_id == stub.with_key(created.key)[0]["id"]
        assert stub.total() == 1
    finally:
        stub.stop()


def test_hubspot_down_keeps_the_action_and_syncs_once_when_back(stub, store, roles, playbooks, clock):
    sink = make_sink(stub)
    created = act(store, roles, playbooks).record
    stub.stop()
    sync(store, sink)
    a = store.get(created.id)
    assert a.status == "failed" and a.error_kind == "unavailable" and a.error_retryable
    assert f"127.0.0.1:{stub.port} is unreachable" in a.last_error
    stub.start()
    assert sync(store, sink).claimed == 0  # back-off
    clock.advance(seconds=31)
    assert sync(store, sink).synced == [created.id]
    assert sync(store, sink, force=True).claimed == 0
    assert stub.total() == 1
    assert [e["event"] for e in store.events(created.id)] == ["created", "failed", "synced"]


@pytest.mark.parametrize("status,payload,headers,needle", [
    (500, {"status": "error", "message": "internal error", "category": "INTERNAL_ERROR"}, {}, "HubSpot answered 500"),
    (502, None, {}, "HubSpot answered 502"),
    (429, {"status": "error", "message": "You have reached your secondly limit.", "category": "RATE_LIMITS",
           "policyName": "SECONDLY"}, {"Retry-After": "1"}, "rate limit reached (429)"),
])
def test_5xx_and_rate_limit_are_retried(stub, store, roles, playbooks, clock, status, payload, headers, needle):
    sink = make_sink(stub, owner_lookup=False)
    created = act(store, roles, playbooks).record
    stub.fail(status, payload, headers=headers)
    sync(store, sink)
    a = store.get(created.id)
    assert a.status == "failed" and a.error_kind == "unavailable" and a.error_retryable and needle in a.last_error
    clock.advance(minutes=1)
    assert sync(store, sink).synced == [created.id]
    assert stub.total() == 1


def test_401_names_the_fix_never_the_token_and_syncs_after_it(stub, store, roles, playbooks):
    sink = make_sink(stub, token="pat-na1-WRONG-token")
    assert "WRONG" not in repr(sink)
    created = act(store, roles, playbooks).record
    sync(store, sink)
    a = store.get(created.id)
    assert a.status == "failed" and a.error_kind == "auth" and not a.error_retryable
    assert "401" in a.last_error and "access_token" in a.last_error and "WRONG" not in a.last_error
    assert stub.total() == 0
    assert sync(store, make_sink(stub), force=True).synced == [created.id]  # the token fixed in secrets.toml
    assert stub.total() == 1


def test_validation_error_names_the_config(stub, store, roles, playbooks):
    bad = make_sink(stub, extra_properties={"bogus_prop": "x"})
    created = act(store, roles, playbooks).record
    sync(store, bad)
    a = store.get(created.id)
    assert a.error_kind == "field" and not a.error_retryable
    assert "400" in a.last_error and "bogus_prop" in a.last_error and "config/crm.yaml" in a.last_error
    assert sync(store, make_sink(stub), force=True).synced == [created.id]


def test_missing_key_property_is_a_field_error_naming_it(tmp_path, store, roles, playbooks):
    stub = HubSpotStub(tmp_path, key_property=None).start()
    try:
        created = act(store, roles, playbooks).record
        sync(store, make_sink(stub))
        a = store.get(created.id)
        assert a.error_kind == "field" and "chi_idempotency_key" in a.last_error
    finally:
        stub.stop()


def test_missing_or_unknown_company_id(stub, store, roles, playbooks):
    sink = make_sink(stub)
    no_id = act(store, roles, playbooks, account={**ACCOUNT, "account_id": "ACC-2", "crm_id": None}).record
    unknown = act(store, roles, playbooks, account={**ACCOUNT, "account_id": "ACC-3", "crm_id": "111"}).record
    sync(store, sink)
    for aid in (no_id.id, unknown.id):
        a = store.get(aid)
        assert a.status == "failed" and a.error_kind == "account", a.last_error
        assert "crm_id" in a.last_error and "config/sources.yaml" in a.last_error
    assert stub.total() == 0


def test_email_is_a_completed_email_task_and_note_a_note(stub, store, roles, playbooks):
    sink = make_sink(stub)
    email = act(store, roles, playbooks, action_type="email", nonce="e", subject="Your overdue invoice",
                to=["ap@acme.test"]).record
    note = act(store, roles, playbooks, action_type="note", nonce="n", subject="Spoke to finance",
               owner_email="nobody@example.com", body="They pay <Friday>").record
    assert sorted(sync(store, sink).synced) == sorted([email.id, note.id])
    e = stub.with_key(email.key, "tasks")[0]
    n = stub.with_key(note.key, "notes")[0]
    assert e["properties"]["hs_task_type"] == "EMAIL" and e["properties"]["hs_task_status"] == "COMPLETED"
    assert e["properties"]["hs_task_body"].startswith("To: ap@acme.test")
    assert n["properties"]["hs_note_body"].startswith("<p><strong>Spoke to finance</strong></p><p>They pay &lt;Friday&gt;</p>")
    assert "hubspot_owner_id" not in n["properties"] and "nobody@example.com (no HubSpot owner" in n["properties"]["hs_note_body"]
    assert n["associations"][0]["types"][0]["associationTypeId"] == 190
    assert sink.find_by_key(note.key) == n["id"] and sink.find_by_key("chi-none") is None


def test_tls_with_a_private_ca(tmp_path, store, roles, playbooks):
    stub = HubSpotStub(tmp_path, companies={COMPANY}, tls=True).start()
    try:
        created = act(store, roles, playbooks).record
        assert sync(store, make_sink(stub, owner_lookup=False)).synced == [created.id]
        assert stub.total() == 1
    finally:
        stub.stop()


def test_no_token_is_an_auth_error_naming_secrets_toml():
    with pytest.raises(CrmAuthError, match="secrets.toml"):
        HubSpotSink(HubSpotConfig(), {}, environ={}).find_by_key("chi-x")


def test_build_sink_from_crm_yaml_secrets_and_env(stub):
    cfg = parse_crm_config(f"crm: hubspot\nhubspot:\n  host: {stub.url}\n  owner_lookup: false\n")
    sink = build_sink(cfg, {"hubspot": {"access_token": stub.token}}, environ={})
    assert isinstance(sink, HubSpotSink) and stub.token not in repr(sink)
    assert sink.find_by_key("chi-nothing") is None
    env_sink = build_sink(cfg, {}, environ={"HUBSPOT_ACCESS_TOKEN": stub.token})
    assert env_sink.find_by_key("chi-nothing") is None
    task = CrmTask(kind="task", subject="s", account_id="ACC-1", account_crm_id=COMPANY)
    assert env_sink.upsert_task("chi-k1", task) == env_sink.upsert_task("chi-k1", task)
    assert stub.total() == 1
    with pytest.raises(CrmAuthError):  # crm: hubspot without a token: an error on each action
        build_sink(cfg, {}, environ={}).find_by_key("chi-x")


def test_crm_yaml_hubspot_errors_have_lines():
    from health.yaml_config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_crm_config("crm: hubspt\nhubspot:\n  host: api.hubapi.com\n  idempotency_propery: x\n")
    text = str(err.value)
    assert "config/crm.yaml:1: crm: 'hubspt' is not allowed — did you mean 'hubspot'?" in text
    assert "hubspot.host" in text and "did you mean 'idempotency_property'" in text
