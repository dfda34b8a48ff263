"""Playbooks: validation (every error class breaks the shipped file and is reported with
its line), and recommend() — the right plays first, with their evidence records."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from health.model_loader import load_model
from health.playbooks import (
    PLACEHOLDERS,
    LoadedPlaybooks,
    matching_plays,
    parse_playbooks,
    recommend,
    render,
    summary_schema,
    template_problem,
)
from health.roles import load_roles
from health.yaml_config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "config" / "playbooks.yaml").read_text(encoding="utf-8")
FILE = "config/playbooks.yaml"


@pytest.fixture(scope="module")
def model():
    return load_model(ROOT / "weights.yaml").model


@pytest.fixture(scope="module")
def roles():
    return load_roles(ROOT / "config" / "roles.yaml")


@pytest.fixture(scope="module")
def loaded(model, roles) -> LoadedPlaybooks:
    return parse_playbooks(GOOD, model, FILE, roles=list(roles.spec.roles))


def line_of(text: str, needle: str) -> int:
    idx = text.index(needle)
    return text[:idx].count("\n") + 1


def broken(model, old: str, new: str, *, count: int = 1) -> tuple[str, list[str]]:
    assert old in GOOD, old
    text = GOOD.replace(old, new, count)
    with pytest.raises(ConfigError) as err:
        parse_playbooks(text, model, FILE)
    return text, [str(i) for i in err.value.issues if i.severity == "error"]


def test_the_shipped_playbooks_are_valid(loaded):
    assert list(loaded.plays) == [
        "renewal_risk_review", "billing_follow_up", "support_escalation_review", "executive_check_in", "training_offer",
    ]
    assert loaded.approval_role("renewal_risk_review", "task") == "manager"
    assert loaded.approval_role("billing_follow_up", "email") is None
    assert loaded.approval_role(None, "note") is None
    assert "other" in loaded.dismiss_reasons


# Each case: (text to replace, replacement, the line's needle in the new text, the message part)
CASES = [
    ("\ndismiss_reasons:\n", "\ndismis_reasons:\n", "dismis_reasons:", "unknown section 'dismis_reasons' — did you mean 'dismiss_reasons'?"),
    ("    policy: >\n      Every at-risk", "    polcy: >\n      Every at-risk", "polcy:",
     "plays.renewal_risk_review.polcy: unknown key 'polcy' — did you mean 'policy'?"),
    ("      subject: \"Renewal risk", "      subjekt: \"Renewal risk", "subjekt:",
     "plays.renewal_risk_review.task.subjekt: unknown key 'subjekt' — did you mean 'subject'?"),
    ("    priority: 80\n", "    priority: 1080\n", "priority: 1080",
     "plays.billing_follow_up.priority: Input should be less than or equal to 1000"),
    ("when: \"days_overdue >= 30\"", "when: \"days_overdue >= \"", "when: \"days_overdue >= \"",
     "plays.billing_follow_up.when: cannot parse SQL condition"),
    ("when: \"days_overdue >= 30\"", "when: \"days_overdu >= 30\"", "days_overdu >=",
     "plays.billing_follow_up.when: unknown column 'days_overdu' in 'days_overdu >= 30' — did you mean 'days_overdue'?"),
    ("when: \"days_overdue >= 30\"", "when: \"days_overdue + 30\"", "days_overdue + 30",
     "plays.billing_follow_up.when: condition 'days_overdue + 30' must be true/false"),
    ("    evidence: [days_overdue]", "    evidence: [days_overdu]", "evidence: [days_overdu]",
     "plays.billing_follow_up.evidence[0]: unknown signal 'days_overdu' — did you mean 'days_overdue'?"),
    ("where: \"priority IN ('P1', 'P2')\", state: open }\n      - { table: invoices",
     "where: \"priorty IN ('P1', 'P2')\", state: open }\n      - { table: invoices", "priorty IN",
     "plays.renewal_risk_review.records[0].where: unknown column 'priorty' in \"priorty IN ('P1', 'P2')\" — did you mean 'priority'?"),
    ("{ table: surveys, label: Latest NPS answers, where: \"kind = 'nps'\", within: 365d, limit: 2 }",
     "{ table: surveys, label: Latest NPS answers, where: \"kind = 'nps'\", state: open, within: 365d, limit: 2 }",
     "state: open, within", "plays.renewal_risk_review.records[3].state: state `open` works on tickets"),
    ("within: 365d, limit: 2", "within: 365 days, limit: 2", "365 days",
     "plays.renewal_risk_review.records[3].within: '365 days' is not a duration"),
    ("{ table: milestones, label: Recent", "{ table: milestone, label: Recent", "table: milestone,",
     "plays.renewal_risk_review.records[4].table: 'milestone' is not allowed — did you mean 'milestones'?"),
    ("subject: \"Billing follow-up: {account} has", "subject: \"Billing follow-up: {acount} has", "{acount}",
     "plays.billing_follow_up.task.subject: unknown placeholder {acount} — did you mean 'account'?"),
    ("subject: \"Billing follow-up: {account} has", "subject: \"Billing follow-up: {account.__class__} has",
     "{account.__class__}", "plays.billing_follow_up.task.subject: unknown placeholder {account.__class__}"),
    ("subject: \"Executive check-in with {account}\"", "subject: \"Executive check-in with {account!r:>40}\"",
     "{account!r:>40}", "plays.executive_check_in.task.subject: placeholder {account} may not carry a format or conversion"),
    ("subject: \"Offer a training session to {account}\"", "subject: \"Offer a training session to {account\"",
     "{account\"", "plays.training_offer.task.subject: cannot read the template"),
    ("      owner: account_owner\n      priority: high\n    action_types: [task, email, note]\n\n  support",
     "      owner: acount_owner\n      priority: high\n    action_types: [task, email, note]\n\n  support",
     "owner: acount_owner", "plays.billing_follow_up.task.owner: owner 'acount_owner' is not allowed — did you mean 'account_owner'?"),
    ("    approval: { role: manager }", "    approval: { role: manger }", "role: manger",
     "plays.renewal_risk_review.approval.role: unknown role 'manger' — did you mean 'manager'?"),
    ("    approval: { role: manager }", "    approval: { role: manager, action_types: [email] }", "action_types: [email] }",
     "plays.renewal_risk_review.approval.action_types[0]: 'email' needs approval but is not one of the play's action_types"),
    ("    action_types: [email, task, note]", "    action_types: [email, sms]", "action_types: [email, sms]",
     "plays.training_offer.action_types[1]: 'sms' is not allowed"),
    ("  note: { label: Note on the account }", "  notes: { label: Note on the account }", "notes: { label",
     "action_types.notes: unknown action type 'notes' — did you mean 'note'?"),
    ("  email: { label: E-mail to the customer }", "  email: { label: E-mail to the customer, approval: boss }",
     "approval: boss", "action_types.email.approval: unknown role 'boss'"),
    ("    title: Support escalation review\n", "", "  support_escalation_review:",
     "plays.support_escalation_review.title: required key 'title' is missing"),
]


@pytest.mark.parametrize("old,new,needle,message", CASES, ids=[c[3].split(":")[0][:40] for c in CASES])
def test_each_error_class_is_reported_with_its_line(model, old, new, needle, message):
    text, errors = broken(model, old, new)
    line = line_of(text, needle)
    hits = [e for e in errors if message in e]
    assert hits, f"{message!r} not in {errors}"
    assert hits[0].startswith(f"{FILE}:{line}: "), (hits[0], line)


def test_every_problem_is_reported_at_once(model):
    text = GOOD.replace("when: \"days_overdue >= 30\"", "when: \"days_overdu >= 30\"").replace(
        "    approval: { role: manager }", "    approval: { role: manger }"
    ).replace("{account} renews", "{acount} renews").replace("\ndismiss_reasons:", "\ndismis_reasons:")
    with pytest.raises(ConfigError) as err:
        parse_playbooks(text, model, FILE)
    errors = [str(i) for i in err.value.issues]
    assert len(errors) == 4, errors
    assert [int(e.split(":")[1]) for e in errors] == sorted(int(e.split(":")[1]) for e in errors)


def test_yaml_errors_and_empty_files(model):
    with pytest.raises(ConfigError) as err:
        parse_playbooks("plays:\n  a: [unclosed\n", model, FILE)
    assert str(err.value.issues[0]).startswith(f"{FILE}:3: not valid YAML")
    with pytest.raises(ConfigError, match="the section 'plays' is missing"):
        parse_playbooks("version: 1\n", model, FILE)
    with pytest.raises(ConfigError, match="no plays"):
        parse_playbooks("plays: {}\n", model, FILE)
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_playbooks("- a\n- b\n", model, FILE)


def test_templates_only_fill_whole_fields():
    assert template_problem("Hello {account}, {{literal}}") is None
    assert render("Hello {account}, {{literal}} {score}", {"account": "{arr}", "score": "42"}) == "Hello {arr}, {literal} 42"
    for bad in ("{0}", "{}", "{account[0]}", "{account.name}", "{score:.2f}", "{account!s}"):
        assert template_problem(bad) is not None, bad
    assert set(PLACEHOLDERS) >= {"account", "renewal_date", "days_to_renewal", "drivers"}


def test_conditions_see_every_summary_column(model):
    schema = summary_schema(model)
    for col in ("tier", "score", "change_4w", "falling", "health_segment", "days_overdue", "days_overdue__score",
                "renewal_date", "owner", "days_to_renewal"):
        assert col in schema
    text = GOOD.replace(
        "when: \"days_overdue >= 30\"",
        "when: \"days_overdue__score < 40 AND falling AND change_4w < -5 AND region = 'emea' AND plan_tier = 'gold'\"",
    )
    with pytest.raises(ConfigError, match="unknown column 'plan_tier'"):
        parse_playbooks(text, model, FILE)
    # A source's extra account column is allowed when the real summary schema is passed.
    parse_playbooks(text, model, FILE, columns={"plan_tier": pl.String()})


# ----------------------------------------------------------------------- recommend

AS_OF = dt.date(2026, 11, 30)


def at_risk_row() -> dict:
    return {
        "account_id": "ACC-9", "name": "Globex", "segment": "enterprise", "owner": "Carlos Mendes",
        "owner_email": "carlos.mendes@example.com", "arr": 240000.0, "renewal_date": dt.date(2027, 2, 15),
        "crm_id": "001000000000009AAA", "as_of": AS_OF, "health_segment": "enterprise",
        "tier": "at_risk", "score": 41.6, "change_4w": -14.0, "falling": True,
        "drivers": "Invoice 45 days overdue; 2 P1/P2 tickets open",
        "active_users_trend": -0.32, "active_users_trend__score": 25.0,
        "seat_utilisation": 0.22, "seat_utilisation__score": 33.0,
        "automation_adoption": 0.05, "dashboard_adoption": 0.3,
        "open_urgent_tickets": 2.0, "open_urgent_tickets__score": 35.0,
        "oldest_urgent_ticket_days": 19.0, "escalations_12w": 3.0, "ticket_sentiment": -0.45,
        "days_overdue": 45.0, "days_overdue__score": 20.0,
        "latest_nps": 4.0, "latest_nps__score": 23.0,
        "days_since_exec_meeting": 200.0,
    }


def tables() -> dict[str, pl.DataFrame]:
    T = dt.datetime
    tickets = pl.DataFrame(
        [
            ("T-1", "ACC-9", T(2026, 11, 11, 9), "P1", None, -0.6, True, "Exports fail"),
            ("T-2", "ACC-9", T(2026, 11, 20, 9), "P2", T(2026, 12, 5, 9), -0.3, False, "Slow dashboards"),  # closed later
            ("T-3", "ACC-9", T(2026, 10, 1, 9), "P1", T(2026, 10, 9, 9), -0.2, True, "Outage"),  # closed
            ("T-4", "ACC-9", T(2026, 11, 25, 9), "P3", None, 0.1, False, "Question"),  # not urgent
            ("T-5", "ACC-9", T(2026, 12, 2, 9), "P1", None, -0.9, True, "Future"),  # after as_of
            ("T-6", "ACC-1", T(2026, 11, 1, 9), "P1", None, -0.9, True, "Other account"),
        ],
        schema={"ticket_id": pl.String, "account_id": pl.String, "opened_at": pl.Datetime("us"), "priority": pl.String,
                "closed_at": pl.Datetime("us"), "sentiment": pl.Float64, "escalated": pl.Boolean, "subject": pl.String},
        orient="row",
    )
    D = dt.date
    invoices = pl.DataFrame(
        [
            ("I-1", "ACC-9", D(2026, 9, 16), D(2026, 10, 16), 60000.0, None),  # 45 days overdue
            ("I-2", "ACC-9", D(2026, 10, 1), D(2026, 10, 31), 5000.0, D(2026, 12, 3)),  # paid after as_of
            ("I-3", "ACC-9", D(2026, 8, 1), D(2026, 8, 31), 5000.0, D(2026, 8, 20)),  # paid on time
        ],
        schema={"invoice_id": pl.String, "account_id": pl.String, "issued_at": pl.Date, "due_date": pl.Date,
                "amount": pl.Float64, "paid_at": pl.Date},
        orient="row",
    )
    touchpoints = pl.DataFrame(
        [
            ("M-1", "ACC-9", D(2026, 5, 14), "exec_meeting", "Sponsor review", "CFO"),
            ("M-2", "ACC-9", D(2026, 3, 1), "qbr", "QBR Q1", ""),
            ("M-3", "ACC-9", D(2026, 11, 28), "call", "Support call", ""),
            ("M-4", "ACC-9", D(2026, 12, 10), "exec_meeting", "Future", ""),
        ],
        schema={"touchpoint_id": pl.String, "account_id": pl.String, "at": pl.Date, "kind": pl.String,
                "notes": pl.String, "participants": pl.String},
        orient="row",
    )
    return {"tickets": tickets, "invoices": invoices, "touchpoints": touchpoints}


def test_recommend_ranks_the_expected_plays_with_their_evidence(loaded, roles):
    recs = recommend(at_risk_row(), loaded, tables(), roles=roles)
    assert [r.play for r in recs] == [
        "renewal_risk_review", "billing_follow_up", "support_escalation_review", "executive_check_in", "training_offer",
    ]
    renewal = recs[0]
    assert renewal.approval == {"task": "manager", "note": "manager"}
    assert "manager approves" in renewal.policy
    assert renewal.draft.subject == "Renewal risk review: Globex renews 2027-02-15 (77 days)"
    assert renewal.draft.due_date == AS_OF + dt.timedelta(days=5)
    assert renewal.draft.owner_email == "carlos.mendes@example.com" and renewal.draft.priority == "high"
    assert "ARR $240,000" in renewal.draft.body and "Invoice 45 days overdue" in renewal.draft.body
    signals = {s.signal: s for s in renewal.signals}
    assert signals["active_users_trend"].value == "\u221232%"
    assert signals["active_users_trend"].phrase == "Active users \u221232% vs the prior 4 weeks"
    assert signals["days_overdue"].phrase == "Invoice 45 days overdue" and signals["days_overdue"].sub_score == 20.0
    groups = {g.label: g for g in renewal.records}
    # Open P1/P2 at as_of: T-1 (never closed) and T-2 (closed after as_of); not closed T-3,
    # not the P3, not the future ticket, not another account's.
    assert [r.ref for r in groups["Open P1/P2 tickets"].records] == ["T-2", "T-1"]
    t1 = groups["Open P1/P2 tickets"].records[1]
    assert t1.title == "P1 ticket T-1: Exports fail" and t1.detail == "open 19 days; escalated; sentiment -0.60"
    # Overdue at as_of: I-1 (unpaid) and I-2 (paid after as_of), most overdue first.
    overdue = groups["Overdue invoices"].records
    assert [r.ref for r in overdue] == ["I-1", "I-2"]
    assert overdue[0].title == "Invoice I-1: $60,000 due 2026-10-16" and overdue[0].detail == "45 days overdue, unpaid"
    last = groups["Last executive meeting or QBR"]
    assert [r.ref for r in last.records] == ["M-1"] and last.total == 2
    assert last.records[0].title == "Exec meeting on 2026-05-14 (200 days ago)"
    assert groups["Latest NPS answers"].total == 0  # no surveys table given: an empty group, not an error

    billing = recs[1]
    assert billing.approval == {"task": None, "email": None, "note": None}
    escalation = recs[2]
    assert {g.label: [r.ref for r in g.records] for g in escalation.records} == {
        "Open P1/P2 tickets": ["T-2", "T-1"],
        "Escalated tickets (12 weeks)": ["T-1", "T-3"],
    }
    snap = renewal.evidence_snapshot()
    assert snap["play"] == "renewal_risk_review" and snap["as_of"] == "2026-11-30"
    assert snap["records"][0]["records"][0]["ref"] == "T-2"
    import json

    json.dumps(snap)  # JSON-able


def test_a_healthy_account_gets_no_play_and_nulls_are_not_true(loaded):
    row = {**at_risk_row(), "tier": "healthy", "days_overdue": 0.0, "open_urgent_tickets": 0.0, "escalations_12w": 0.0,
           "ticket_sentiment": None, "automation_adoption": None}
    assert recommend(row, loaded, tables()) == []
    # A summary lacking a signal's raw column entirely still evaluates (as null).
    row = {k: v for k, v in at_risk_row().items() if k not in ("escalations_12w", "open_urgent_tickets")}
    plays = [r.play for r in recommend(row, loaded, tables())]
    assert "support_escalation_review" not in plays and plays[0] == "renewal_risk_review"


def test_owner_rules_without_roles_and_manager(loaded, roles, model):
    recs = recommend({**at_risk_row(), "owner_email": None}, loaded, tables(), plays=["billing_follow_up"])
    assert recs[0].draft.owner_email is None and "config/roles.yaml" in recs[0].notes[0]
    text = GOOD.replace("      owner: account_owner\n      priority: high\n    action_types: [task, email, note]\n\n  support",
                        "      owner: manager\n      priority: high\n    action_types: [task, email, note]\n\n  support")
    pb = parse_playbooks(text, model, FILE)
    rec = recommend(at_risk_row(), pb, tables(), roles=roles, plays=["billing_follow_up"])[0]
    assert rec.draft.owner_email == "maria.garcia@example.com"


def test_matching_plays_agrees_with_recommend_on_a_frame(loaded):
    rows = [at_risk_row(), {**at_risk_row(), "account_id": "ACC-2", "tier": "watch", "renewal_date": dt.date(2028, 1, 1),
                            "days_overdue": 0.0}]
    frame = pl.DataFrame(rows)
    m = matching_plays(frame, loaded)
    recs = recommend(frame, loaded, tables())
    assert m.select("account_id", "play").rows() == [(r.account_id, r.play) for r in recs]
    assert m.filter(pl.col("account_id") == "ACC-2")["play"].to_list() == [
        "support_escalation_review", "executive_check_in", "training_offer",
    ]


def test_recommend_runs_on_a_real_scored_summary(tiny, model, loaded):
    from health.scoring import score_history
    from health.trajectory import summarize

    as_of = dt.date(2025, 3, 31)
    summary = summarize(score_history(tiny, model, as_of, weeks=4), model, as_of)
    recs = recommend(summary, loaded, tiny)
    by_account = {}
    for r in recs:
        by_account.setdefault(r.account_id, []).append(r.play)
    assert matching_plays(summary, loaded).height == len(recs)
    # A1 has a 45-day overdue invoice: billing follow-up, with the invoices as evidence.
    assert "billing_follow_up" in by_account.get("A1", [])
    billing = next(r for r in recs if r.account_id == "A1" and r.play == "billing_follow_up")
    assert [x.ref for x in billing.records[0].records] == ["i1", "i2"]
