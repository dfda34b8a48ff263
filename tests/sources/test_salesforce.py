"""The Salesforce sink through the REAL simple-salesforce client, over real HTTPS, against
the loopback stub (tests/sources/sf_stub.py) — nothing in the client is patched.

What must hold: one Task per action whatever happens (double submit, rerun, retry, an
answer lost after the write, the fallback query-then-create path); an outage, a 503, a
401, a field error or a missing account id leave the action in the store with its error,
and it syncs exactly once when things are fixed; errors name the fix; no secret leaks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import requests

from health.actions import ActionStore, Backoff, action_key, sync
from health.crm import CrmAuthError, CrmFieldError, CrmMissingAccount, CrmTask
from sources.salesforce import Idempotency, SalesforceConfig, SalesforceSink, http_session
from sources.writeback import build_sink, parse_crm_config
from tests.sources.sf_stub import SalesforceStub

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
ACCOUNT_ID = "001000000000001AAA"
CARLOS_ID = "005000000000001AAA"


@pytest.fixture
def stub(tmp_path):
    s = SalesforceStub(
        tmp_path,
        accounts={ACCOUNT_ID},
        users={"carlos.mendes@example.com": CARLOS_ID},
        logins={"api@acme.test": "s3cret-PASSWORDtok3n-TOKEN"},
    ).start()
    yield s
    s.stop()


@pytest.fixture
def store(tmp_path, clock):
    st = ActionStore(tmp_path / "state.db", clock=clock, backoff=Backoff(base=dt.timedelta(seconds=30)))
    yield st
    st.close()


def make_sink(stub: SalesforceStub, **config) -> SalesforceSink:
    session = http_session(verify=stub.ca_file, trust_env=False, timeout=5)
    return SalesforceSink(
        SalesforceConfig(**config),
        {"session_id": stub.session_id, "instance_url": stub.instance_url},
        session=session,
        environ={},
    )


ACCOUNT = {"account_id": "ACC-1", "name": "Acme", "owner": "Carlos Mendes", "owner_email": "carlos.mendes@example.com",
           "crm_id": ACCOUNT_ID}


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
    assert first.created and not again.created and first.record.id == again.record.id

    report = sync(store, sink)
    assert report.synced == [first.record.id]
    action = store.get(first.record.id)
    assert action.status == "synced" and action.crm_id.startswith("00T")
    tasks = stub.tasks_with("Idempotency_Key__c", action.key)
    assert len(tasks) == 1
    task = tasks[0]
    assert task["WhatId"] == ACCOUNT_ID and task["Subject"] == "Call the billing contact"
    assert task["ActivityDate"] == "2026-12-03" and task["Status"] == "Not Started" and task["Priority"] == "High"
    assert task["OwnerId"] == CARLOS_ID and task["TaskSubtype"] == "Task"

    # A rerun syncs nothing more; a forced sync of everything and a direct second upsert
    # of the same key update the same Task.
    assert sync(store, sink).claimed == 0
    assert sync(store, sink, force=True).claimed == 0
    from health.actions import crm_task

    assert sink.upsert_task(action.key, crm_task(action)) == action.crm_id
    assert len(stub.tasks) == 1

    # The answer to a write is lost after Salesforce committed it: the retry must find
    # the Task (the update may not resend the create-only TaskSubtype), not make a second.
    second = act(store, roles, playbooks, nonce="n2")
    stub.drop_next_write()
    report = sync(store, sink)
    assert report.failed and store.get(second.record.id).status == "failed"
    assert "unreachable" in store.get(second.record.id).last_error
    assert len(stub.tasks_with("Idempotency_Key__c", second.record.key)) == 1
    retried = store.retry(roles.user("carlos.mendes@example.com"), second.record.id)
    assert retried.next_attempt_at == clock()
    report = sync(store, sink)
    assert report.synced == [second.record.id]
    assert store.get(second.record.id).crm_id == stub.tasks_with("Idempotency_Key__c", second.record.key)[0]["Id"]
    assert len(stub.tasks) == 2


def test_crm_down_keeps_the_action_and_syncs_once_when_back(stub, store, roles, playbooks, clock):
    sink = make_sink(stub)
    created = act(store, roles, playbooks).record
    stub.stop()
    report = sync(store, sink)
    assert report.failed
    a = store.get(created.id)
    assert a.status == "failed" and a.attempts == 1 and a.error_kind == "unavailable" and a.error_retryable
    assert f"127.0.0.1:{stub.port} is unreachable" in a.last_error
    assert a.next_attempt_at == clock() + dt.timedelta(seconds=30)
    # Still down, after the back-off: a second failure doubles the wait.
    clock.advance(seconds=31)
    sync(store, sink)
    a = store.get(created.id)
    assert a.attempts == 2 and a.next_attempt_at == clock() + dt.timedelta(seconds=60)
    # Back up: not before the back-off ends, then exactly once.
    stub.start()
    assert sync(store, sink).claimed == 0
    clock.advance(seconds=61)
    assert sync(store, sink).synced == [created.id]
    assert sync(store, sink, force=True).claimed == 0
    assert len(stub.tasks) == 1
    a = store.get(created.id)
    assert a.status == "synced" and a.last_error is None and a.attempts == 3
    events = [e["event"] for e in store.events(created.id)]
    assert events == ["created", "failed", "failed", "synced"]


def test_503_is_retried(stub, store, roles, playbooks, clock):
    sink = make_sink(stub)
    created = act(store, roles, playbooks).record
    stub.fail(503)
    sync(store, sink)
    a = store.get(created.id)
    assert a.status == "failed" and a.error_kind == "unavailable" and "503" in a.last_error
    clock.advance(minutes=1)
    assert sync(store, sink).synced == [created.id]
    assert len(stub.tasks) == 1


def test_401_invalid_session_names_the_fix_and_syncs_after_it(stub, store, roles, playbooks):
    sink = make_sink(stub)
    created = act(store, roles, playbooks).record
    stub.expire_sessions()
    sync(store, sink)
    a = store.get(created.id)
    assert a.status == "failed" and a.error_kind == "auth" and not a.error_retryable
    assert "INVALID_SESSION_ID" in a.last_error and "session_id" in a.last_error
    assert stub.session_id not in a.last_error  # the secret never lands in the store
    stub.sessions.add(stub.session_id)  # the session is refreshed in secrets.toml
    assert sync(store, sink, force=True).synced == [created.id]
    assert len(stub.tasks) == 1


def test_field_error_names_the_config_and_syncs_after_the_fix(stub, store, roles, playbooks):
    bad = make_sink(stub, extra_fields={"Bogus__c": "x"})
    created = act(store, roles, playbooks).record
    sync(store, bad)
    a = store.get(created.id)
    assert a.status == "failed" and a.error_kind == "field"
    assert "400 INVALID_FIELD" in a.last_error and "Bogus__c" in a.last_error and "config/crm.yaml" in a.last_error
    assert stub.tasks == {}
    assert sync(store, make_sink(stub), force=True).synced == [created.id]
    assert len(stub.tasks) == 1


def test_a_400_from_the_stub_switch_is_a_field_error(stub, store, roles, playbooks):
    sink = make_sink(stub)
    created = act(store, roles, playbooks).record
    stub.fail(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Priority: bad value for restricted picklist field: High",
              fields=["Priority"], only_writes=True)
    sync(store, sink)
    a = store.get(created.id)
    assert a.error_kind == "field" and "Priority" in a.last_error and "picklist" in a.last_error


def test_missing_or_unknown_account_crm_id(stub, store, roles, playbooks):
    sink = make_sink(stub)
    no_id = act(store, roles, playbooks, account={**ACCOUNT, "account_id": "ACC-2", "crm_id": None}).record
    unknown = act(store, roles, playbooks, account={**ACCOUNT, "account_id": "ACC-3", "crm_id": "001000000000999AAA"}).record
    malformed = act(store, roles, playbooks, account={**ACCOUNT, "account_id": "ACC-4", "crm_id": "not-an-id"}).record
    sync(store, sink)
    for aid in (no_id.id, unknown.id, malformed.id):
        a = store.get(aid)
        assert a.status == "failed" and a.error_kind == "account", a.last_error
        assert "crm_id" in a.last_error and "config/sources.yaml" in a.last_error
    assert "ACC-2 has no CRM id" in store.get(no_id.id).last_error
    assert stub.tasks == {}
    assert stub.count("PATCH") == 2  # the account without an id never reached Salesforce


def test_org_without_the_external_id_field_says_how_to_fix_it(tmp_path, store, roles, playbooks):
    stub = SalesforceStub(tmp_path, ext_id_field=None).start()
    try:
        created = act(store, roles, playbooks).record
        sync(store, make_sink(stub))
        a = store.get(created.id)
        assert a.error_kind == "field" and "Idempotency_Key__c" in a.last_error and "mode: query" in a.last_error
    finally:
        stub.stop()


@pytest.mark.parametrize("idem", [
    {"mode": "query", "field": "CHI_Key__c"},
    {"mode": "query", "field": "Subject", "marker": True},
])
def test_fallback_query_then_create_is_idempotent(tmp_path, store, roles, playbooks, clock, idem):
    stub = SalesforceStub(tmp_path, ext_id_field=None, accounts={ACCOUNT_ID}).start()
    try:
        sink = make_sink(stub, idempotency=Idempotency(**idem))
        first = act(store, roles, playbooks).record
        act(store, roles, playbooks)  # double submit
        assert sync(store, sink).synced == [first.id]
        assert len(stub.tasks) == 1
        task = next(iter(stub.tasks.values()))
        if idem.get("marker"):
            assert task["Subject"] == f"Call the billing contact [chi:{first.key}]"
        else:
            assert task["CHI_Key__c"] == first.key
        assert sink.find_by_key(first.key) == task["Id"]
        assert sink.upsert_task(first.key, CrmTask(kind="task", subject="again", account_id="ACC-1",
                                                    account_crm_id=ACCOUNT_ID)) == task["Id"]
        # Lost answer: the retry looks the key up first and finds the Task.
        second = act(store, roles, playbooks, nonce="n2").record
        stub.drop_next_write()
        sync(store, sink)
        assert store.get(second.id).status == "failed"
        clock.advance(minutes=5)
        assert sync(store, sink).synced == [second.id]
        assert len(stub.tasks) == 2
        assert stub.count("POST", "/sobjects/Task") == 2
    finally:
        stub.stop()


def test_email_and_note_are_logged_as_completed_tasks(stub, store, roles, playbooks):
    sink = make_sink(stub)
    email = act(store, roles, playbooks, action_type="email", nonce="e", subject="Your overdue invoice",
                to=["ap@acme.test"]).record
    note = act(store, roles, playbooks, action_type="note", nonce="n", subject="Spoke to finance",
               owner_email="nobody@example.com").record
    assert sorted(sync(store, sink).synced) == sorted([email.id, note.id])
    e = stub.tasks_with("Idempotency_Key__c", email.key)[0]
    n = stub.tasks_with("Idempotency_Key__c", note.key)[0]
    assert e["TaskSubtype"] == "Email" and e["Type"] == "Email" and e["Status"] == "Completed"
    assert e["Description"].startswith("To: ap@acme.test")
    assert n["Subject"] == "Note: Spoke to finance" and n["Status"] == "Completed" and n["TaskSubtype"] == "Task"
    assert "OwnerId" not in n and "Owner: nobody@example.com (no active Salesforce user" in n["Description"]


class Loopback(requests.adapters.HTTPAdapter):
    """Routes https://login.salesforce.com to the stub (a transport on the caller's
    session, the way a proxy would; the client itself is untouched)."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def, override]
        request.url = request.url.replace("https://login.salesforce.com", self.target)
        return super().send(request, **kwargs)


