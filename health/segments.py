"""Leadership aggregates over the scored book: where the ARR at risk sits.

Every function reads the current summary (`health.trajectory.summarize`) or the weekly
score history (`health.scoring.score_history`); nothing is re-scored here.

ARR is the accounts table's snapshot of *today* (see DESIGN.md, "Time is explicit"):
the at-risk ARR over past weeks is "today's ARR of the accounts that were at risk then",
which is what leadership asks ("how much of our book was in trouble?") but not the ARR
booked at the time.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import polars as pl

from health.features import AS_OF
from health.model import INSUFFICIENT, TIER_ORDER

TIERS: tuple[str, ...] = ("at_risk", "watch", "healthy", INSUFFICIENT)


def _tier_sort(frame: pl.DataFrame, column: str = "tier") -> pl.Expr:
    return pl.col(column).replace_strict(TIER_ORDER, default=len(TIER_ORDER))


def tier_mix(summary: pl.DataFrame, by: str) -> pl.DataFrame:
    """Accounts and ARR per `by` (segment, owner, ...) x tier, with each group's share of
    its accounts and ARR in the tier. Sorted by the group's ARR at risk, largest first."""
    base = summary.group_by(by, "tier").agg(pl.len().alias("accounts"), pl.col("arr").sum().alias("arr"))
    out = base.with_columns(
        (pl.col("accounts") / pl.col("accounts").sum().over(by)).alias("share_accounts"),
        (pl.col("arr") / pl.col("arr").sum().over(by)).alias("share_arr"),
        pl.col("arr").filter(pl.col("tier") == "at_risk").sum().over(by).alias("_risk"),
    )
    return out.sort(["_risk", by, _tier_sort(out)], descending=[True, False, False]).drop("_risk")


def risk_by(summary: pl.DataFrame, by: str) -> pl.DataFrame:
    """One row per group: accounts, ARR, accounts and ARR at risk / watch, the share of
    ARR at risk, and the average score. Largest ARR at risk first."""
    tier = pl.col("tier")
    return (
        summary.group_by(by)
        .agg(
            pl.len().alias("accounts"),
            pl.col("arr").sum().alias("arr"),
            (tier == "at_risk").sum().alias("accounts_at_risk"),
            pl.col("arr").filter(tier == "at_risk").sum().alias("arr_at_risk"),
            (tier == "watch").sum().alias("accounts_watch"),
            pl.col("arr").filter(tier == "watch").sum().alias("arr_watch"),
            pl.col("score").mean().alias("avg_score"),
            pl.col("moved_into_at_risk").sum().alias("moved_into_at_risk") if "moved_into_at_risk" in summary.columns else pl.lit(0).alias("moved_into_at_risk"),
        )
        .with_columns((pl.col("arr_at_risk") / pl.col("arr")).fill_nan(0.0).alias("share_arr_at_risk"))
        .sort(["arr_at_risk", by], descending=[True, False])
    )


def tier_over_time(history: pl.DataFrame) -> pl.DataFrame:
    """Per week and tier: accounts and (today's) ARR. Oldest week first."""
    return (
        history.group_by(AS_OF, "tier")
        .agg(pl.len().alias("accounts"), pl.col("arr").sum().alias("arr"))
        .sort([AS_OF, _tier_sort(history)])
    )


def tier_movement(summary: pl.DataFrame, before: str = "tier_4w_ago") -> pl.DataFrame:
    """Accounts and ARR from each tier 4 weeks ago (or "new" when the account had no score
    then) to each tier now: the rows of a movement matrix."""
    return (
        summary.with_columns(pl.col(before).fill_null("new").alias("from"), pl.col("tier").alias("to"))
        .group_by("from", "to")
        .agg(pl.len().alias("accounts"), pl.col("arr").sum().alias("arr"))
        .sort([_tier_sort(summary, "from"), _tier_sort(summary, "to")])
    )


def days_to_renewal(as_of: dt.date) -> pl.Expr:
    """Days from `as_of` to the account's next renewal (negative when it is past)."""
    return (pl.col("renewal_date") - pl.lit(as_of)).dt.total_days().alias("renewal_in_days")


def renewals_by_tier(summary: pl.DataFrame, as_of: dt.date, horizons: Sequence[int] = (90, 180)) -> pl.DataFrame:
    """For each horizon (days): accounts and ARR renewing within it (from `as_of`, inclusive),
    by tier. One row per horizon x tier, tiers with no renewals included as zeros."""
    with_days = summary.with_columns(days_to_renewal(as_of))
    rows = []
    for h in horizons:
        due = with_days.filter(pl.col("renewal_in_days").is_between(0, h))
        got = due.group_by("tier").agg(pl.len().alias("accounts"), pl.col("arr").sum().alias("arr"))
        frame = pl.DataFrame({"tier": list(TIERS)}).join(got, on="tier", how="left").with_columns(
            pl.col("accounts").fill_null(0).cast(pl.Int64),
            pl.col("arr").fill_null(0.0),
            pl.lit(h).alias("within_days"),
        )
        rows.append(frame)
    out = pl.concat(rows).select("within_days", "tier", "accounts", "arr")
    return out.filter((pl.col("tier") != INSUFFICIENT) | (pl.col("accounts") > 0))
