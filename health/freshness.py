"""How fresh each table is: its latest record, how old that is, and whether it is stale.

A score is only as good as the data behind it. Each canonical table has a time column
(`health.schema.TABLES[...].time_column`); the latest value in it says when the feed last
delivered. A table is *stale* when that is more than `stale_after` days before `today`
(a feed that stopped: a daily usage export 10 days old). Sporadic tables (milestones,
past renewals) have no staleness threshold: a quiet month is not a broken feed.

`account_freshness` does the same for one account, next to the whole book's figures, so
a page can tell "this account went quiet" from "the feed stopped for everyone".
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Mapping

import polars as pl

from health.schema import TABLES

Frame = pl.DataFrame | pl.LazyFrame

STALE_AFTER_DAYS: dict[str, int | None] = {
    "usage": 3,
    "tickets": 7,
    "touchpoints": 30,
    "surveys": 45,
    "invoices": 45,
    "milestones": None,
    "outcomes": None,
    "accounts": None,
}
"""Default: days after which a table's latest record means the feed has stopped."""

SCHEMA: dict[str, pl.DataType] = {
    "table": pl.String(),
    "rows": pl.Int64(),
    "time_column": pl.String(),
    "latest": pl.Date(),
    "age_days": pl.Int64(),
    "stale_after_days": pl.Int64(),
    "stale": pl.Boolean(),
    "note": pl.String(),
}


def _latest(frame: Frame, column: str) -> tuple[int, dt.date | None]:
    lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    if column not in lf.collect_schema().names():
        return -1, None
    rows, latest = lf.select(pl.len(), pl.col(column).max().cast(pl.Date)).collect().row(0)
    return int(rows), latest


def freshness(
    tables: Mapping[str, Frame],
    today: dt.date,
    stale_after: Mapping[str, int | None] | None = None,
) -> pl.DataFrame:
    """One row per canonical table: rows, latest record, its age in days before `today`,
    the threshold, whether it is stale (null when the table has no threshold or no
    dates) and a short note in words."""
    limits = {**STALE_AFTER_DAYS, **(stale_after or {})}
    records = []
    for name, spec in TABLES.items():
        frame = tables.get(name)
        limit = limits.get(name)
        rec = {
            "table": name,
            "rows": 0,
            "time_column": spec.time_column,
            "latest": None,
            "age_days": None,
            "stale_after_days": limit,
            "stale": None,
            "note": "",
        }
        if frame is None:
            rec["note"] = "not provided"
            records.append(rec)
            continue
        if spec.time_column is None:
            lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
            rec["rows"] = int(lf.select(pl.len()).collect().item())
            rec["note"] = "snapshot of today (no dates)"
            records.append(rec)
            continue
        rows, latest = _latest(frame, spec.time_column)
        rec["rows"] = max(rows, 0)
        if latest is None:
            rec["note"] = "no dates" if rows >= 0 else f"no {spec.time_column} column"
            records.append(rec)
            continue
        age = (today - latest).days
        rec["latest"] = latest
        rec["age_days"] = age
        if limit is not None:
            rec["stale"] = age > limit
        rec["note"] = _words(age, limit)
        records.append(rec)
    return pl.DataFrame(records, schema=SCHEMA)


def _words(age: int, limit: int | None) -> str:
    if age < 0:
        when = f"{-age} day{'s' if age != -1 else ''} in the future"
    elif age == 0:
        when = "today"
    else:
        when = f"{age} day{'s' if age != 1 else ''} ago"
    if limit is None:
        return when
    return f"{when} (stale after {limit} days)" if age > limit else when


def account_freshness(
    tables: Mapping[str, Frame],
    account_id: str,
    as_of: dt.date,
    book: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per event table: this account's latest record and how long before `as_of`
    it was, with the whole book's latest record and staleness (from `freshness`)."""
    records = []
    for name, spec in TABLES.items():
        if spec.time_column is None or name == "outcomes":
            continue
        frame = tables.get(name)
        latest = None
        count = 0
        if frame is not None:
            lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
            if spec.time_column in lf.collect_schema().names():
                count, latest = (
                    lf.filter(pl.col("account_id") == account_id)
                    .filter(pl.col(spec.time_column).cast(pl.Date) <= as_of)
                    .select(pl.len(), pl.col(spec.time_column).max().cast(pl.Date))
                    .collect()
                    .row(0)
                )
        records.append(
            {
                "table": name,
                "account_records": int(count),
                "account_latest": latest,
                "days_before_as_of": (as_of - latest).days if latest is not None else None,
            }
        )
    out = pl.DataFrame(
        records,
        schema={
            "table": pl.String(),
            "account_records": pl.Int64(),
            "account_latest": pl.Date(),
            "days_before_as_of": pl.Int64(),
        },
    )
    if book is not None:
        out = out.join(
            book.select("table", pl.col("latest").alias("book_latest"), pl.col("stale").alias("book_stale"), pl.col("note").alias("book_note")),
            on="table",
            how="left",
        )
    return out


_LATENCY_UNITS = {"d": 1, "w": 7}


def parse_latency(value: int | str | None) -> int | None:
    """An expected latency as whole days: 3 / "3" / "3d" / "2w" / "36h" (rounded up to
    days); None / "none" / "never" for a table that has no threshold. Raises ValueError
    with the accepted forms otherwise."""
    if value is None or isinstance(value, bool):
        if value is None:
            return None
        raise ValueError(f"{value!r} is not a latency; write it like 2d, 3w or 36h")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is negative; write a latency like 2d, 3w or 36h")
        return value
    text = str(value).strip().lower()
    if text in ("none", "never", "off"):
        return None
    m = re.fullmatch(r"(\d+)\s*([dwh]?)", text)
    if not m:
        raise ValueError(f"{value!r} is not a latency; write it like 2d, 3w or 36h (or none)")
    n, unit = int(m.group(1)), m.group(2) or "d"
    if unit == "h":
        return -(-n // 24)
    return n * _LATENCY_UNITS[unit]


def expected_latencies(overrides: Mapping[str, int | None] | None = None) -> dict[str, int | None]:
    """The staleness threshold per table: the defaults with `overrides` (in days) applied."""
    return {**STALE_AFTER_DAYS, **(overrides or {})}
