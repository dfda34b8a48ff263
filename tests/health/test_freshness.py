"""health.freshness: latest record per table, its age, and stale or not."""

from __future__ import annotations

import datetime as dt

import polars as pl

from health.freshness import account_freshness, freshness

D = dt.date


def _tables() -> dict[str, pl.DataFrame]:
    return {
        "accounts": pl.DataFrame({"account_id": ["A1", "A2"]}),
        "usage": pl.DataFrame(
            {"account_id": ["A1", "A2"], "date": [D(2025, 3, 20), D(2025, 3, 30)], "metric": ["u", "u"], "value": [1.0, 1.0]}
        ),
        "tickets": pl.DataFrame(
            {"ticket_id": ["t"], "account_id": ["A2"], "opened_at": [dt.datetime(2025, 3, 1, 8)], "priority": ["P1"]}
        ),
        "milestones": pl.DataFrame({"account_id": ["A1"], "at": [D(2020, 1, 1)], "kind": ["kickoff"]}),
    }


def test_book_freshness():
    f = freshness(_tables(), today=D(2025, 3, 31))
    by = {r["table"]: r for r in f.iter_rows(named=True)}
    assert by["usage"]["latest"] == D(2025, 3, 30) and by["usage"]["age_days"] == 1 and by["usage"]["stale"] is False
    assert by["tickets"]["age_days"] == 30 and by["tickets"]["stale"] is True
    assert "stale after 7 days" in by["tickets"]["note"]
    assert by["milestones"]["stale"] is None  # sporadic: no threshold
    assert by["accounts"]["rows"] == 2 and by["accounts"]["latest"] is None
    assert by["surveys"]["note"] == "not provided"


def test_thresholds_can_be_overridden():
    f = freshness(_tables(), today=D(2025, 3, 31), stale_after={"tickets": 60})
    assert f.filter(pl.col("table") == "tickets")["stale"].item() is False


def test_account_freshness():
    book = freshness(_tables(), today=D(2025, 3, 31))
    a = account_freshness(_tables(), "A1", as_of=D(2025, 3, 31), book=book)
    by = {r["table"]: r for r in a.iter_rows(named=True)}
    assert by["usage"]["account_latest"] == D(2025, 3, 20) and by["usage"]["days_before_as_of"] == 11
    assert by["usage"]["book_latest"] == D(2025, 3, 30)
    assert by["tickets"]["account_records"] == 0 and by["tickets"]["account_latest"] is None
    assert "accounts" not in by and "outcomes" not in by
