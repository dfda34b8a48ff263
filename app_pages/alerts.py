"""Alerts: who was told what and when (delivered / failed / waiting / acknowledged), an
Acknowledge button, and the latest scheduled run's report. Alerts are made by
`python -m health run` (docs/alerts.md); acknowledging calls health.alerts.acknowledge,
which decides who may.
"""

import datetime as dt

import polars as pl
import streamlit as st

from health.alerts import acknowledge, alert_history
from health.roles import PermissionDenied
from health.yaml_config import ConfigError
from ui import actions as ui
from ui import alerts as ua

STATUS_WORDS = {"delivered": "✅ delivered", "failed": "❌ failed", "pending": "⏳ waiting", "sending": "… sending",
                "expired": "⌛ expired", "skipped": "⏭ not sent (--no-send)"}
SEVERITY_WORDS = {"critical": "🔴 critical", "warning": "🟠 warning", "info": "🔵 info"}
RUN_CODES = {0: "✅ ok", 1: "⚠️ some step failed (kept, retried by the next run)", 2: "❌ bad configuration"}

st.title("Alerts")
st.caption(
    "What the daily run (`python -m health run`) told whom, over which channel, and whether it arrived. "
    "A failed delivery is retried by the next run; acknowledge an alert once it is being handled."
)

try:
    user = ui.acting_user()
    store = ua.get_alert_store()
except ConfigError as exc:
    ui.show_config_error(exc, "The settings (config/roles.yaml or config/crm.yaml)")
    st.stop()

flash = st.session_state.pop("alerts_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])

# ---- The latest run -----------------------------------------------------------------------
runs = store.runs()
st.subheader("Latest run")
if runs.is_empty():
    st.info("No scheduled run yet. Run `python -m health run` (daily, e.g. from cron) — see docs/alerts.md.")
else:
    last = runs.row(-1, named=True)
    c = st.columns(4)
    c[0].metric("Day scored", f"{last['as_of']:%d %b %Y}", border=True)
    c[1].metric("Runs that day", last["run_count"] or 1, border=True)
    c[2].metric("Alerts fired", last["fired"] if last["fired"] is not None else "—", border=True)
    c[3].metric("Outcome", RUN_CODES.get(last["last_code"], "—") if last["last_code"] is not None else "—", border=True)
    st.caption(f"Last run at {(last['last_run_at'] or '')[:19].replace('T', ' ')} UTC"
               + (f" · model {last['model_hash']}" if last["model_hash"] else "")
               + (f" · source {last['source']}" if last["source"] else ""))
    if last["last_report"]:
        st.code(last["last_report"], language=None)

# ---- History --------------------------------------------------------------------------------
st.subheader("Alert history")
counts = store.delivery_counts()
if counts:
    cols = st.columns(len(STATUS_WORDS))
    for col, (status, words) in zip(cols, STATUS_WORDS.items()):
        col.metric(words, counts.get(status, 0))

f = st.columns([1, 1, 1.4, 1])
status = f[0].selectbox("Delivery", [None, *STATUS_WORDS], format_func=lambda s: "All" if s is None else STATUS_WORDS[s],
                        key="al_status")
days = f[1].selectbox("Fired in the last", [7, 30, 90, 365, None], index=2, key="al_days",
                      format_func=lambda d: "any time" if d is None else f"{d} days")
who = f[2].text_input("Recipient (e-mail or channel)", key="al_recipient", placeholder="e.g. maria.garcia@example.com")
only_open = f[3].toggle("Not acknowledged only", key="al_open")

latest_day = runs["as_of"].max() if not runs.is_empty() else dt.date.today()
since = None if days is None else latest_day - dt.timedelta(days=days)
hist = alert_history(store, status=status, since=since, recipient=who.strip() or None)
if only_open:
    hist = hist.filter(pl.col("acknowledged_at").is_null())

if hist.is_empty():
    st.caption("No alerts match." if counts else "No alerts yet.")
else:
    shown = hist.select(
        pl.col("as_of").alias("Day"),
        pl.col("severity").replace_strict(SEVERITY_WORDS, default=pl.col("severity")).alias("Severity"),
        pl.col("title").alias("Alert"),
        pl.col("account").alias("Account"),
        (pl.lit("/account?account=") + pl.col("account_id")).alias("Open"),
        pl.col("reason").alias("Why"),
        pl.col("recipient").fill_null("nobody routed").alias("Told"),
        pl.col("channel").alias("Via"),
        pl.col("status").replace_strict(STATUS_WORDS, default=pl.col("status")).alias("Delivery"),
        pl.col("attempts").alias("Attempts"),
        pl.col("delivered_at").alias("Delivered at"),
        pl.col("error").alias("Error"),
        pl.when(pl.col("acknowledged_by").is_not_null())
        .then(pl.col("acknowledged_by") + pl.lit(" · ") + pl.col("acknowledged_at").dt.strftime("%d %b %H:%M")
              + pl.when(pl.col("ack_note").fill_null("") != "").then(pl.lit(" — ") + pl.col("ack_note")).otherwise(pl.lit("")))
        .alias("Acknowledged"),
        pl.col("alert_id").alias("#"),
    )
    st.dataframe(
        shown, hide_index=True, key="alert_history",
        height=min(38 + 35 * shown.height, 560),
        column_config={
            "Day": st.column_config.DateColumn(format="DD MMM YYYY", width="small"),
            "Open": st.column_config.LinkColumn(display_text="open", width="small"),
            "Why": st.column_config.TextColumn(width="large"),
            "Delivered at": st.column_config.DatetimeColumn(format="DD MMM HH:mm"),
            "#": st.column_config.NumberColumn(width="small", format="%d"),
        },
    )
    n_alerts = hist["alert_id"].n_unique()
    st.caption(f"{n_alerts} alert(s), {hist.height} deliveries, newest first.")

# ---- Acknowledge ---------------------------------------------------------------------------------
open_alerts = (
    alert_history(store, since=since).filter(pl.col("acknowledged_at").is_null())
    .unique("alert_id", keep="first", maintain_order=True)
)
st.subheader("Acknowledge")
if open_alerts.is_empty():
    st.caption("Every alert shown has been acknowledged.")
else:
    labels = {
        int(r["alert_id"]): f"#{r['alert_id']} · {r['as_of']:%d %b} · {r['account']} — {r['title']}"
        for r in open_alerts.iter_rows(named=True)
    }
    with st.form("ack_form", clear_on_submit=True):
        pick = st.selectbox("Alert", list(labels), format_func=labels.get, key="ack_alert")
        note = st.text_input("Note (optional)", key="ack_note", placeholder="e.g. called the sponsor, renewal call booked")
        go = st.form_submit_button("Acknowledge", type="primary")
    st.caption(f"Acting as **{user.label}**: you may acknowledge an alert sent to you, or one on an account your "
               "role covers (config/roles.yaml).")
    if go and pick is not None:
        try:
            new = acknowledge(store, int(pick), user, note.strip())
        except PermissionDenied as exc:
            st.error(str(exc), icon=":material/block:")
        except KeyError:
            st.error(f"Alert #{pick} no longer exists.")
        else:
            st.session_state["alerts_flash"] = (
                ("success", f"Alert #{pick} acknowledged by {user.label}.") if new
                else ("info", f"Alert #{pick} was already acknowledged; the first acknowledgement is kept.")
            )
            st.rerun()
