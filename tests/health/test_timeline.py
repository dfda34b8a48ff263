"""health.timeline: every event table on one axis, point in time, missing tables skipped."""

from __future__ import annotations

import datetime as dt

import polars as pl

from health.timeline import SCHEMA, SOURCE_LABELS, account_timeline, tier_changes, usage_series, with_events

D = dt.date
DT = dt.datetime
UNTIL = D(2025, 3, 31)


def _tables() -> dict[str, pl.DataFrame]:
    return {
        "accounts": pl.DataFrame({"account_id": ["A1", "A2"], "name": ["Acme", "Bolt"]}),
        "tickets": pl.DataFrame(
            {
                "ticket_id": ["t1", "t2", "t3", "t9"],
                "account_id": ["A1", "A1", "A1", "A2"],
                "opened_at": [DT(2025, 3, 1, 9), DT(2025, 3, 20, 9), DT(2025, 4, 2, 9), DT(2025, 3, 1)],
                "priority": ["P1", "P2", "P1", "P3"],
                "closed_at": [None, DT(2025, 4, 5, 10), None, None],
                "escalated": [True, False, False, False],
                "subject": ["Login broken", None, "Future", "Other"],
            }
        ),
        "invoices": pl.DataFrame(
            {
                "invoice_id": ["i1", "i2", "i3"],
                "account_id": ["A1", "A1", "A1"],
                "issued_at": [D(2025, 1, 15), D(2025, 1, 30), D(2025, 3, 1)],
                "due_date": [D(2025, 2, 14), D(2025, 3, 1), D(2025, 3, 31)],
                "amount": [1234.0, 100.0, 100.0],
                "paid_at": [None, D(2025, 3, 11), D(2025, 3, 20)],
            }
        ),
        "surveys": pl.DataFrame(
            {
                "response_id": ["s1", "s2"],
                "account_id": ["A1", "A1"],
                "responded_at": [D(2025, 3, 10), D(2025, 4, 5)],
                "kind": ["nps", "nps"],
                "score": [4.0, 10.0],
                "comment": ["Too slow", None],
            }
        ),
        "touchpoints": pl.DataFrame(
            {
                "touchpoint_id": ["m1"],
                "account_id": ["A1"],
                "at": [D(2025, 1, 30)],
                "kind": ["exec_meeting"],
                "notes": ["Renewal plan agreed"],
            }
        ),
        "milestones": pl.DataFrame(
            {"account_id": ["A1"], "at": [D(2024, 6, 1)], "kind": ["go_live"], "description": ["Went live"]}
        ),
    }


def _history() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "account_id": ["A1"] * 4,
            "as_of": [D(2025, 3, 10), D(2025, 3, 17), D(2025, 3, 24), D(2025, 3, 31)],
            "score": [80.0, 70.0, 50.0, 55.0],
            "tier": ["healthy", "watch", "at_risk", "at_risk"],
            "rule": [None, None, "Invoice overdue", None],
        }
    )


def test_every_source_appears_with_the_common_shape():
    tl = account_timeline(_tables(), "A1", history=_history(), until=UNTIL)
    assert dict(tl.schema) == SCHEMA
    # every data lane; the "actions" and "alerts" lanes come from the state database (merged below)
    assert set(tl["source"]) == set(SOURCE_LABELS) - {"actions", "alerts"}
    assert tl["at"].is_sorted(descending=True)
    alert = pl.DataFrame({"at": [DT(2025, 3, 21, 6)], "source": ["alerts"], "event": ["alert_fired"],
                          "title": ["Alert (critical): At risk"], "detail": ["told carlos via email: delivered"],
                          "ref": ["A1"], "tone": ["bad"]}, schema=SCHEMA)
    merged = with_events(tl, _action_rows(), alert)
    assert set(merged["source"]) == set(SOURCE_LABELS)


def test_point_in_time_nothing_after_until():
    tl = account_timeline(_tables(), "A1", until=UNTIL)
    assert tl["at"].max() <= DT(2025, 3, 31, 23, 59, 59, 999999)
    refs = set(tl["ref"])
    assert "t3" not in refs  # opened after `until`
    assert "s2" not in refs
    # t2 closed after `until`: only its opening shows
    t2 = tl.filter(pl.col("ref") == "t2")
    assert t2["event"].to_list() == ["opened"]


