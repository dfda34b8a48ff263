"""The Alerts page and the account timeline's "Alerts" lane, on a temp state database
(CHI_STATE_DB, set by conftest) filled through health.alerts: alerts evaluated on the
sample book's scored rows, delivered over an e-mail channel that works and a Slack
channel that fails, and a run report recorded."""

from __future__ import annotations

import datetime as dt
import json
import os

import polars as pl
import pytest

from health.alerts import AlertStore, alert_history, deliver, evaluate, parse_alerts
from health.notify import MemoryNotifier, NotifyError
from health.roles import load_roles
from tests.app_pages.conftest import ROOT, open_page, texts

CARLOS_ACC = "ACC-00056"   # owned by Carlos Mendes (Maria Garcia's team)
JAMES_ACC = "ACC-00004"    # owned by James Whitaker (David Kim's team)

RULES = """
base_url: https://chi.example.com
channels:
  email: { kind: email }
  cs_slack: { kind: slack }
segment_channels: { default: cs_slack }
rules:
  at_risk_now:
    title: Account at risk
    condition: "tier = 'at_risk'"
    persistence: 1
    severity: critical
    notify: [owner, segment]
"""


@pytest.fixture
def seeded(book):
    store = AlertStore(os.environ["CHI_STATE_DB"])
    try:
        alerts = parse_alerts(RULES, book.model)
        rows = book.summary.filter(pl.col("account_id").is_in([CARLOS_ACC, JAMES_ACC]))
        assert set(rows["tier"]) == {"at_risk"}
        store.start_run(book.as_of, book.model_hash, "sample")
        ev = evaluate(rows, book.model, alerts, store, book.as_of, load_roles(ROOT / "config" / "roles.yaml"))
        assert len(ev.alert_ids) == 2
        slack = MemoryNotifier("cs_slack")
        slack.fail_with = NotifyError("the Slack webhook of channel 'cs_slack' answered HTTP 500")
        deliver(store, alerts, {"email": MemoryNotifier("email"), "cs_slack": slack})
        store.record_report(book.as_of, 1, "score: 2 accounts\nalerts: 2 alerts fired\nsend: 2 messages sent, 1 failed")
        yield {r["account_id"]: r["alert_id"] for r in alert_history(store).iter_rows(named=True)}
    finally:
        store.close()


def history(at) -> pl.DataFrame:
    return pl.from_pandas(at.dataframe[0].value)


def test_history_shows_who_was_told_what_and_the_latest_run(seeded):
    at = open_page("app_pages/alerts.py")
    assert not at.exception
    text = texts(at)
    assert "Outcome ⚠️ some step failed" in text and "send: 2 messages sent, 1 failed" in text
    h = history(at)
    carlos = h.filter(pl.col("Told") == "carlos.mendes@example.com").row(0, named=True)
    assert carlos["Delivery"] == "✅ delivered" and carlos["Via"] == "email" and carlos["Severity"] == "🔴 critical"
    assert carlos["Open"] == f"/account?account={CARLOS_ACC}" and carlos["Alert"] == "Account at risk"
    slack = h.filter(pl.col("Told") == "cs_slack")
    assert set(slack["Delivery"]) == {"❌ failed"} and all("HTTP 500" in e for e in slack["Error"])
    # filter to the failures only
    at.selectbox(key="al_status").select("failed").run()
    assert set(history(at)["Delivery"]) == {"❌ failed"}


def test_acknowledge_as_the_local_user(seeded):
    at = open_page("app_pages/alerts.py")
    at.selectbox(key="ack_alert").select(seeded[CARLOS_ACC])
    at.text_input(key="ack_note").input("called the sponsor")
    at.button[0].click().run()
    assert not at.exception
    assert f"Alert #{seeded[CARLOS_ACC]} acknowledged" in texts(at)
    acked = history(at).filter(pl.col("#") == seeded[CARLOS_ACC])["Acknowledged"].to_list()
    assert all(a.startswith("local@localhost") and a.endswith("called the sponsor") for a in acked)
    options = at.selectbox(key="ack_alert").options
    assert len(options) == 1 and options[0].startswith(f"#{seeded[JAMES_ACC]} ")  # only the open one is offered


def test_acknowledge_outside_ones_scope_is_refused_by_the_engine(seeded, monkeypatch):
    monkeypatch.setenv("CHI_USER", "emily.chen@example.com")  # demo mode: act as a CSM of another team
    at = open_page("app_pages/alerts.py")
    at.selectbox(key="ack_alert").select(seeded[JAMES_ACC])
    at.button[0].click().run()
    assert "may not acknowledge this alert" in texts(at)
    assert history(at).filter(pl.col("#") == seeded[JAMES_ACC])["Acknowledged"].is_null().all()


def test_no_run_yet():
    at = open_page("app_pages/alerts.py")
    assert not at.exception
    assert "No scheduled run yet" in texts(at) and "No alerts yet." in texts(at)


def test_account_timeline_has_an_alerts_lane(seeded):
    store = AlertStore(os.environ["CHI_STATE_DB"])
    try:
        from health.alerts import acknowledge

        acknowledge(store, seeded[CARLOS_ACC], "carlos.mendes@example.com", "on it")
    finally:
        store.close()
    at = open_page("app_pages/account.py", {"account": CARLOS_ACC})
    assert not at.exception
    tl = pl.from_pandas(at.dataframe[1].value)
    lane = tl.filter(pl.col("Source") == "Alerts")
    assert set(lane["What"]) == {"Alert (critical): Account at risk",
                                 "Alert acknowledged by carlos.mendes@example.com: Account at risk"}
    fired = lane.filter(pl.col("What").str.starts_with("Alert (critical)")).row(0, named=True)
    assert "carlos.mendes@example.com via email: delivered" in fired["Detail"] and "cs_slack via cs_slack: failed" in fired["Detail"]
    # an account without alerts has no such lane
    other = open_page("app_pages/account.py", {"account": "ACC-00006"})
    assert "Alerts" not in set(pl.from_pandas(other.dataframe[1].value)["Source"])


def test_the_score_the_daily_run_stored_is_drawn_on_the_account_chart(book):
    """The stored history shows for past weeks where a run stored one (◇ markers), next to
    the line recomputed with today's model."""
    store = AlertStore(os.environ["CHI_STATE_DB"])
    try:
        past = book.as_of - dt.timedelta(days=14)
        row = book.history.filter((pl.col("account_id") == CARLOS_ACC) & (pl.col("as_of") == past))
        store.store_snapshot(row.with_columns(pl.lit(12.0).alias("score")), past, "oldmodel01")
    finally:
        store.close()
    at = open_page("app_pages/account.py", {"account": CARLOS_ACC})
    assert not at.exception
    fig = next(c for c in at.get("plotly_chart") if "As scored on the day" in c.proto.spec)
    spec = json.loads(fig.proto.spec)
    stored = next(t for t in spec["data"] if t.get("name") == "As scored on the day")
    assert stored["y"] == [12.0] and stored["customdata"][0][1] == "oldmodel01"
    assert "the score the daily run stored on the day" in texts(at)
