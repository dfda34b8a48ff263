"""Each measure against a value computed by hand on the tiny book (see conftest.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from health.features import compute_features
from health.model_loader import load_model

from .conftest import D, T, daily, frame

MODEL = Path(__file__).parent.parent / "fixtures" / "engine" / "all_measures.yaml"


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL).model


def values(tiny, model, as_of=T) -> dict[str, dict[str, float | None]]:
    out = compute_features(tiny, model, [as_of]).collect()
    return {row["account_id"]: row for row in out.iter_rows(named=True)}


def test_usage_window_measures(tiny, model):
    a1 = values(tiny, model)["A1"]
    # Window (T-28, T] = Mar 4..31: 28 days x 6 users; the 28 days before: 28 x 8.
    assert a1["au_sum"] == 28 * 6
    assert a1["au_mean"] == 6
    assert a1["au_trend"] == pytest.approx((28 * 6 - 28 * 8) / (28 * 8))
    assert a1["seat_util"] == pytest.approx(6 / 10)
    assert a1["epu"] == pytest.approx(60 / 6)
    assert a1["fx_share"] == pytest.approx(3 / 6)


def test_trend_of_partial_prior_window(tiny, model):
    # A2 has used the product since Feb 15: 17 days in the prior window, 28 in the last.
    a2 = values(tiny, model)["A2"]
    assert a2["au_trend"] == pytest.approx((28 * 10 - 17 * 10) / (17 * 10))


def test_ticket_measures(tiny, model):
    a1, a2 = values(tiny, model)["A1"], values(tiny, model)["A2"]
    # t1 (never closed) and t3 (closed after T) are open P1s; t2 closed on T; t4 opened after T.
    assert a1["open_p1"] == 2
    assert a1["oldest_p1"] == (T - D(2025, 3, 1)).days
    assert a2["open_p1"] == 0 and a2["oldest_p1"] == 0
    assert a1["esc"] == 1  # t4 is escalated too, but after T
    assert a1["sentiment"] == pytest.approx((-0.5 + 0.1 - 0.3) / 3)


def test_invoice_overdue(tiny, model):
    a1, a2 = values(tiny, model)["A1"], values(tiny, model)["A2"]
    # i1 due Feb 14 unpaid (45 days); i2 due Mar 1, paid only after T (30 days): the oldest wins.
    assert a1["overdue"] == (T - D(2025, 2, 14)).days
    assert a2["overdue"] == 0
    # Before i2 was due and after i1 was paid late? i1 is never paid: still overdue on Apr 10.
    assert values(tiny, model, D(2025, 4, 10))["A1"]["overdue"] == (D(2025, 4, 10) - D(2025, 2, 14)).days


def test_latest_and_days_since(tiny, model):
    a1, a2 = values(tiny, model)["A1"], values(tiny, model)["A2"]
    assert a1["nps"] == 4  # Mar 10 answer; the csat in between and the Apr 5 nps do not count
    assert a2["nps"] is None  # its only answer is older than the 365-day lookback
    assert a1["exec_days"] == (T - D(2025, 1, 30)).days
    assert a2["exec_days"] is None


def test_account_column_measures(tiny, model):
    a1 = values(tiny, model)["A1"]
    assert a1["tenure"] == (T - D(2023, 1, 1)).days
    assert a1["seats_col"] == 10


def test_missing_table_gives_missing_not_zero(tiny, model):
    del tiny["tickets"]
    a1 = values(tiny, model)["A1"]
    assert a1["open_p1"] is None and a1["esc"] is None and a1["sentiment"] is None


def test_accounts_not_yet_customers_are_left_out(tiny, model):
    out = compute_features(tiny, model, [D(2024, 12, 1), T]).collect()
    # A2 started on 2025-01-01: no row on 2024-12-01.
    assert out.filter(pl.col("as_of") == D(2024, 12, 1))["account_id"].to_list() == ["A1"]


def test_churned_accounts_leave_after_their_churn_date(tiny, model):
    tiny["outcomes"] = frame(
        "outcomes", [{"account_id": "A2", "renewal_date": D(2025, 3, 15), "outcome": "churned"}]
    )
    out = compute_features(tiny, model, [D(2025, 3, 14), T]).collect()
    assert sorted(out.filter(pl.col("as_of") == D(2025, 3, 14))["account_id"]) == ["A1", "A2"]
    assert out.filter(pl.col("as_of") == T)["account_id"].to_list() == ["A1"]


def test_many_dates_equal_one_date_at_a_time(tiny, model):
    """The vectorised history gives the same numbers as scoring each date on its own."""
    dates = [T - dt.timedelta(days=7 * k) for k in range(8, -1, -1)]
    together = compute_features(tiny, model, dates).collect().sort("account_id", "as_of")
    alone = pl.concat(
        [compute_features(tiny, model, [d]).collect() for d in dates], how="vertical"
    ).sort("account_id", "as_of")
    assert_frame_equal(together, alone)


def test_irregular_dates_and_windows(tiny, model):
    """Dates that are not a week apart force one-day bins; results must not change."""
    dates = [T - dt.timedelta(days=3), T]
    together = compute_features(tiny, model, dates).collect().sort("account_id", "as_of")
    alone = pl.concat([compute_features(tiny, model, [d]).collect() for d in dates]).sort("account_id", "as_of")
    assert_frame_equal(together, alone)


def test_usage_by_day_matches_a_naive_filter(tiny, model):
    """Cross-check the binned running total with a plain filter-and-sum."""
    extra = daily("A1", "active_users", D(2025, 1, 1), D(2025, 2, 3), lambda d: d.day)
    tiny["usage"] = pl.concat([tiny["usage"], frame("usage", extra)])
    as_of = D(2025, 2, 20)
    got = values(tiny, model, as_of)["A1"]["au_sum"]
    u = tiny["usage"]
    want = u.filter(
        (pl.col("account_id") == "A1")
        & (pl.col("metric") == "active_users")
        & (pl.col("date") > as_of - dt.timedelta(days=28))
        & (pl.col("date") <= as_of)
    )["value"].sum()
    assert got == want
