"""One account: where its health stands, why, and its whole story on one timeline.

Deep link: /account?account=ACC-00042
"""

import datetime as dt

import polars as pl
import streamlit as st

from health.timeline import SOURCE_LABELS, with_events
from ui import actions, alerts, charts, data
from ui.fmt import TABLE_LABELS, money, renewal_words, signed, source_label, tier_label

book = data.book_or_stop()
back = st.session_state.get("at_risk_filters") or {}

account_id = st.query_params.get("account")
if not account_id:
    st.title("Account")
    names = book.tables["accounts"].select("account_id", "name").sort("name")
    labels = {r["account_id"]: f"{r['name']} ({r['account_id']})" for r in names.iter_rows(named=True)}
    pick = st.selectbox("Open an account", [None, *labels], format_func=lambda v: "Type a name…" if v is None else labels[v])
    if pick:
        st.query_params["account"] = pick
        st.rerun()
    st.page_link("app_pages/at_risk.py", label="Or start from the at-risk list", icon=":material/arrow_back:", query_params=back)
    st.stop()

view = data.account_view(book, account_id)
if view is None:
    st.title("Account not found")
    st.error(f"No account with id **{account_id}** in the source '{book.source_name}'.")
    st.page_link("app_pages/at_risk.py", label="Back to the at-risk list", icon=":material/arrow_back:", query_params=back)
    st.stop()

acc, cur = view.account, view.current
x_range = (view.since, book.as_of + dt.timedelta(days=3))

# ---- Header -----------------------------------------------------------------------------
st.page_link("app_pages/at_risk.py", label="At-risk list", icon=":material/arrow_back:", query_params=back)
st.title(acc["name"])
st.caption(
    " · ".join(
        str(x)
        for x in (acc["account_id"], acc.get("segment"), f"owner {acc.get('owner')}", acc.get("region"), acc.get("plan"))
        if x
    )
)
if cur is None:
    status = acc.get("status")
    st.warning(
        f"This account has no score as of {book.as_of:%d %b %Y}"
        + (f" (status: {status})." if status else ".")
        + " Its history and timeline are shown below."
    )
else:
    c = st.columns([1, 1.1, 1, 1.3, 1])
    change = cur.get("change_4w")
    c[0].metric("Health score", f"{cur['score']:.0f}" if cur["score"] is not None else "—",
                delta=round(change) if change is not None else None, delta_description="in 4 weeks", border=True)
    before = cur.get("tier_4w_ago")
    c[1].metric("Tier", tier_label(cur["tier"]), border=True,
                delta=(f"was {tier_label(before, icon=False).lower()}" if before and before != cur["tier"] else "unchanged"),
                delta_description="4 weeks ago" if before and before != cur["tier"] else "in 4 weeks",
                delta_color="off", delta_arrow="off")
    c[2].metric("ARR", money(acc.get("arr")), border=True)
    renewal = acc.get("renewal_date")
    c[3].metric("Renewal", f"{renewal:%d %b %Y}" if renewal else "—",
                delta=renewal_words(renewal, book.as_of).split("(")[-1].rstrip(")") if renewal else None,
                delta_color="off", delta_arrow="off", border=True)
    c[4].metric("Data coverage", f"{cur['coverage']:.0%}", border=True,
                help="Share of the model's weight that had data for this account.")
    if cur.get("rule"):
        st.error(f"**Override: {cur['rule']}.** {cur.get('rule_reason') or ''}", icon=":material/flag:")
    if cur.get("falling"):
        st.warning(f"**Early warning:** {cur['falling_reason']}", icon=":material/trending_down:")

# ---- Recommended next steps (plays, evidence, act / dismiss) ------------------------------------
action_rows = actions.next_steps(book, acc, cur)
if action_rows is not None and action_rows.height:
    # what the team did is dated today, usually after the data's last day: keep it on the axis
    latest = action_rows["at"].max().date()
    x_range = (x_range[0], max(x_range[1], latest + dt.timedelta(days=3)))

# ---- Score history -------------------------------------------------------------------------
st.subheader("Health score, last 52 weeks")
segment = cur["health_segment"] if cur else (view.history["health_segment"][-1] if view.history.height else None)
tiers = book.model.segment_tiers(segment) if segment in book.model.segments else book.model.tiers
changes = data.model_changes()
stored = alerts.stored_scores(account_id)
st.plotly_chart(charts.score_history(view.history, tiers, x_range, changes, stored), key="score_history")
st.caption(
    f"Bands: the tier thresholds of the “{segment}” segment in the health model "
    f"(at risk below {tiers.at_risk:g}, watch below {tiers.watch:g}). The line scores past weeks with "
    f"today's model ({book.model_hash})"
    + ("; dotted lines mark when the published model changed" if changes else "")
    + ("; ◇ the score the daily run stored on the day, with the model in force then." if stored.height else ".")
)

