"""health.segments: leadership aggregates add up to the book."""

from __future__ import annotations

import datetime as dt

import polars as pl

from health.segments import renewals_by_tier, risk_by, tier_mix, tier_movement, tier_over_time

D = dt.date
AS_OF = D(2025, 3, 31)


def _summary() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "account_id": ["A", "B", "C", "D"],
            "segment": ["smb", "smb", "ent", "ent"],
            "owner": ["Ann", "Bob", "Ann", "Ann"],
            "arr": [10.0, 20.0, 300.0, 400.0],
            "score": [30.0, 80.0, 50.0, 90.0],
            "tier": ["at_risk", "healthy", "at_risk", "healthy"],
            "tier_4w_ago": ["watch", "healthy", None, "healthy"],
            "moved_into_at_risk": [True, False, True, False],
            "renewal_date": [D(2025, 4, 10), D(2025, 8, 1), D(2025, 3, 1), D(2025, 6, 1)],
        }
    )


def test_risk_by_segment_and_owner():
    seg = risk_by(_summary(), "segment")
    assert seg["segment"].to_list() == ["ent", "smb"]  # larger ARR at risk first
    ent = seg.row(0, named=True)
    assert ent["accounts"] == 2 and ent["arr_at_risk"] == 300.0 and ent["share_arr_at_risk"] == 300 / 700
    own = risk_by(_summary(), "owner")
    assert own.filter(pl.col("owner") == "Ann")["accounts_at_risk"].item() == 2


def test_tier_mix_shares_sum_to_one():
    mix = tier_mix(_summary(), "segment")
    sums = mix.group_by("segment").agg(pl.col("share_arr").sum())
    assert all(abs(v - 1) < 1e-9 for v in sums["share_arr"])


def test_tier_movement_counts_every_account():
    mv = tier_movement(_summary())
    assert mv["accounts"].sum() == 4
    assert mv.filter((pl.col("from") == "new") & (pl.col("to") == "at_risk"))["accounts"].item() == 1
    assert mv.filter((pl.col("from") == "watch") & (pl.col("to") == "at_risk"))["arr"].item() == 10.0


def test_renewals_by_tier_windows():
    r = renewals_by_tier(_summary(), AS_OF, horizons=(90, 180))
    r90 = {row["tier"]: row for row in r.filter(pl.col("within_days") == 90).iter_rows(named=True)}
    assert r90["at_risk"]["accounts"] == 1  # C's renewal is past: not counted
    assert r90["healthy"]["accounts"] == 1 and r90["watch"]["accounts"] == 0
    r180 = r.filter(pl.col("within_days") == 180)
    assert r180["accounts"].sum() == 3


def test_tier_over_time():
    hist = pl.DataFrame(
        {
            "as_of": [D(2025, 3, 24)] * 2 + [D(2025, 3, 31)] * 2,
            "tier": ["at_risk", "healthy", "at_risk", "at_risk"],
            "arr": [1.0, 2.0, 1.0, 2.0],
        }
    )
    t = tier_over_time(hist)
    last = t.filter(pl.col("as_of") == D(2025, 3, 31))
    assert last["arr"].to_list() == [3.0]