def password_sink(stub: SalesforceStub, password: str) -> SalesforceSink:
    session = http_session(verify=stub.ca_file, trust_env=False, timeout=5)
    session.mount("https://login.salesforce.com/", Loopback(stub.instance_url))
    creds = {"username": "api@acme.test", "password": password, "security_token": "tok3n-TOKEN"}
    return SalesforceSink(SalesforceConfig(), creds, session=session, environ={})


def test_password_login_works_and_a_bad_password_is_a_clear_auth_error(stub, store, roles, playbooks):
    good = password_sink(stub, "s3cret-PASSWORD")
    created = act(store, roles, playbooks).record
    assert sync(store, good).synced == [created.id]
    assert stub.count("POST", "/services/Soap/u/") == 1

    bad = password_sink(stub, "wrong-PASSWORD")
    assert "wrong-PASSWORD" not in repr(bad) and "tok3n" not in repr(bad)
    with pytest.raises(CrmAuthError) as err:
        bad.find_by_key("chi-whatever1")
    text = str(err.value)
    assert "login failed (INVALID_LOGIN)" in text and "security token" in text
    assert "wrong-PASSWORD" not in text and "tok3n" not in text

    second = act(store, roles, playbooks, nonce="n2").record
    sync(store, bad)
    a = store.get(second.id)
    assert a.status == "failed" and a.error_kind == "auth" and "wrong-PASSWORD" not in a.last_error