# ---- What drives the score --------------------------------------------------------------------
if cur is not None and view.breakdown is not None:
    st.subheader("What drives the score")
    if cur.get("drivers"):
        st.markdown(f"**Biggest drags:** {cur['drivers']}.")
    changed = cur.get("what_changed") or ""
    st.markdown(
        "**Since last week:** "
        + (f"{changed} ({signed(cur.get('change_1w'))} points overall)." if changed else "no signal moved by a point or more.")
    )
    st.plotly_chart(charts.drivers(view.breakdown), key="drivers")
    table = view.breakdown.filter(pl.col("in_model")).select(
        pl.col("label").alias("Signal"),
        pl.col("value").alias("Value"),
        pl.col("sub_score").alias("Sub-score"),
        pl.col("weight").alias("Weight"),
        pl.col("contribution").alias("Points earned"),
        pl.col("points_lost").alias("Points lost"),
    )
    with st.expander("Signal by signal: value, sub-score, weight, points", expanded=True):
        st.dataframe(
            table,
            hide_index=True,
            height=38 + 35 * table.height,
            column_config={
                "Signal": st.column_config.TextColumn(width="large"),
                "Sub-score": st.column_config.ProgressColumn(min_value=0, max_value=100, format="%.0f"),
                "Weight": st.column_config.NumberColumn(format="%g"),
                "Points earned": st.column_config.NumberColumn(format="%.1f"),
                "Points lost": st.column_config.NumberColumn(format="%.1f"),
            },
        )
        st.caption(
            "Each signal's sub-score (0–100) times its share of the weight gives the points it earns; "
            "the points earned add up to the score. Signals without data drop out and the others re-weigh."
        )

# ---- Timeline ------------------------------------------------------------------------------------
st.subheader("Timeline")
alert_rows = alerts.account_rows(account_id)
if alert_rows is not None and alert_rows.height:  # fired by the daily run, dated when it ran: keep it on the axis
    x_range = (x_range[0], max(x_range[1], alert_rows["at"].max().date() + dt.timedelta(days=3)))
tl = with_events(view.timeline, action_rows, alert_rows, since=view.since)  # + the "Actions & decisions" and "Alerts" lanes
if tl.is_empty() and view.usage.is_empty():
    st.info("No events or usage recorded for this account in the last 52 weeks.")
else:
    metrics = [m for m in ("active_users", "feature_automations", "feature_dashboards") if m in set(view.usage["metric"].to_list())]
    st.plotly_chart(charts.timeline(tl, view.usage, x_range, metrics), key="timeline")
    present = [s for s in SOURCE_LABELS if s in set(tl["source"].to_list())]
    chosen = st.pills(
        "Show in the list", present, selection_mode="multi", default=present, format_func=source_label,
        key="tl_sources:" + "|".join(present),  # a new lane (e.g. a first action) is shown, not filtered out
    )
    shown = tl.filter(pl.col("source").is_in(chosen or []))
    st.dataframe(
        shown.select(
            pl.col("at").dt.date().alias("Date"),
            pl.col("source").replace_strict(SOURCE_LABELS, default=pl.col("source")).alias("Source"),
            pl.col("tone").replace_strict({"bad": "🔴", "good": "🟢", "info": "·"}, default="").alias(" "),
            pl.col("title").alias("What"),
            pl.col("detail").alias("Detail"),
        ),
        hide_index=True,
        height=min(38 + 35 * max(shown.height, 1), 420),
        column_config={
            "Date": st.column_config.DateColumn(format="DD MMM YYYY", width="small"),
            " ": st.column_config.TextColumn(width=30),
            "What": st.column_config.TextColumn(width="large"),
            "Detail": st.column_config.TextColumn(width="large"),
        },
    )
    st.caption(f"{shown.height} of {tl.height} events since {view.since:%d %b %Y}, newest first.")

# ---- Freshness -------------------------------------------------------------------------------------
with st.expander("Data freshness for this account"):
    fr = view.freshness.select(
        pl.col("table").replace_strict(TABLE_LABELS, default=pl.col("table")).alias("Source"),
        pl.col("account_records").alias("Records"),
        pl.col("account_latest").alias("Latest for this account"),
        pl.col("days_before_as_of").alias("Days before as-of"),
        pl.col("book_latest").alias("Latest in the whole source"),
        pl.when(pl.col("book_stale")).then(pl.lit("⚠️ stale")).when(pl.col("book_stale").not_()).then(pl.lit("✅ fresh"))
        .otherwise(pl.lit("—")).alias("Feed"),
    )
    st.dataframe(fr, hide_index=True)
    st.caption(
        f"Scores are computed as of {book.as_of:%d %b %Y}. A feed is stale when its latest record is older than "
        "its expected delay; an account can also simply have no recent events of a kind."
    )
