"""Scores, contributions, re-weighting, tiers and rules — and the point-in-time property."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from health.model_loader import parse_model
from health.scoring import piecewise, score

from .conftest import D, T, frame

FIXTURE = Path(__file__).parent.parent / "fixtures" / "engine" / "all_measures.yaml"

SCORED_MODEL = """
signals:
  au_trend: {label: Active users trend, table: usage, metric: active_users, measure: trend, window: 28d,
             score: [[-0.5, 0], [0, 100]]}
  nps: {label: NPS, table: surveys, where: "kind = 'nps'", measure: latest, value: score, lookback: 365d,
        score: [[0, 0], [10, 100]]}
  overdue: {label: Days overdue, table: invoices, measure: max_days_overdue, direction: lower_is_better,
            score: [[0, 100], [90, 0]]}
  exec_days: {label: Exec, table: touchpoints, where: "kind = 'exec_meeting'", measure: days_since,
              direction: lower_is_better, missing: MISSING, score: [[0, 100], [100, 0]]}
segments:
  big: {when: "arr >= 100000", weights: {au_trend: 1, nps: 1, overdue: 2, exec_days: 4}, tiers: {at_risk: 60, watch: 90}}
  default: {weights: {au_trend: 1, nps: 1, overdue: 2}}
tiers: {at_risk: 40, watch: 70}
min_coverage: 0.3
rules:
  - {name: Very overdue, when: "overdue > 40 AND segment = 'smb'", tier: at_risk, reason: Pay up}
"""


def model(missing: str = "drop", extra: str = ""):
    return parse_model(SCORED_MODEL.replace("MISSING", missing) + extra).model


def rows(tiny, m, as_of=T) -> dict[str, dict]:
    return {r["account_id"]: r for r in score(tiny, m, as_of).iter_rows(named=True)}


def test_piecewise_by_hand():
    xs = pl.DataFrame({"x": [-1.0, 0.0, 5.0, 10.0, 15.0, 20.0, None]})
    got = xs.select(piecewise(pl.col("x"), [(0, 0), (10, 50), (20, 100)]).alias("y"))["y"].to_list()
    assert got == [0.0, 0.0, 25.0, 50.0, 75.0, 100.0, None]


def test_score_is_the_weighted_mean_of_sub_scores(tiny):
    r = rows(tiny, model())["A1"]
    # au_trend -0.25 -> 50; nps 4 -> 40; overdue 45 days -> 50. Weights 1, 1, 2 (A1 is smb: default).
    assert r["au_trend__score"] == pytest.approx(50)
    assert r["nps__score"] == pytest.approx(40)
    assert r["overdue__score"] == pytest.approx(50)
    assert r["score"] == pytest.approx((50 + 40 + 2 * 50) / 4)
    assert r["health_segment"] == "default"
    assert r["coverage"] == 1.0


def test_contributions_add_up_to_the_score(tiny):
    for r in rows(tiny, model()).values():
        total = sum(r[f"{s}__contribution"] for s in ("au_trend", "nps", "overdue", "exec_days"))
        assert total == pytest.approx(r["score"])


def test_missing_signal_drops_out_and_weights_renormalise(tiny):
    r = rows(tiny, model())["A2"]  # enterprise: no NPS in the last year, no exec meeting ever
    assert r["health_segment"] == "big"
    assert r["nps"] is None and r["exec_days"] is None
    # au_trend +0.65 -> 100, overdue 0 -> 100: present weight 3 of 8.
    assert r["score"] == pytest.approx(100)
    assert r["coverage"] == pytest.approx(3 / 8)
    assert r["nps__contribution"] == 0 and r["nps__lost"] == 0


def test_missing_policy_worst_and_neutral(tiny):
    worst = rows(tiny, model("worst"))["A2"]
    assert worst["exec_days__score"] == 0
    assert worst["score"] == pytest.approx((100 + 2 * 100 + 4 * 0) / 7)
    neutral = rows(tiny, model("neutral"))["A2"]
    assert neutral["score"] == pytest.approx((100 + 2 * 100 + 4 * 50) / 7)


def test_segment_tiers_and_insufficient_data(tiny):
    m = parse_model(SCORED_MODEL.replace("MISSING", "drop").replace("min_coverage: 0.3", "min_coverage: 0.5")).model
    a2 = rows(tiny, m)["A2"]
    assert a2["coverage"] < 0.5 and a2["tier"] == "insufficient_data"
    a1 = rows(tiny, m)["A1"]
    assert a1["score"] == pytest.approx(47.5) and a1["tier_by_score"] == "watch"  # 40 <= 47.5 < 70


def test_rule_overrides_the_tier_with_its_reason(tiny):
    # A1's oldest invoice is 45 days overdue and A1 is smb: the rule fires.
    a1 = rows(tiny, model())["A1"]
    assert a1["tier_by_score"] == "watch"
    assert (a1["rule"], a1["rule_reason"], a1["tier"]) == ("Very overdue", "Pay up", "at_risk")
    # One day before the rule threshold (due + 40 days) it does not.
    early = rows(tiny, model(), D(2025, 2, 14) + dt.timedelta(days=40))["A1"]
    assert early["rule"] is None and early["tier"] == early["tier_by_score"]


@st.composite
def future_records(draw):
    """Random records, every one dated strictly after T (tickets may close later too)."""
    days = st.integers(min_value=1, max_value=400)
    acc = st.sampled_from(["A1", "A2"])
    n = draw(st.integers(min_value=1, max_value=6))
    usage, tickets, invoices, surveys, touch, outcomes = [], [], [], [], [], []
    for i in range(n):
        d = T + dt.timedelta(days=draw(days))
        a = draw(acc)
        usage.append({"account_id": a, "date": d, "metric": draw(st.sampled_from(["active_users", "events"])),
                      "value": float(draw(st.integers(0, 500)))})
        tickets.append({"ticket_id": f"f{i}", "account_id": a, "opened_at": dt.datetime.combine(d, dt.time(9)),
                        "priority": draw(st.sampled_from(["P1", "P2", "P3"])), "closed_at": None,
                        "sentiment": draw(st.floats(-1, 1)), "escalated": draw(st.booleans())})
        invoices.append({"invoice_id": f"fi{i}", "account_id": a, "issued_at": d,
                         "due_date": d + dt.timedelta(days=draw(st.integers(0, 60))), "amount": 10.0, "paid_at": None})
        surveys.append({"response_id": f"fs{i}", "account_id": a, "responded_at": d, "kind": "nps",
                        "score": float(draw(st.integers(0, 10)))})
        touch.append({"touchpoint_id": f"ft{i}", "account_id": a, "at": d, "kind": "exec_meeting"})
        if draw(st.booleans()):
            outcomes.append({"account_id": a, "renewal_date": d, "outcome": "churned"})
    return {
        "usage": frame("usage", usage),
        "tickets": frame("tickets", tickets),
        "invoices": frame("invoices", invoices),
        "surveys": frame("surveys", surveys),
        "touchpoints": frame("touchpoints", touch),
        "outcomes": frame("outcomes", outcomes) if outcomes else None,
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=future_records(), weeks_back=st.integers(min_value=0, max_value=6))
def test_future_records_never_change_a_past_score(tiny, extra, weeks_back):
    m = parse_model(FIXTURE.read_text()).model
    as_of = T - dt.timedelta(days=7 * weeks_back)
    before = score(tiny, m, as_of).sort("account_id")
    grown = dict(tiny)
    for table, rows_ in extra.items():
        if rows_ is None:
            continue
        grown[table] = pl.concat([tiny[table], rows_], how="diagonal_relaxed") if table in tiny else rows_
    after = score(grown, m, as_of).sort("account_id")
    assert_frame_equal(before, after)


@settings(max_examples=30, deadline=None)
@given(
    weights=st.lists(st.floats(min_value=0, max_value=10), min_size=3, max_size=3).filter(lambda w: sum(w) > 0.1),
    raws=st.lists(st.one_of(st.none(), st.floats(min_value=-2, max_value=200)), min_size=3, max_size=3),
)
def test_contributions_always_sum_to_score(weights, raws):
    """On arbitrary raw values and weights (missing ones included)."""
    from health.scoring import score_features

    text = f"""