def test_no_credentials_is_an_auth_error_naming_secrets_toml(tmp_path):
    sink = SalesforceSink(SalesforceConfig(), {}, environ={})
    with pytest.raises(CrmAuthError, match="secrets.toml"):
        sink.find_by_key("chi-whatever1")


def test_build_sink_from_crm_yaml_and_secrets(stub):
    cfg = parse_crm_config("crm: auto\nsalesforce:\n  idempotency: { mode: external_id, field: Idempotency_Key__c }\n")
    assert build_sink(cfg, {}, environ={}) is None  # auto without credentials: no CRM
    session = http_session(verify=stub.ca_file, trust_env=False, timeout=5)
    secrets = {"salesforce": {"session_id": stub.session_id, "instance_url": stub.instance_url}}
    sink = build_sink(cfg, secrets, session=session, environ={})
    assert isinstance(sink, SalesforceSink) and stub.session_id not in repr(sink)
    assert sink.find_by_key("chi-nothing-here") is None
    env = {"SALESFORCE_SESSION_ID": stub.session_id, "SALESFORCE_INSTANCE_URL": stub.instance_url}
    assert build_sink(cfg, None, session=session, environ=env).find_by_key("chi-nothing-here") is None
    none = parse_crm_config("crm: none\n")
    assert build_sink(none, secrets, environ={}) is None


