"""Segments (leadership): where the ARR at risk sits, how it moves, what renews soon."""

import polars as pl
import streamlit as st

from health.segments import renewals_by_tier, risk_by, tier_mix, tier_movement, tier_over_time
from health.worklist import Filters
from ui import charts, data
from ui.fmt import money

book = data.book_or_stop()
summary = book.summary

st.title("Segments")
total = float(summary["arr"].sum() or 0)
risk = summary.filter(pl.col("tier") == "at_risk")
risk_arr = float(risk["arr"].sum() or 0)
moved = summary.filter(pl.col("moved_into_at_risk").fill_null(False))
st.caption(f"{summary.height:,} active accounts, {money(total)} ARR · scores as of {book.as_of:%d %b %Y}.")

m = st.columns(4)
m[0].metric("ARR at risk", money(risk_arr), f"{risk_arr / total:.0%} of ARR" if total else None,
            delta_color="off", delta_arrow="off", border=True)
m[1].metric("Accounts at risk", f"{risk.height:,}", f"of {summary.height:,}", delta_color="off", delta_arrow="off", border=True)
m[2].metric("Newly at risk (4 weeks)", f"{moved.height:,}", f"{money(float(moved['arr'].sum() or 0))} ARR",
            delta_color="off", delta_arrow="off", border=True)
renew = renewals_by_tier(summary, book.as_of, (90, 180))
r90 = renew.filter((pl.col("within_days") == 90) & (pl.col("tier") == "at_risk"))
m[3].metric("At risk, renewing in 90 days", money(float(r90["arr"].sum() or 0)),
            f"{int(r90['accounts'].sum() or 0)} accounts", delta_color="off", delta_arrow="off", border=True)


def drill(frame: pl.DataFrame, by: str, key: str) -> None:
    """One link per group to the at-risk list filtered to that group's at-risk accounts."""
    top = frame.filter(pl.col("accounts_at_risk") > 0).head(12)
    if top.is_empty():
        st.caption("No accounts at risk.")
        return
    cols = st.columns(3)
    for i, r in enumerate(top.iter_rows(named=True)):
        cols[i % 3].page_link(
            "app_pages/at_risk.py",
            label=f"{r[by]}: {r['accounts_at_risk']} at risk ({money(r['arr_at_risk'])})",
            icon=":material/arrow_forward:",
            query_params=Filters(**{by: r[by]}, tiers=("at_risk",)).to_params(),
        )


def table(frame: pl.DataFrame, by: str, title: str) -> None:
    st.dataframe(
        frame.select(
            pl.col(by).alias(title),
            "accounts",
            "accounts_at_risk",
            pl.col("arr").round(0).cast(pl.Int64),
            pl.col("arr_at_risk").round(0).cast(pl.Int64),
            "share_arr_at_risk",
            "moved_into_at_risk",
            "avg_score",
        ),
        hide_index=True,
        column_config={
            "accounts": st.column_config.NumberColumn("Accounts"),
            "accounts_at_risk": st.column_config.NumberColumn("At risk"),
            "arr": st.column_config.NumberColumn("ARR", format="$%,d"),
            "arr_at_risk": st.column_config.NumberColumn("ARR at risk", format="$%,d"),
            "share_arr_at_risk": st.column_config.ProgressColumn("Share of ARR at risk", min_value=0, max_value=1, format="percent"),
            "moved_into_at_risk": st.column_config.NumberColumn("Newly at risk"),
            "avg_score": st.column_config.NumberColumn("Avg score", format="%.0f"),
        },
    )


measure = st.segmented_control(
    "Bars show", ["ARR", "Accounts"], default="ARR", key="measure", label_visibility="collapsed"
) or "ARR"
value = "arr" if measure == "ARR" else "accounts"
tab_seg, tab_owner = st.tabs(["By segment", "By owner"])
with tab_seg:
    seg = risk_by(summary, "segment")
    st.plotly_chart(charts.tier_bars(tier_mix(summary, "segment"), "segment", value), key="seg_bars")
    table(seg, "segment", "Segment")
    st.markdown("**Open the at-risk accounts of a segment**")
    drill(seg, "segment", "seg")
