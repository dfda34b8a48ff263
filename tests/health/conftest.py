"""A tiny, hand-made book whose every signal value can be computed by hand."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from health.schema import TABLES

D = dt.date
T = D(2025, 3, 31)


def frame(table: str, rows: list[dict]) -> pl.DataFrame:
    spec = TABLES[table]
    schema = {c.name: c.dtype for c in spec.columns}
    cols = list(rows[0]) if rows else [c.name for c in spec.columns if c.required]
    return pl.DataFrame(rows, schema={c: schema[c] for c in cols}, orient="row") if rows else pl.DataFrame(
        schema={c: schema[c] for c in cols}
    )


def daily(account: str, metric: str, start: dt.date, end: dt.date, value) -> list[dict]:
    out = []
    d = start
    while d <= end:
        out.append({"account_id": account, "date": d, "metric": metric, "value": float(value(d) if callable(value) else value)})
        d += dt.timedelta(days=1)
    return out


@pytest.fixture
def tiny() -> dict[str, pl.DataFrame]:
    accounts = frame(
        "accounts",
        [
            {"account_id": "A1", "name": "Acme", "segment": "smb", "owner": "Ann", "arr": 10_000.0,
             "renewal_date": D(2025, 9, 1), "start_date": D(2023, 1, 1), "seats": 10},
            {"account_id": "A2", "name": "Bolt", "segment": "enterprise", "owner": "Bob", "arr": 200_000.0,
             "renewal_date": D(2025, 6, 1), "start_date": D(2025, 1, 1), "seats": 20},
        ],
    )
    usage = (
        # A1: 8 active users a day in the prior 4 weeks, 6 in the last 4 weeks.
        daily("A1", "active_users", D(2025, 2, 4), D(2025, 3, 3), 8)
        + daily("A1", "active_users", D(2025, 3, 4), T, 6)
        + daily("A1", "feature_x", D(2025, 3, 4), T, 3)
        + daily("A1", "events", D(2025, 3, 4), T, 60)
        # A2: young account, 10 users a day since mid-February.
        + daily("A2", "active_users", D(2025, 2, 15), T, 10)
    )
    # A record after T must never count.
    usage += daily("A1", "active_users", D(2025, 4, 1), D(2025, 4, 10), 1000)
    tickets = frame(
        "tickets",
        [
            # open at T: opened before, never closed
            {"ticket_id": "t1", "account_id": "A1", "opened_at": dt.datetime(2025, 3, 1, 9), "priority": "P1",
             "closed_at": None, "sentiment": -0.5, "escalated": True},
            # closed on T: not open at T
            {"ticket_id": "t2", "account_id": "A1", "opened_at": dt.datetime(2025, 3, 20, 9), "priority": "P2",
             "closed_at": dt.datetime(2025, 3, 31, 10), "sentiment": 0.1, "escalated": False},
            # closed after T: open at T, 11 days old
            {"ticket_id": "t3", "account_id": "A1", "opened_at": dt.datetime(2025, 3, 20, 9), "priority": "P1",
             "closed_at": dt.datetime(2025, 4, 5, 10), "sentiment": -0.3, "escalated": False},
            # opened after T: unknown at T
            {"ticket_id": "t4", "account_id": "A1", "opened_at": dt.datetime(2025, 4, 2, 9), "priority": "P1",
             "closed_at": None, "sentiment": -1.0, "escalated": True},
            # a P3 open at T for A2
            {"ticket_id": "t5", "account_id": "A2", "opened_at": dt.datetime(2025, 3, 30, 9), "priority": "P3",
             "closed_at": None, "sentiment": 0.5, "escalated": False},
        ],
    )
    invoices = frame(
        "invoices",
        [
            # due 2025-02-14, unpaid: 45 days overdue at T
            {"invoice_id": "i1", "account_id": "A1", "issued_at": D(2025, 1, 15), "due_date": D(2025, 2, 14),
             "amount": 100.0, "paid_at": None},
            # due 2025-03-01, paid after T (04-02): overdue 30 days at T, younger than i1
            {"invoice_id": "i2", "account_id": "A1", "issued_at": D(2025, 1, 30), "due_date": D(2025, 3, 1),
             "amount": 100.0, "paid_at": D(2025, 4, 2)},
            # A2 paid on time
            {"invoice_id": "i3", "account_id": "A2", "issued_at": D(2025, 1, 1), "due_date": D(2025, 1, 31),
             "amount": 5000.0, "paid_at": D(2025, 1, 20)},
        ],
    )
    surveys = frame(
        "surveys",
        [
            {"response_id": "s1", "account_id": "A1", "responded_at": D(2024, 12, 1), "kind": "nps", "score": 9.0},
            {"response_id": "s2", "account_id": "A1", "responded_at": D(2025, 3, 10), "kind": "nps", "score": 4.0},
            {"response_id": "s3", "account_id": "A1", "responded_at": D(2025, 3, 20), "kind": "csat", "score": 5.0},
            {"response_id": "s4", "account_id": "A1", "responded_at": D(2025, 4, 5), "kind": "nps", "score": 10.0},
            {"response_id": "s5", "account_id": "A2", "responded_at": D(2024, 1, 5), "kind": "nps", "score": 8.0},
        ],
    )
    touchpoints = frame(
        "touchpoints",
        [
            {"touchpoint_id": "m1", "account_id": "A1", "at": D(2025, 1, 30), "kind": "exec_meeting"},
            {"touchpoint_id": "m2", "account_id": "A1", "at": D(2025, 3, 21), "kind": "call"},
            {"touchpoint_id": "m3", "account_id": "A1", "at": D(2025, 4, 3), "kind": "exec_meeting"},
        ],
    )
    return {
        "accounts": accounts,
        "usage": frame("usage", usage),
        "tickets": tickets,
        "invoices": invoices,
        "surveys": surveys,
        "touchpoints": touchpoints,
    }
