"""Alert rules: validation (every problem with file:line, did-you-mean), the five kinds as
SQL, persistence over stored runs, cooldown, routing, digests, expiry, history,
acknowledgement, the timeline rows and precision against outcomes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from health.alerts import (
    AlertStore,
    acknowledge,
    alert_history,
    alert_precision,
    alert_timeline,
    alerts_frame,
    deliver,
    evaluate,
    load_alerts,
    parse_alerts,
    route,
    rule_sql,
)
from health.model_loader import load_model
from health.notify import MemoryNotifier, NotifyError
from health.roles import load_roles
from health.timeline import SCHEMA as TIMELINE_SCHEMA
from health.yaml_config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
D0 = dt.date(2026, 11, 2)


@pytest.fixture(scope="module")
def model():
    return load_model(ROOT / "weights.yaml").model


@pytest.fixture(scope="module")
def roles():
    return load_roles(ROOT / "config" / "roles.yaml")


class Clock:
    def __init__(self, at: dt.datetime):
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


def summary(scores: dict[str, float], as_of: dt.date, **extra) -> pl.DataFrame:
    ids = list(scores)
    tiers = ["at_risk" if s < 40 else "watch" if s < 70 else "healthy" for s in scores.values()]
    data = {
        "account_id": ids, "name": [f"Account {i}" for i in ids], "score": list(scores.values()), "tier": tiers,
        "health_segment": ["enterprise" if i.startswith("E") else "default" for i in ids],
        "owner": ["Carlos Mendes"] * len(ids), "owner_email": [None] * len(ids),
        "renewal_date": [as_of + dt.timedelta(days=60)] * len(ids), "drivers": ["Invoice 74 days overdue"] * len(ids),
        "as_of": [as_of] * len(ids),
    }
    data.update(extra)
    return pl.DataFrame(data)


RULES = """
base_url: https://chi.example.com/
channels:
  email: { kind: email }
  cs_slack: { kind: slack }
  lead: { kind: teams }
segment_channels: { enterprise: lead, default: cs_slack }
recipients:
  maria.garcia@example.com: { digest: true }
rules:
  low:
    title: Score below 40
    condition: "score < 40"
    persistence: 3
    cooldown_days: 14
    severity: critical
    notify: [owner, manager, segment]
"""


def test_the_shipped_config_loads_and_compiles_every_kind(model):
    loaded = load_alerts(ROOT / "config" / "alerts.yaml", model)
    kinds = {r.kind for r in loaded.rules.values()}
    assert kinds == {"tier_entered", "score_drop", "falling", "condition", "renewal_within"}
    sqls = {k: rule_sql(r) for k, r in loaded.rules.items()}
    assert sqls["entered_at_risk"] == "tier = 'at_risk' AND coalesce(tier_4w_ago, '') <> 'at_risk'"
    assert sqls["score_drop"] == "(change_4w <= -15) AND (tier <> 'at_risk')"
    assert "days_to_renewal <= 90" in sqls["renewal_at_risk"] and "tier IN ('at_risk', 'watch')" in sqls["renewal_at_risk"]


def test_every_problem_at_once_with_lines_and_did_you_mean(model):
    text = """channels:
  email: { kind: email }
  cs_slack: { kind: slak }
segment_channels: { enterprize: email }
rules:
  a:
    condition: "days_overdu > 60"
    notify: [ownr]
  b:
    falling: true
    condition: "score < 10"
  c:
    score_drop: { points: 10, weeks: 3 }
    severity: urgent