def test_ticket_invoice_events():
    tl = account_timeline(_tables(), "A1", until=UNTIL)
    t1 = tl.filter(pl.col("ref") == "t1").row(0, named=True)
    assert t1["event"] == "escalated"
    assert "Login broken" in t1["title"]
    inv = tl.filter(pl.col("source") == "invoices")
    events = {(r["ref"], r["event"]) for r in inv.iter_rows(named=True)}
    assert ("i1", "issued") in events and ("i1", "overdue") in events and ("i1", "paid") not in events
    assert ("i2", "overdue") in events and ("i2", "paid") in events  # paid 10 days late
    assert ("i3", "paid") in events and ("i3", "overdue") not in events  # paid before due
    i1 = inv.filter((pl.col("ref") == "i1") & (pl.col("event") == "issued")).row(0, named=True)
    assert "$1,234" in i1["title"]
    late = inv.filter((pl.col("ref") == "i2") & (pl.col("event") == "paid")).row(0, named=True)
    assert "10 days late" in late["detail"]


def test_survey_comment_and_touchpoint_notes():
    tl = account_timeline(_tables(), "A1", until=UNTIL)
    nps = tl.filter(pl.col("source") == "surveys").row(0, named=True)
    assert nps["title"] == "NPS 4/10" and "Too slow" in nps["detail"]
    meet = tl.filter(pl.col("source") == "touchpoints").row(0, named=True)
    assert meet["title"] == "Executive meeting: Renewal plan agreed"


def test_tier_changes_from_history():
    ch = tier_changes(_history())
    assert ch.height == 2
    assert ch["title"].to_list() == ["Tier: healthy \u2192 watch", "Tier: watch \u2192 at risk"]
    assert "rule: Invoice overdue" in ch["detail"][1]
    assert ch["event"][1] == "moved into at risk"


def test_missing_tables_and_columns_are_skipped():
    tables = _tables()
    slim = {
        "tickets": tables["tickets"].drop("subject", "escalated", "closed_at"),
        "accounts": tables["accounts"],
    }
    tl = account_timeline(slim, "A1", until=UNTIL)
    assert set(tl["source"]) == {"tickets"}
    assert account_timeline({}, "A1", until=UNTIL).is_empty()
    assert account_timeline(tables, "NOPE", until=UNTIL).is_empty()


def test_since_and_lazy_frames():
    lazy = {k: v.lazy() for k, v in _tables().items()}
    tl = account_timeline(lazy, "A1", since=D(2025, 3, 1), until=UNTIL)
    assert tl["at"].min() >= DT(2025, 3, 1)
    assert "milestones" not in set(tl["source"])


def test_usage_series():
    usage = pl.DataFrame(
        {
            "account_id": ["A1", "A1", "A2", "A1"],
            "date": [D(2025, 3, 2), D(2025, 3, 1), D(2025, 3, 1), D(2025, 4, 9)],
            "metric": ["active_users"] * 4,
            "value": [3.0, 2.0, 9.0, 1.0],
        }
    )
    got = usage_series({"usage": usage}, "A1", until=UNTIL)
    assert got["value"].to_list() == [2.0, 3.0]
    assert usage_series({}, "A1").is_empty()


def test_tone_says_good_or_bad_news():
    tl = account_timeline(_tables(), "A1", history=_history(), until=UNTIL)
    tone = {(r["ref"], r["event"]): r["tone"] for r in tl.iter_rows(named=True) if r["ref"]}
    assert tone[("t1", "escalated")] == "bad"
    assert tone[("i1", "overdue")] == "bad"
    assert tone[("i3", "paid")] == "good"
    assert tone[("s1", "nps")] == "bad"  # NPS 4: a detractor
    assert tl.filter(pl.col("source") == "milestones")["tone"].item() == "good"  # go-live
    health = tl.filter(pl.col("source") == "health").sort("at")["tone"].to_list()
    assert health == ["bad", "bad"]
    assert set(tl["tone"]) <= {"bad", "good", "info"}


def test_usage_smoothing_is_a_trailing_calendar_mean():
    days = [D(2025, 3, 1) + dt.timedelta(days=i) for i in range(10)]
    usage = pl.DataFrame(
        {"account_id": ["A1"] * 10, "date": days, "metric": ["active_users"] * 10, "value": [float(i) for i in range(10)]}
    )
    got = usage_series({"usage": usage}, "A1", since=D(2025, 3, 8), smooth_days=7)
    # 2025-03-08 is day 7: mean of days 1..7
    assert got["date"][0] == D(2025, 3, 8)
    assert got["value"][0] == sum(range(1, 8)) / 7