with tab_owner:
    own = risk_by(summary, "owner")
    st.plotly_chart(charts.tier_bars(tier_mix(summary, "owner"), "owner", value), key="owner_bars")
    table(own, "owner", "Owner")
    st.markdown("**Open an owner's at-risk accounts**")
    drill(own, "owner", "own")

left, right = st.columns(2)
with left:
    st.subheader("ARR at risk, last 52 weeks")
    st.plotly_chart(charts.at_risk_over_time(tier_over_time(book.history)), key="over_time")
    st.caption(
        "Each week's at-risk accounts, valued at today's ARR (the accounts table is a snapshot of today). "
        "Click “ARR watch” in the legend to add the watch tier."
    )
with right:
    st.subheader("Tier movement, 4 weeks ago → now")
    st.plotly_chart(charts.movement_matrix(tier_movement(summary)), key="movement")
    st.caption("Accounts (and their ARR) by tier four weeks ago and now. Off the diagonal: accounts that moved.")

st.subheader("Renewals coming up, by tier")
lc, rc = st.columns([1.3, 1])
with lc:
    st.plotly_chart(charts.renewals(renew), key="renewals")
with rc:
    for days in (90, 180):
        part = renew.filter((pl.col("within_days") == days) & (pl.col("tier") == "at_risk"))
        n = int(part["accounts"].sum() or 0)
        st.page_link(
            "app_pages/at_risk.py",
            label=f"{n} at-risk accounts renew in the next {days} days ({money(float(part['arr'].sum() or 0))})",
            icon=":material/event:",
            query_params=Filters(tiers=("at_risk",), renewal_within=days).to_params(),
            disabled=n == 0,
        )
    st.page_link(
        "app_pages/at_risk.py",
        label="All accounts renewing in the next 90 days",
        icon=":material/event:",
        query_params=Filters(renewal_within=90).to_params(),
    )

st.subheader("How reliable has “at risk” been?")
cal = data.calibration_view(book)
if cal is None:
    st.info("No past renewals in the data (the outcomes table), so the model cannot be checked against them yet.")
else:
    m = cal.overall
    churned = m.bad
    flagged_early = round((m.recall_flagged or 0) * churned)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Past renewals checked", f"{m.n}", f"{churned} churned", delta_color="off", delta_arrow="off", border=True)
    at_risk_band = next((b for b in m.tiers if b.label == "at_risk"), None)
    c2.metric(
        "Churn rate when “at risk”",
        "—" if at_risk_band is None or at_risk_band.rate is None else f"{at_risk_band.rate:.0%}",
        "—" if m.base_rate is None else f"vs {m.base_rate:.0%} for all accounts",
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    c3.metric(
        f"Churned accounts flagged {cal.lead_days} days ahead",
        f"{flagged_early} of {churned}",
        "at risk or watch",
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    c4.metric(
        "Ranking quality (AUC)",
        "—" if m.auc is None else f"{m.auc:.2f}",
        None if m.auc_low is None else f"95% range {m.auc_low:.2f}–{m.auc_high:.2f}",
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    tiers = pl.DataFrame(
        {
            "Tier 90 days before renewal": [b.label.replace("_", " ") for b in m.tiers],
            "Renewals": [b.n for b in m.tiers],
            "Churned": [b.bad for b in m.tiers],
            "Churn rate": [b.rate for b in m.tiers],
            "× the average": [b.lift for b in m.tiers],
        }
    )
    st.dataframe(
        tiers,
        hide_index=True,
        column_config={
            "Churn rate": st.column_config.NumberColumn(format="percent"),
            "× the average": st.column_config.NumberColumn(format="%.1f×"),
        },
    )
    st.caption(
        f"Every past renewal, scored as of {cal.lead_days} days before it with only what was known then, "
        "by the current model. AUC: the chance a renewed account scored above a churned one (0.5 = a coin toss)."
    )
