"""State measures at the grid's edges: a record closed (paid, solved) after the last
as-of date is open up to it, and never spills into the next account's rows."""

from __future__ import annotations

import datetime as dt

import polars as pl

from health.features import compute_features
from health.model import HealthModel, Segment, Signal, Tiers

D = dt.date
T = D(2025, 3, 31)


def _model(**signals: Signal) -> HealthModel:
    return HealthModel(signals=signals, segments={"default": Segment(weights={n: 1 for n in signals})},
                       tiers=Tiers(at_risk=40, watch=70))


def _accounts() -> pl.DataFrame:
    return pl.DataFrame({"account_id": ["A1", "A2"], "name": ["a", "b"], "segment": ["s", "s"], "owner": ["o", "o"],
                         "arr": [1.0, 1.0], "renewal_date": [D(2027, 1, 1)] * 2})


def test_closed_after_the_last_date_stays_with_its_account():
    invoices = pl.DataFrame({"invoice_id": ["i1"], "account_id": ["A1"], "issued_at": [D(2025, 1, 1)],
                             "due_date": [D(2025, 1, 31)], "amount": [10.0], "paid_at": [D(2025, 12, 1)]})
    tickets = pl.DataFrame({"ticket_id": ["t1"], "account_id": ["A1"], "opened_at": [dt.datetime(2025, 2, 1, 9)],
                            "priority": ["P1"], "closed_at": [dt.datetime(2025, 12, 1, 9)]})
    model = _model(
        od=Signal(label="od", table="invoices", measure="max_days_overdue", score=[[0, 0], [1, 100]]),
        age=Signal(label="age", table="tickets", measure="open_max_age", score=[[0, 0], [1, 100]]),
        n=Signal(label="n", table="tickets", measure="open_count", score=[[0, 0], [1, 100]]),
    )
    dates = [T - dt.timedelta(days=7 * i) for i in range(3)]
    out = compute_features({"accounts": _accounts(), "invoices": invoices, "tickets": tickets}, model, dates)
    out = out.collect().sort("account_id", "as_of")
    a1, a2 = out.filter(pl.col("account_id") == "A1"), out.filter(pl.col("account_id") == "A2")
    assert a1["od"].to_list() == [45.0, 52.0, 59.0]  # due 2025-01-31, unpaid at each date
    assert a1["age"].to_list() == [44.0, 51.0, 58.0]
    assert a1["n"].to_list() == [1.0, 1.0, 1.0]
    assert a2["od"].to_list() == [0.0, 0.0, 0.0]
    assert a2["age"].to_list() == [0.0, 0.0, 0.0]
    assert a2["n"].to_list() == [0.0, 0.0, 0.0]