# ------------------------------------------------------------------ actions & decisions


def _action_rows() -> pl.DataFrame:
    """What ActionStore.account_events returns: the same shape, source 'actions'."""
    return pl.DataFrame(
        {
            "at": [DT(2025, 4, 2, 10), DT(2025, 3, 20, 9), DT(2025, 3, 20, 9)],
            "source": ["actions"] * 3,
            "event": ["dismissed", "action_synced", "action_created"],
            "title": ["Not done: Training offer — Does not fit", "Task synced to the CRM: Call", "Task logged: Call"],
            "detail": ["by carlos", "salesforce 00T1", "by carlos"],
            "ref": ["D1", "1", "1"],
            "tone": ["info", "good", "info"],
        },
        schema=SCHEMA,
    )


def test_actions_lane_is_labelled_and_last():
    assert SOURCE_LABELS["actions"] == "Actions & decisions"
    assert list(SOURCE_LABELS)[-1] == "actions"


def test_with_events_merges_newest_first_and_keeps_after_until():
    tl = account_timeline(_tables(), "A1", history=_history(), until=UNTIL)
    merged = with_events(tl, _action_rows())
    assert dict(merged.schema) == SCHEMA
    assert merged.height == tl.height + 3
    assert merged["at"].is_sorted(descending=True)
    # an action recorded after the data's last day is still shown (what the team did)
    assert merged.row(0, named=True)["event"] == "dismissed"
    acts = merged.filter(pl.col("source") == "actions")
    assert acts["ref"].to_list() == ["D1", "1", "1"]  # equal times keep the store's order
    # the ticket t2 opened at the same minute as the action: data lanes come first
    same = merged.filter(pl.col("at") == DT(2025, 3, 20, 9))
    assert same["source"].to_list() == ["tickets", "actions", "actions"]


def test_with_events_since_none_and_empty():
    tl = account_timeline(_tables(), "A1", until=UNTIL)
    assert with_events(tl).equals(tl)
    assert with_events(tl, None, pl.DataFrame(schema=SCHEMA)).equals(tl)
    recent = with_events(tl, _action_rows(), since=D(2025, 4, 1))
    assert recent.filter(pl.col("source") == "actions")["ref"].to_list() == ["D1"]
    only = with_events(account_timeline({}, "A1", until=UNTIL), _action_rows())
    assert set(only["source"]) == {"actions"} and only.height == 3


def test_store_events_fit_the_timeline(tmp_path):
    """The real store's rows (an action, its sync, a dismissal) merge into the lane."""
    from health.actions import ActionStore, action_key, sync
    from health.crm import MemorySink
    from health.model_loader import load_model
    from health.playbooks import load_playbooks
    from health.roles import load_roles
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    roles = load_roles(root / "config" / "roles.yaml")
    playbooks = load_playbooks(root / "config" / "playbooks.yaml", load_model(root / "weights.yaml").model,
                               roles=list(roles.spec.roles))
    store = ActionStore(tmp_path / "state.db")
    user = roles.user("carlos.mendes@example.com")
    acme = {"account_id": "A1", "name": "Acme", "owner": "Carlos Mendes", "crm_id": "001000000000001AAA"}
    made = store.create_action(user, acme, action_type="task", payload={"subject": "Call the billing contact"},
                               key=action_key("A1", "billing_follow_up", "n1"), playbooks=playbooks,
                               play="billing_follow_up")
    sync(store, MemorySink())
    store.dismiss(user, acme, play="training_offer", reason="in_progress", note="workshop booked",
                  key=action_key("A1", "training_offer", "n2", kind="dismiss"), playbooks=playbooks)
    merged = with_events(account_timeline(_tables(), "A1", until=UNTIL), store.account_events("A1"))
    lane = merged.filter(pl.col("source") == "actions")
    assert lane["event"].to_list() == ["dismissed", "action_synced", "action_created"]
    assert lane["ref"].to_list()[1:] == [str(made.record.id)] * 2
    assert "workshop booked" in lane["detail"][0]
    assert merged.row(0, named=True)["source"] == "actions"  # today's decisions are the newest rows
    store.close()
