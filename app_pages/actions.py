"""Actions & approvals: what waits for a manager, what is not yet in Salesforce (and why),
and who logged what. Approve / reject / retry / sync call the health/ functions, which
enforce the roles (docs/actions-ui.md); this page only mirrors them.
"""

import polars as pl
import streamlit as st

from health.actions import STATUS_WORDS, ActionError
from health.roles import PermissionDenied, allowed
from health.yaml_config import ConfigError
from ui import actions as ui
from ui import data

st.title("Actions & approvals")
st.caption(
    "Everything CSMs logged from the account pages: saved here first, then sent to Salesforce by the outbox "
    "(one Task per action, however often it is retried)."
)

try:
    user = ui.acting_user()
    roles = data.get_roles()
    store = ui.get_store()
    crm = ui.get_crm()
except ConfigError as exc:
    ui.show_config_error(exc, "The action settings (config/roles.yaml or config/crm.yaml)")
    st.stop()
book = data.load_book()
playbooks = None
if isinstance(book, data.Book):
    try:
        playbooks = ui.get_playbooks(book)
    except ConfigError:
        playbooks = None  # labels fall back to plain words; the account page shows the errors

flash = st.session_state.pop("actions_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])
ui.crm_banner(crm)

counts = store.status_counts()
METRIC_WORDS = {"needs_approval": "Needs approval", "pending": "Waiting to sync", "failed": "Sync failed",
                "synced": "Synced", "rejected": "Rejected"}
c = st.columns(5)
for col, (status, words) in zip(c, METRIC_WORDS.items()):
    col.metric(words, counts.get(status, 0), border=True)

# ---- Waiting for approval ------------------------------------------------------------------------
waiting = list(reversed(store.actions(statuses=["needs_approval"])))  # oldest first
st.subheader(f"Waiting for approval ({len(waiting)})")
approver_roles = roles.approver_roles()
is_approver = any(r in user.roles for r in approver_roles)
if not waiting:
    st.caption("Nothing waits for approval.")
elif not is_approver:
    st.info(
        f"**Read-only.** You are {user.label}. Approving or rejecting needs the "
        f"{' or '.join(approver_roles) or 'approver'} role for the account's team (config/roles.yaml); "
        "the CSM's manager sees these with Approve / Reject buttons.",
        icon=":material/visibility:",
    )

for a in waiting:
    why_not = ui.why_not_approve(roles, user, a)
    with st.container(border=True):
        left, right = st.columns([1.1, 1])
        with left:
            st.markdown(
                f"#### {ui.md(a.account_name or a.account_id)} · {ui.md(a.play_title or 'ad-hoc action')}\n"
                f":orange-badge[:material/approval: Needs {ui.md(a.approval_role)} approval] "
                f":gray-badge[{ui.md(a.account_owner or 'no owner')}'s account]"
            )
            st.page_link("app_pages/account.py", label="Open the account", icon=":material/open_in_new:",
                         query_params={"account": a.account_id})
            p = a.payload
            st.markdown(
                f"**{ui.type_label(playbooks, a.action_type)}:** “{ui.md(a.subject)}”  \n"
                + (f"Due {p['due_date']} · " if p.get("due_date") else "")
                + f"owner {ui.md(p.get('owner_email') or '—')} · priority {p.get('priority', 'normal')}  \n"
                + f"Logged by {ui.md(a.created_by)} on {ui.when(a.created_at)}"
            )
            if p.get("body"):
                st.text(p["body"])
            if why_not is None:
                with st.form(f"decide:{a.id}", border=False):
                    comment = st.text_input("Comment", key=f"comment:{a.id}",
                                            placeholder="Optional to approve; required to reject")
                    b1, b2 = st.columns(2)
                    approve = b1.form_submit_button("Approve and send", key=f"approve:{a.id}", type="primary",
                                                    icon=":material/check:", width="stretch")
                    reject = b2.form_submit_button("Reject", key=f"reject:{a.id}", icon=":material/close:",
                                                   width="stretch")
                if approve or reject:
                    try:
                        if approve:
                            done = store.approve(user, a.id, roles, comment=comment)
                        else:
                            done = store.reject(user, a.id, roles, comment=comment)
                    except (PermissionDenied, ActionError) as exc:
                        st.error(str(exc))
                    else:
                        if approve:
                            problem = ui.push(store, crm, user, [done.id])
                            done = store.get(done.id)
                            msg = (f"Approved “{done.subject}” — {done.status_text}." if crm.connected
                                   else f"Approved “{done.subject}” — it waits in the outbox: {ui.NOT_CONNECTED}.")
                            st.session_state["actions_flash"] = ("error", problem) if problem else (
                                ("success" if done.status == "synced" else "warning"), msg)
                        else:
                            st.session_state["actions_flash"] = ("info", f"Rejected “{done.subject}”: it will not be sent.")
                        st.rerun()
            else:
                can = [u.name for u in roles.users() if ui.why_not_approve(roles, u, a) is None]
                st.caption(f":material/lock: {ui.md(why_not)}"
                           + (f" — {ui.md(', '.join(can))} can approve it." if can else ""))
        with right:
            if a.evidence:
                st.markdown("**Evidence the CSM saw**")
                st.markdown(ui.evidence_markdown(a.evidence))
            else:
                st.caption("No evidence snapshot (an ad-hoc action).")

# ---- Outbox ------------------------------------------------------------------------------------------
outbox = store.outbox(("pending", "failed"))
st.subheader(f"Not yet in Salesforce ({len(outbox)})")
may_sync_all = allowed(user, "sync")
mine = [a.id for a in outbox if allowed(user, "retry", a.account) or allowed(user, "act", a.account)]
left, right = st.columns([3, 1], vertical_alignment="center")
if not outbox:
    left.caption("Nothing waits: every approved action is in Salesforce.")
elif not crm.connected:
    left.caption(f"{ui.NOT_CONNECTED}. “Sync now” works once it is connected.")
elif may_sync_all:
    left.caption("You may push everyone's waiting and failed actions (the `sync` permission); "
                 "a scheduled `python -m health sync` does the same.")
else:
    left.caption(f"You may push the {len(mine)} waiting or failed action(s) on your accounts; "
                 "everyone's needs the `sync` permission (CS operations).")
if right.button("Sync now", key="sync_now", type="primary", icon=":material/sync:", width="stretch",
                disabled=not crm.connected or not (may_sync_all or mine),
                help=None if crm.connected else ui.NOT_CONNECTED):
    problem = ui.push(store, crm, user, None if may_sync_all else mine, force=True)
    after = store.status_counts()
    st.session_state["actions_flash"] = ("error", problem) if problem else (
        "success" if not after["failed"] else "warning",
        f"Sync done: {after['synced']} synced, {after['failed']} failed, {after['pending']} waiting.")
    st.rerun()

failed = [a for a in outbox if a.status == "failed"]
for a in failed:
    with st.container(border=True):
        st.markdown(f"**{ui.md(a.account_name or a.account_id)}** · {ui.action_line(a, playbooks)}")
        st.error(f"{ui.md(a.last_error)}", icon=":material/sync_problem:")
        st.caption(
            f"{a.attempts} attempt(s) · kind: {a.error_kind} · "
            + ("retried automatically" + (f", next try {ui.when(a.next_attempt_at)}" if a.next_attempt_at else "")
               if a.error_retryable else "needs a fix (credentials, config/crm.yaml or the account's crm_id), then Retry")
        )
        ui.retry_button(a, store, crm, user, key=f"retry_outbox:{a.id}")
pending = [a for a in outbox if a.status == "pending"]
if pending:
    st.markdown(f"**Waiting to sync ({len(pending)})**")
    st.dataframe(ui.actions_frame(pending, playbooks).drop("Status", "Detail"), hide_index=True,
                 column_config={"Account": ui.ACCOUNT_LINK,
                                "When": st.column_config.DatetimeColumn("When (UTC)", format="DD MMM YYYY HH:mm")})

# ---- Recent actions by person ---------------------------------------------------------------------
st.subheader("Recent actions")
recent = store.actions(limit=500)
if not recent:
    st.caption("No actions logged yet. Open an account and take action on one of its recommended plays.")
else:
    people = sorted({a.created_by for a in recent})
    pick = st.selectbox("Logged by", [None, *people], key="recent_by",
                        format_func=lambda e: "Everyone" if e is None else e)
    shown = [a for a in recent if pick is None or a.created_by == pick]
    frame = ui.actions_frame(shown, playbooks)
    by_person = (
        ui.actions_frame(recent, playbooks)
        .group_by("Logged by")
        .agg(pl.len().alias("Actions"), *[(pl.col("Status") == STATUS_WORDS[s]).sum().alias(STATUS_WORDS[s])
                                          for s in ("needs_approval", "pending", "failed", "synced", "rejected")])
        .sort("Actions", descending=True)
    )
    st.dataframe(frame, hide_index=True, key="recent_actions",
                 column_config={"Account": ui.ACCOUNT_LINK,
                                "When": st.column_config.DatetimeColumn("When (UTC)", format="DD MMM YYYY HH:mm"),
                                "Subject": st.column_config.TextColumn(width="large")})
    with st.expander(f"By person ({len(people)})"):
        st.dataframe(by_person, hide_index=True)

decisions = store.decisions(limit=200)
if decisions:
    st.markdown(f"**Plays dismissed ({len(decisions)})**")
    st.dataframe(ui.decisions_frame(decisions), hide_index=True,
                 column_config={"Account": ui.ACCOUNT_LINK,
                                "When": st.column_config.DatetimeColumn("When (UTC)", format="DD MMM YYYY HH:mm")})
