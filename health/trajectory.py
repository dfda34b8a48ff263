"""Where each account is heading: changes over 4 and 12 weeks, what moved since last
week, a 12-week sparkline, and an early-warning flag when the score or a key signal
falls faster than the model's `trajectory` allows — before the tier changes.

All of it is read off the weekly score history (`health.scoring.score_history`), so the
current view, the history chart and the trajectory can never disagree.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import polars as pl

from health.explain import MINUS, drivers
from health.features import AS_OF
from health.model import HealthModel

WEEK = dt.timedelta(days=7)


def _at(history: pl.DataFrame, when: dt.date, cols: Sequence[str], suffix: str) -> pl.DataFrame:
    return history.filter(pl.col(AS_OF) == when).select(
        "account_id", *[pl.col(c).alias(f"{c}{suffix}") for c in cols]
    )


def summarize(
    history: pl.DataFrame,
    model: HealthModel,
    as_of: dt.date | None = None,
    spark_weeks: int = 12,
) -> pl.DataFrame:
    """The current row per account (from `history` at `as_of`, default its latest date)
    with: change_1w / change_4w / change_12w, tier_4w_ago, moved_into_at_risk,
    spark (list of weekly scores), falling (bool) and falling_reason, drivers (top two
    in words) and what_changed (signals that moved most since last week)."""
    if history.is_empty():
        return history
    as_of = as_of or history[AS_OF].max()  # type: ignore[assignment]
    names = list(model.signals)
    traj = model.trajectory
    current = history.filter(pl.col(AS_OF) == as_of)
    contrib = [f"{s}__contribution" for s in names]
    sub = [f"{s}__score" for s in traj.key_signals]

    out = (
        current.join(_at(history, as_of - WEEK, ["score", *contrib], "_1w"), on="account_id", how="left")
        .join(_at(history, as_of - 4 * WEEK, ["score", "tier"], "_4w"), on="account_id", how="left")
        .join(_at(history, as_of - 12 * WEEK, ["score"], "_12w"), on="account_id", how="left")
        .join(_at(history, as_of - traj.weeks * WEEK, ["score", *sub], "_traj"), on="account_id", how="left")
    )
    spark = (
        history.filter(pl.col(AS_OF) >= as_of - spark_weeks * WEEK)
        .filter(pl.col(AS_OF) <= as_of)
        .sort(AS_OF)
        .group_by("account_id")
        .agg(pl.col("score").alias("spark"))
    )
    out = out.join(spark, on="account_id", how="left")

    falls = [
        pl.when(pl.col("score_traj") - pl.col("score") >= traj.score_drop).then(
            pl.format("Score fell {} points in {} weeks", (pl.col("score_traj") - pl.col("score")).round(0).cast(pl.Int64), pl.lit(traj.weeks))
        )
    ]
    for s in traj.key_signals:
        label = model.signals[s].label
        drop = pl.col(f"{s}__score_traj") - pl.col(f"{s}__score")
        falls.append(
            pl.when(drop >= traj.signal_drop).then(
                pl.format("{} sub-score fell {} points in {} weeks", pl.lit(label), drop.round(0).cast(pl.Int64), pl.lit(traj.weeks))
            )
        )
    reason = pl.concat_list(falls).list.drop_nulls().list.join("; ")

    moved = [
        pl.struct(
            (pl.col(f"{s}__contribution") - pl.col(f"{s}__contribution_1w")).abs().alias("size"),
            (pl.col(f"{s}__contribution") - pl.col(f"{s}__contribution_1w")).alias("delta"),
            pl.lit(model.signals[s].label).alias("label"),
        )
        for s in names
    ]
    what_changed = (
        pl.concat_list(moved)
        .list.sort(descending=True, nulls_last=True)
        .list.eval(pl.element().filter(pl.element().struct.field("size") >= 1.0).head(2))
    )
    out = out.with_columns(
        (pl.col("score") - pl.col("score_1w")).alias("change_1w"),
        (pl.col("score") - pl.col("score_4w")).alias("change_4w"),
        (pl.col("score") - pl.col("score_12w")).alias("change_12w"),
        pl.col("tier_4w").alias("tier_4w_ago"),
        ((pl.col("tier") == "at_risk") & (pl.col("tier_4w").fill_null("") != "at_risk")).alias("moved_into_at_risk"),
        reason.alias("falling_reason"),
        drivers(model, names).alias("drivers"),
        what_changed.alias("_moved"),
    ).with_columns(
        (pl.col("falling_reason").fill_null("") != "").alias("falling"),
        pl.col("_moved")
        .list.eval(
            pl.concat_str(
                pl.element().struct.field("label"),
                pl.lit(" "),
                pl.when(pl.element().struct.field("delta") >= 0).then(pl.lit("+")).otherwise(pl.lit(MINUS)),
                pl.element().struct.field("delta").abs().round(1).cast(pl.String),
                pl.lit(" pts"),
            )
        )
        .list.join("; ")
        .alias("what_changed"),
    )
    helper = ["score_1w", *(f"{c}_1w" for c in contrib), "score_12w", "score_traj", *(f"{c}_traj" for c in sub)]
    return out.drop([*helper, "score_4w", "tier_4w", "_moved"])