signals:
  a: {{label: a, table: accounts, measure: column, column: arr, score: [[0, 0], [100, 100]]}}
  b: {{label: b, table: accounts, measure: column, column: seats, score: [[0, 100], [50, 20], [150, 0]]}}
  c: {{label: c, table: accounts, measure: column, column: contract_months, score: [[-1, 30], [1, 90]]}}
segments:
  default: {{weights: {{a: {weights[0]}, b: {weights[1]}, c: {weights[2]}}}}}
tiers: {{at_risk: 40, watch: 70}}
"""
    m = parse_model(text).model
    feats = pl.LazyFrame(
        {"account_id": ["x"], "as_of": [T], "a": [raws[0]], "b": [raws[1]], "c": [raws[2]]},
        schema={"account_id": pl.String, "as_of": pl.Date, "a": pl.Float64, "b": pl.Float64, "c": pl.Float64},
    )
    r = score_features(feats, m).collect().row(0, named=True)
    present = [w for w, v in zip(weights, raws) if v is not None]
    if sum(present) == 0:
        assert r["score"] is None and r["tier"] == "insufficient_data"
        return
    assert -1e-9 <= r["score"] <= 100 + 1e-9  # contributions are summed in floating point
    assert sum(r[f"{s}__contribution"] for s in "abc") == pytest.approx(r["score"], abs=1e-9)
    assert r["coverage"] == pytest.approx(sum(present) / sum(weights))


def test_scoring_a_subset_of_signals_skips_rules_on_the_others(tiny):
    m = model()  # its rule reads `overdue`
    only_nps = score(tiny, m, T, signals=["nps"])
    assert only_nps["rule"].null_count() == only_nps.height
    with_overdue = score(tiny, m, T, signals=["nps", "overdue"])
    assert with_overdue.filter(pl.col("account_id") == "A1")["rule"].item() == "Very overdue"


def test_lean_history_plus_derive_equals_the_full_frame(tiny):
    from polars.testing import assert_frame_equal

    from health.scoring import derive, score_lazy

    m = model()
    dates = [T - dt.timedelta(days=7 * k) for k in range(4, -1, -1)]
    full = score_lazy(tiny, m, dates).collect().sort("account_id", "as_of")
    lean = score_lazy(tiny, m, dates, lean=True).collect().sort("account_id", "as_of")
    assert not any(c.endswith(("__weight", "__lost")) for c in lean.columns)
    back = derive(lean, m)
    shared = [c for c in full.columns if c in back.columns]
    assert set(full.columns) - set(shared) <= {"name", "owner", "seats"}  # display-only account columns
    assert_frame_equal(back.select(shared), full.select(shared))