def test_crm_yaml_errors_have_lines_and_did_you_mean():
    from health.yaml_config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_crm_config(
            "crm: salesforse\nsalesforce:\n  idempotency:\n    mode: query\n    field: Description\n"
            "  fields:\n    subjekt: Subject\n"
        )
    text = str(err.value)
    assert "config/crm.yaml:1: crm: 'salesforse' is not allowed — did you mean 'salesforce'?" in text
    assert "config/crm.yaml:3: salesforce.idempotency: Task.Description is a long text area" in text
    assert "config/crm.yaml:7: salesforce.fields.subjekt: unknown key 'subjekt' — did you mean 'subject'?" in text


def test_field_error_type_is_exported():
    assert issubclass(CrmFieldError, Exception) and issubclass(CrmMissingAccount, Exception)


def test_the_sync_command_pushes_the_outbox(stub, tmp_path, monkeypatch, roles, playbooks, capsys):
    from health.cli import main

    db = tmp_path / "state.db"
    store = ActionStore(db)
    created = act(store, roles, playbooks).record
    store.close()
    crm = tmp_path / "crm.yaml"
    crm.write_text("crm: salesforce\nstore: unused.db\n", encoding="utf-8")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[salesforce]\nsession_id = "{stub.session_id}"\ninstance_url = "{stub.instance_url}"\n',
                       encoding="utf-8")
    monkeypatch.setenv("CHI_STATE_DB", str(db))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", stub.ca_file)  # the command uses the standard CA setting
    stub.stop()
    assert main(["sync", "--crm", str(crm), "--secrets", str(secrets)]) == 1
    out = capsys.readouterr().out
    assert "0 synced, 1 failed" in out and "unreachable" in out and stub.session_id not in out
    stub.start()
    assert main(["sync", "--crm", str(crm), "--secrets", str(secrets), "--force"]) == 0
    assert "1 synced, 0 failed" in capsys.readouterr().out
    assert len(stub.tasks_with("Idempotency_Key__c", created.key)) == 1
    crm.write_text("crm: salesforse\n", encoding="utf-8")
    assert main(["sync", "--crm", str(crm)]) == 2
    assert "did you mean 'salesforce'" in capsys.readouterr().err


def test_secrets_that_raise_are_no_secrets():
    class NoSecretsFile:  # like st.secrets without a secrets.toml
        def items(self):
            raise FileNotFoundError("no secrets.toml")

        def get(self, key, default=None):
            raise FileNotFoundError("no secrets.toml")

    cfg = parse_crm_config("crm: auto\n")
    assert build_sink(cfg, NoSecretsFile(), environ={}) is None