"""
    with pytest.raises(ConfigError) as err:
        parse_alerts(text, model, "alerts.yaml")
    msgs = [str(i) for i in err.value.issues]
    joined = "\n".join(msgs)
    assert "alerts.yaml:3: channels.cs_slack.kind: 'slak' is not allowed — did you mean 'slack'?" in joined
    assert "alerts.yaml:4: segment_channels.enterprize: unknown segment 'enterprize' — did you mean 'enterprise'?" in joined
    assert "alerts.yaml:7: rules.a.condition: unknown column 'days_overdu'" in joined and "did you mean 'days_overdue'" in joined
    assert "alerts.yaml:8: rules.a.notify[0]: unknown recipient 'ownr' — did you mean 'owner'?" in joined
    assert "rules.b: a rule needs exactly one of" in joined and "(it has falling, condition)" in joined
    assert "rules.c.score_drop.weeks" in joined and "rules.c.severity" in joined


def test_webhooks_are_not_people_and_segment_needs_channels(model):
    with pytest.raises(ConfigError) as err:
        parse_alerts("people_channel: s\nchannels: { s: { kind: slack } }\nrules: { r: { falling: true, notify: [segment] } }\n", model)
    joined = "\n".join(map(str, err.value.issues))
    assert "people are reached by e-mail" in joined and "'segment' needs segment_channels" in joined


def test_persistence_fires_on_the_kth_consecutive_run_and_cooldown_holds(tmp_path, model, roles):
    alerts = parse_alerts(RULES.replace("cooldown_days: 14", "cooldown_days: 20"), model)
    store = AlertStore(tmp_path / "s.db")
    fired = []
    days = [D0 + dt.timedelta(days=7 * k) for k in range(6)]
    for day in days:
        ev = evaluate(summary({"A1": 30.0, "A2": 80.0}, day), model, alerts, store, day, roles)
        fired.append(ev.fired["low"])
    # runs 1 and 2: waiting; run 3 fires; runs 4 and 5 (7 and 14 days later) in the 20-day cooldown;
    # run 6 (21 days later, the condition still holding) fires again
    assert fired == [0, 0, 1, 0, 0, 1]
    assert alerts_frame(store)["as_of"].to_list() == [days[2], days[5]]


def test_a_broken_streak_starts_over(tmp_path, model):
    alerts = parse_alerts(RULES.replace("persistence: 3", "persistence: 2"), model)
    store = AlertStore(tmp_path / "s.db")
    scores = [30.0, 80.0, 30.0, 30.0]
    out = []
    for k, s in enumerate(scores):
        day = D0 + dt.timedelta(days=k)
        out.append(evaluate(summary({"A1": s}, day), model, alerts, store, day).fired["low"])
    assert out == [0, 0, 0, 1]


def test_a_second_evaluation_the_same_day_changes_nothing(tmp_path, model, roles):
    alerts = parse_alerts(RULES.replace("persistence: 3", "persistence: 1"), model)
    store = AlertStore(tmp_path / "s.db")
    first = evaluate(summary({"A1": 30.0}, D0), model, alerts, store, D0, roles)
    again = evaluate(summary({"A1": 30.0, "A2": 10.0}, D0), model, alerts, store, D0, roles)
    assert first.fired == {"low": 1} and again.already and not again.fired
    assert alerts_frame(store).height == 1


def test_routing_owner_manager_segment_and_digest_preferences(model, roles):
    alerts = parse_alerts(RULES, model)
    rule = alerts.rules["low"]
    row = {"account_id": "E1", "owner": "Carlos Mendes", "owner_email": None, "health_segment": "enterprise"}
    assert route(rule, row, alerts, roles) == [
        ("email", "carlos.mendes@example.com", False),
        ("email", "maria.garcia@example.com", True),  # she asked for a digest
        ("lead", "lead", False),
    ]
    # without roles.yaml: accounts.owner_email, no manager
    row2 = {"account_id": "A1", "owner": "Someone", "owner_email": "Someone@Example.com", "health_segment": "default"}
    assert route(rule, row2, alerts, None) == [("email", "someone@example.com", False), ("cs_slack", "cs_slack", False)]


def test_deliver_sends_one_message_per_alert_and_one_digest_per_recipient(tmp_path, model, roles):
    alerts = parse_alerts(RULES.replace("persistence: 3", "persistence: 1"), model)
    store = AlertStore(tmp_path / "s.db")
    evaluate(summary({"A1": 30.0, "A2": 20.0, "E1": 10.0}, D0), model, alerts, store, D0, roles)
    email, slack, lead = MemoryNotifier("email"), MemoryNotifier("cs_slack"), MemoryNotifier("lead")
    rep = deliver(store, alerts, {"email": email, "cs_slack": slack, "lead": lead})
    assert rep.ok and rep.delivered == 9
    to_carlos = [n for n in email.sent if n.recipient == "carlos.mendes@example.com"]
    to_maria = [n for n in email.sent if n.recipient == "maria.garcia@example.com"]
    assert len(to_carlos) == 3 and len(to_maria) == 1
    digest = to_maria[0]
    assert digest.digest and [i.account_id for i in digest.items] == ["E1", "A2", "A1"]  # lowest score first
    assert "3 alerts on 3 accounts" in digest.subject
    assert "https://chi.example.com/account?account=E1" in digest.text
    assert [n.items[0].account_id for n in lead.sent] == ["E1"] and len(slack.sent) == 2
    assert rep.messages == 7
    # nothing twice
    assert deliver(store, alerts, {"email": email, "cs_slack": slack, "lead": lead}).messages == 0


def test_a_failing_channel_does_not_stop_the_others_and_is_retried(tmp_path, model, roles):
    alerts = parse_alerts(RULES.replace("persistence: 3", "persistence: 1"), model)
    store = AlertStore(tmp_path / "s.db")
    evaluate(summary({"A1": 30.0}, D0), model, alerts, store, D0, roles)
    email, slack = MemoryNotifier("email"), MemoryNotifier("cs_slack")
    slack.fail_with = NotifyError("the Slack webhook of channel 'cs_slack' answered HTTP 500")
    rep = deliver(store, alerts, {"email": email, "cs_slack": slack})
    assert len(email.sent) == 2 and [f[0] for f in rep.failed] == ["cs_slack"]
    h = alert_history(store)
    assert h.filter(pl.col("channel") == "cs_slack").select("status", "error").row(0) == (
        "failed", "the Slack webhook of channel 'cs_slack' answered HTTP 500")
    slack.fail_with = None
    rep = deliver(store, alerts, {"email": email, "cs_slack": slack})
    assert rep.delivered == 1 and len(slack.sent) == 1 and len(email.sent) == 2


def test_unconfigured_channels_wait_and_expire_after_max_age(tmp_path, model, roles):
    alerts = parse_alerts(RULES.replace("persistence: 3", "persistence: 1"), model)
    clock = Clock(dt.datetime(2026, 11, 2, 6, tzinfo=UTC))
    store = AlertStore(tmp_path / "s.db", clock=clock)
    evaluate(summary({"A1": 30.0}, D0), model, alerts, store, D0, roles)
    rep = deliver(store, alerts, {"email": MemoryNotifier("email")}, {"cs_slack": "no URL"})
    assert rep.waiting == {"cs_slack": 1} and "no URL" in str(rep)
    clock.at += dt.timedelta(days=8)
    rep = deliver(store, alerts, {"email": MemoryNotifier("email"), "cs_slack": MemoryNotifier("cs_slack")})
    assert rep.expired == 1 and rep.messages == 0
    assert alert_history(store).filter(pl.col("channel") == "cs_slack")["status"].item() == "expired"


def test_history_acknowledge_and_timeline_rows(tmp_path, model, roles):
    alerts = parse_alerts(RULES.replace("persistence: 3", "persistence: 1"), model)
    store = AlertStore(tmp_path / "s.db", clock=Clock(dt.datetime(2026, 11, 2, 6, tzinfo=UTC)))
    evaluate(summary({"A1": 30.0, "A2": 90.0}, D0), model, alerts, store, D0, roles)
    deliver(store, alerts, {"email": MemoryNotifier("email")})
    h = alert_history(store, account_id="A1")
    assert set(h["reason"]) == {"Score below 40 (score = 30)"}  # a threshold rule says the value it read
    assert set(h["recipient"]) == {"carlos.mendes@example.com", "maria.garcia@example.com", "cs_slack"}
    assert dict(zip(h["recipient"], h["status"]))["cs_slack"] == "pending"
    assert alert_history(store, recipient="Carlos.Mendes@example.com")["status"].to_list() == ["delivered"]
    alert_id = int(h["alert_id"][0])
    assert acknowledge(store, alert_id, "carlos.mendes@example.com", "called them") is True
    assert acknowledge(store, alert_id, "someone@example.com") is False  # the first one is kept
    h = alert_history(store, account_id="A1")
    assert set(h["acknowledged_by"]) == {"carlos.mendes@example.com"} and set(h["ack_note"]) == {"called them"}
    tl = alert_timeline(store, "A1")
    assert tl.schema == pl.Schema(TIMELINE_SCHEMA)
    assert set(tl["event"]) == {"alert_fired", "alert_acknowledged"}
    fired = tl.filter(pl.col("event") == "alert_fired").row(0, named=True)
    assert fired["title"] == "Alert (critical): Score below 40" and fired["tone"] == "bad"
    assert "carlos.mendes@example.com via email: delivered" in fired["detail"] and "cs_slack via cs_slack: pending" in fired["detail"]
    assert alert_timeline(store, "A2").is_empty()
    with pytest.raises(KeyError):
        acknowledge(store, 999, "x@example.com")


def test_alert_precision_counts_renewals_alerted_before_churn_vs_renewal():
    alerts = pl.DataFrame({
        "rule": ["low", "low", "low", "falling"],
        "account_id": ["A1", "A2", "A3", "A1"],
        "as_of": [dt.date(2026, 3, 1), dt.date(2026, 3, 1), dt.date(2026, 3, 1), dt.date(2026, 4, 1)],
    })
    outcomes = pl.DataFrame({
        "account_id": ["A1", "A2", "A3", "A4", "A5"],
        "renewal_date": [dt.date(2026, 5, 1), dt.date(2026, 5, 1), dt.date(2026, 2, 1), dt.date(2026, 5, 1), dt.date(2026, 5, 1)],
        "outcome": ["churned", "renewed", "churned", "churned", "renewed"],
    })
    out = alert_precision(alerts, outcomes, window_days=180).to_dicts()
    by = {r["rule"]: r for r in out}
    # A3's renewal came before its alert; A4 churned without an alert
    assert by["low"] == {"rule": "low", "renewals_alerted": 2, "churned_alerted": 1, "renewed_alerted": 1, "precision": 0.5,
                         "churned_total": 2, "recall": 0.5, "alerts": 2}
    assert by["falling"]["precision"] == 1.0 and by["(any)"]["renewals_alerted"] == 2
    assert out[-1]["rule"] == "(any)"


def test_a_user_may_acknowledge_what_they_were_told_or_what_their_scope_covers(tmp_path, model, roles):
    from health.roles import PermissionDenied

    alerts = parse_alerts(RULES.replace("persistence: 3", "persistence: 1"), model)
    store = AlertStore(tmp_path / "s.db")
    ev = evaluate(summary({"A1": 30.0}, D0), model, alerts, store, D0, roles)
    (alert_id,) = ev.alert_ids
    with pytest.raises(PermissionDenied, match="Emily Chen .* may not acknowledge this alert on Account A1"):
        acknowledge(store, alert_id, roles.user("emily.chen@example.com"))
    assert acknowledge(store, alert_id, roles.user("maria.garcia@example.com"), "on it") is True  # told (and her team)
    assert acknowledge(store, alert_id, roles.user("carlos.mendes@example.com")) is False  # his account; already acknowledged
    assert alert_history(store)["acknowledged_by"].unique().to_list() == ["maria.garcia@example.com"]
