"""At-risk accounts: every active account, most at risk first, with the reason in words.

Filters live in the URL (widgets bound to query parameters), so a filtered list is a link.
Clicking a row opens the account.
"""

import polars as pl
import streamlit as st

from health.segments import TIERS
from health.worklist import (
    ANY_OWNER,
    ANY_SEGMENT,
    ANY_TIME,
    ME,
    MY_ACCOUNTS,
    RENEWAL_WORDS,
    TIER_WORDS,
    Filters,
    apply_filters,
    headline,
    to_csv,
)
from ui import data
from ui.fmt import money, tier_label, tier_label_expr

book = data.book_or_stop()
my_owners, who, how = data.my_owners(book)

st.title("At-risk accounts")
st.caption(
    f"All {book.rows.height:,} active accounts, lowest health score first · scores as of {book.as_of:%d %b %Y}. "
    "Click a row to open the account."
)

# ---- Filters (bound to the URL: ?owner=&segment=&tier=&renewal=&falling=&q=) ----------
# The options are the words the user sees; the URL carries the same words, so a link
# reads ?owner=My+accounts&tier=At+risk&renewal=90+days.
owners = sorted(book.rows["owner"].drop_nulls().unique().to_list())
segments = sorted(book.rows["segment"].drop_nulls().unique().to_list())
tier_of = {w: t for t, w in TIER_WORDS.items()}
renewal_of = {ANY_TIME: None} | {w: d for d, w in RENEWAL_WORDS.items()}

c1, c2, c3, c4 = st.columns([1.2, 0.8, 1.4, 1])
owner_word = c1.selectbox(
    "Owner", [ANY_OWNER, MY_ACCOUNTS, *owners], key="owner", bind="query-params",
    help=f"“{MY_ACCOUNTS}”: " + (f"{who} → {', '.join(my_owners)}" if my_owners else f"{who or 'nobody is signed in'}"),
)
segment = c2.selectbox("Segment", [ANY_SEGMENT, *segments], key="segment", bind="query-params")
tier_words = c3.multiselect(
    "Tier", [TIER_WORDS[t] for t in TIERS], key="tier", bind="query-params", placeholder="All tiers"
)
renewal = c4.selectbox("Renews within", list(renewal_of), key="renewal", bind="query-params")
c5, c6, c7 = st.columns([2.2, 1.3, 0.8], vertical_alignment="bottom")
search = c5.text_input("Search", key="q", bind="query-params", placeholder="Account name or id")
falling = c6.toggle(
    "Only falling trajectories",
    key="falling",
    bind="query-params",
    help="Early warning: the score or a key signal fell fast in the last weeks, even if the tier has not changed yet.",
)
if c7.button("Reset filters", key="reset", width="stretch"):
    for k in ("owner", "segment", "tier", "renewal", "q", "falling"):
        st.session_state.pop(k, None)
    st.rerun()

filters = Filters(
    owner=None if owner_word == ANY_OWNER else ME if owner_word == MY_ACCOUNTS else owner_word,
    segment=None if segment == ANY_SEGMENT else segment,
    tiers=tuple(tier_of[w] for w in tier_words),
    renewal_within=renewal_of[renewal],
    falling=bool(falling),
    search=search or "",
)
st.session_state["at_risk_filters"] = filters.to_params()  # for "back to the list" links
if filters.owner == ME and not my_owners:
    st.info(
        f"“My accounts” needs to know who you are: {who or 'nobody is signed in'} "
        f"{'matches no account owner' if who else ''}. Sign in, or set CHI_USER to your email.",
        icon="👤",
    )

rows = apply_filters(book.rows, filters, my_owners)

# ---- Headline -------------------------------------------------------------------------
h = headline(rows)
m1, m2, m3, m4 = st.columns(4)
m1.metric(f"{tier_label('at_risk')} · {h['at_risk']['accounts']:,} accounts", money(h["at_risk"]["arr"]), border=True,
          help="ARR of the accounts in this view that are at risk.")
m2.metric(f"{tier_label('watch')} · {h['watch']['accounts']:,} accounts", money(h["watch"]["arr"]), border=True)
m3.metric(f"{tier_label('healthy')} · {h['healthy']['accounts']:,} accounts", money(h["healthy"]["arr"]), border=True)
m4.metric(
    f"Newly at risk · {h['moved_into_at_risk']['accounts']:,} accounts",
    money(h["moved_into_at_risk"]["arr"]),
    border=True,
    help="At risk now, but not 4 weeks ago.",
)

# ---- The table -------------------------------------------------------------------------
if rows.is_empty():
    st.info(
        "**No accounts match these filters.** Try a wider renewal window, another owner or tier, "
        "switch off “Only falling trajectories”, or clear the search — or press Reset filters.",
        icon="🔍",
    )
    st.stop()

view = rows.with_columns(
    tier_label_expr("tier").alias("tier"),
    pl.when(pl.col("falling")).then(pl.lit("↘ ") + pl.col("falling_reason")).otherwise(pl.lit("")).alias("warning"),
    pl.col("drivers").fill_null("").alias("drivers"),
    pl.col("arr").round(0).cast(pl.Int64).alias("arr"),
    pl.col("change_4w").round(0).alias("change_4w"),
)
event = st.dataframe(
    view,
    key="grid",
    on_select="rerun",
    selection_mode="single-row",
    hide_index=True,
    height=min(40 + 40 * view.height, 720),
    row_height=40,
    placeholder="—",
    column_order=[
        "name", "score", "tier", "change_4w", "spark", "arr", "renewal_in_days", "drivers",
        "owner", "segment", "coverage", "warning", "account_id",
    ],
    column_config={
        "name": st.column_config.TextColumn("Account", pinned=True, width=160),
        "tier": st.column_config.TextColumn("Tier", width="small"),
        "score": st.column_config.ProgressColumn("Score", min_value=0, max_value=100, format="%.0f", width="small",
                                                  help="Health score, 0 (worst) to 100."),
        "change_4w": st.column_config.NumberColumn("Δ 4 wks", format="%+d", width="small",
                                                help="Score change over the last 4 weeks (blank: scored for less than 4 weeks)."),
        "spark": st.column_config.LineChartColumn("12 weeks", y_min=0, y_max=100, width="small",
                                                help="Weekly score, last 12 weeks."),
        "drivers": st.column_config.TextColumn("Why: the top two drivers", width=440),
        "arr": st.column_config.NumberColumn("ARR", format="$%,d", width="small"),
        "renewal_in_days": st.column_config.NumberColumn("Renews in", format="%d days", width="small"),
        "owner": st.column_config.TextColumn("Owner", width="small"),
        "segment": st.column_config.TextColumn("Segment", width="small"),
        "coverage": st.column_config.ProgressColumn("Data coverage", min_value=0, max_value=1, format="percent", width="small",
                                                     help="Share of the model's weight that had data for this account."),
        "warning": st.column_config.TextColumn("Early warning", width="medium"),
        "account_id": st.column_config.TextColumn("ID", width="small"),
    },
)
selected = event.selection.rows if event is not None else []
if selected:
    account_id = rows["account_id"][selected[0]]
    st.switch_page("app_pages/account.py", query_params={"account": account_id})

left, right = st.columns([3, 1], vertical_alignment="center")
left.caption(f"{rows.height:,} of {book.rows.height:,} accounts · {money(h['all']['arr'])} ARR in this view")
right.download_button(
    "Download CSV", to_csv(rows), file_name=f"at-risk-{book.as_of:%Y-%m-%d}.csv", mime="text/csv",
    icon=":material/download:", width="stretch",
)
