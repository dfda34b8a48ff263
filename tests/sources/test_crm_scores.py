"""The optional score / tier write-back to the Salesforce Account (health/crm_scores.py),
through the REAL simple-salesforce client against the loopback stub's
PATCH /sobjects/Account/<id>: once per account and day, unchanged values not rewritten,
failures recorded and retried, an outage stops the step, a backfill writes nothing."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from health.alerts import AlertStore
from health.crm_scores import push_scores, score_writes
from sources.salesforce import AccountHealth, SalesforceConfig, SalesforceSink, http_session
from sources.writeback import parse_crm_config, score_writer
from tests.sources.sf_stub import SalesforceStub

A1, A2, UNKNOWN = "001000000000001AAA", "001000000000002AAA", "001000000000999AAA"
D1, D2 = dt.date(2026, 11, 30), dt.date(2026, 12, 1)


@pytest.fixture
def stub(tmp_path):
    s = SalesforceStub(tmp_path, accounts={A1, A2}).start()
    yield s
    s.stop()


@pytest.fixture
def store(tmp_path):
    st = AlertStore(tmp_path / "state.db")
    yield st
    st.close()


def sink(stub, **health) -> SalesforceSink:
    session = http_session(verify=stub.ca_file, trust_env=False, timeout=5)
    cfg = SalesforceConfig(account_health=AccountHealth(enabled=True, **health))
    return SalesforceSink(cfg, {"session_id": stub.session_id, "instance_url": stub.instance_url}, session=session, environ={})


def summary(scores: dict[str, tuple[str | None, float, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"account_id": k, "crm_id": c, "score": s, "tier": t} for k, (c, s, t) in scores.items()],
        schema={"account_id": pl.String, "crm_id": pl.String, "score": pl.Float64, "tier": pl.String},
    )


BOOK = {"ACC-1": (A1, 31.6, "at_risk"), "ACC-2": (A2, 72.2, "healthy"), "ACC-3": (UNKNOWN, 50.0, "watch"),
        "ACC-4": (None, 40.0, "watch")}


def test_once_per_day_unchanged_not_rewritten_and_unknown_account_recorded(stub, store):
    w = sink(stub)
    rep = push_scores(store, summary(BOOK), D1, w)
    assert (rep.written, rep.no_crm_id, len(rep.failed)) == (2, 1, 1) and not rep.ok
    assert stub.account_fields[A1] == {"Health_Score__c": 32, "Health_Tier__c": "At risk", "Health_Score_Date__c": "2026-11-30"}
    assert stub.account_fields[A2]["Health_Tier__c"] == "Healthy"
    assert "ACC-3" in str(rep) and "Salesforce has no Account" in str(rep) and "crm_id" in str(rep)

    again = push_scores(store, summary(BOOK), D1, w)  # a second run the same day
    assert again.already == 2 and again.written == 0 and len(again.failed) == 1
    assert stub.account_patches == 2
    writes = score_writes(store, D1)
    assert dict(zip(writes["account_id"], writes["status"])) == {"ACC-1": "written", "ACC-2": "written", "ACC-3": "failed"}
    assert dict(zip(writes["account_id"], writes["attempts"]))["ACC-3"] == 2

    # the next day: ACC-1 unchanged (rounded), ACC-2 fell to watch
    nxt = {"ACC-1": (A1, 32.4, "at_risk"), "ACC-2": (A2, 61.0, "watch")}
    rep = push_scores(store, summary(nxt), D2, w)
    assert (rep.written, rep.unchanged) == (1, 1) and rep.ok
    assert stub.account_patches == 3 and stub.account_fields[A2]["Health_Tier__c"] == "Watch"
    assert stub.account_fields[A1]["Health_Score_Date__c"] == "2026-11-30"  # not rewritten

    # a backfill of an older day never overwrites a newer score
    old = push_scores(store, summary({"ACC-2": (A2, 10.0, "at_risk")}), D1 - dt.timedelta(days=7), w)
    assert old.stale == D2 and "nothing written" in str(old) and stub.account_fields[A2]["Health_Tier__c"] == "Watch"


def test_an_outage_stops_the_step_and_the_next_run_finishes_it(stub, store):
    w = sink(stub)
    stub.fail(503, times=1)
    rep = push_scores(store, summary(BOOK), D1, w)
    assert rep.stopped and "503" in rep.stopped and rep.left == 2 and rep.written == 0 and not rep.ok
    assert "stopped with 2 left" in str(rep)
    rep = push_scores(store, summary(BOOK), D1, w)
    assert rep.written == 2 and stub.account_patches == 2


def test_expired_session_stops_with_an_auth_error(stub, store):
    w = sink(stub)
    stub.expire_sessions()
    rep = push_scores(store, summary(BOOK), D1, w)
    assert rep.stopped and "INVALID_SESSION_ID" in rep.stopped and stub.session_id not in str(rep)


def test_a_missing_field_names_the_config(stub, store):
    w = sink(stub, fields={"score": "Health_Score__c", "tier": "CHI_Tier__c", "as_of": None})
    rep = push_scores(store, summary({"ACC-1": BOOK["ACC-1"]}), D1, w)
    assert len(rep.failed) == 1 and "CHI_Tier__c" in rep.failed[0][1] and "salesforce.account_health" in rep.failed[0][1]


def test_score_writer_only_when_enabled(stub):
    session = http_session(verify=stub.ca_file, trust_env=False, timeout=5)
    creds = {"salesforce": {"session_id": stub.session_id, "instance_url": stub.instance_url}}
    from sources.writeback import build_sink

    off = parse_crm_config("crm: salesforce\n")
    assert score_writer(off, build_sink(off, creds, session=session, environ={})) is None
    on = parse_crm_config("crm: salesforce\nsalesforce:\n  account_health:\n    enabled: true\n"
                          "    fields: { score: Health_Score__c, tier: Health_Tier__c, as_of: null }\n")
    assert isinstance(score_writer(on, build_sink(on, creds, session=session, environ={})), SalesforceSink)
    assert score_writer(on, None) is None


def test_python_m_health_run_writes_scores_once_a_day(stub, tmp_path, monkeypatch, capsys):
    from health.cli import main

    stub.accounts = None  # the sample book's crm_ids are all known to this org
    crm = tmp_path / "crm.yaml"
    crm.write_text("crm: salesforce\nsalesforce:\n  account_health: { enabled: true }\n", encoding="utf-8")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[salesforce]\nsession_id = "{stub.session_id}"\ninstance_url = "{stub.instance_url}"\n',
                       encoding="utf-8")
    monkeypatch.setenv("CHI_STATE_DB", str(tmp_path / "state.db"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", stub.ca_file)
    for var in ("CHI_SOURCES_FILE", "CHI_SOURCE", "CHI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    args = ["run", "--crm", str(crm), "--secrets", str(secrets), "--no-send"]
    main(args)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("crm scores:"))
    n = int(line.split()[2])
    assert n > 100 and stub.account_patches == n, out
    main(args)
    out = capsys.readouterr().out
    assert f"crm scores: 0 accounts written, 0 unchanged, {n} already written today" in out
    assert stub.account_patches == n
    main([*args, "--no-sync"])
    assert "crm scores" not in capsys.readouterr().out
