"""Health model (ops): edit weights, thresholds and score points; preview the effect on
the book and on past renewals; publish with a reason; version history with diffs; roll
back. Everyone else sees the model read-only. The rules are enforced in
health/model_versions.py (ops role, reason, validation, stale drafts), not here."""

from __future__ import annotations

import sqlite3

import polars as pl
import streamlit as st

from health import model_versions as mv
from health.model_loader import LoadedModel, ModelError, parse_model
from health.roles import PermissionDenied
from health.yaml_config import ConfigError
from ui import data
from ui.fmt import money, tier_label

EDITOR_KEYS = ("weights_editor", "tiers_editor", "points_editor", "yaml_editor", "publish_reason")
ALL_SEGMENTS = "All segments (default)"

st.title("Health model")
path = data.model_path()
try:
    store = data.model_store()
    published = mv.ensure_recorded(path, store)  # records the file as version 1 the first time
    versions = mv.history(store, path)
except FileNotFoundError:
    st.error(f"**No health model at `{path}`.** Restore weights.yaml (or point CHI_MODEL at one) and reload.")
    st.stop()
except (OSError, sqlite3.Error) as exc:
    st.error(f"**The model version store `{data.state_db_path()}` cannot be used:** {exc}")
    st.stop()
current_text = published.text

st.caption(
    f"`{path.name}` · published **version {published.number}** (`{published.hash}`) · "
    f"{published.who}, {published.at:%d %b %Y %H:%M} UTC · “{published.reason}”"
)

# -- who is looking -----------------------------------------------------------------------
try:
    roles = data.get_roles()
except ConfigError as exc:
    st.error("**config/roles.yaml has errors**, so nobody can change the model until it is fixed.")
    st.code("\n".join(str(i) for i in exc.issues), language=None)
    roles = None
act_as = None
if roles is not None and roles.may_impersonate and not data.auth_enabled():
    people = [u.email for u in roles.users()]
    me, _ = data.current_user()  # CHI_USER / app.local_user: who this laptop says it is
    act_as = st.selectbox(
        "Acting as (demo mode: no sign-in; see config/roles.yaml)",
        [None, *people],
        index=people.index(me.lower()) + 1 if me and me.lower() in people else 0,
        format_func=lambda e: roles.local_user().label if e is None else roles.user(e).label,
        key="act_as",
    ) or ""  # "" = the local user, picked on purpose
user = data.role_user(act_as) if roles is not None else None
editor = mv.can_edit_model(user)
if not editor:
    who = user.label if user is not None else "Nobody"
    st.info(
        f"**Read-only.** You are {who}. Changing the health model needs the **ops** role in "
        "config/roles.yaml; ask someone in CS operations. You can read the model, its history and "
        "every change below."
    )

flash = st.session_state.pop("model_flash", None)
if flash:
    st.success(flash)


def reset_draft(text: str, number: int, hash_: str) -> None:
    for k in EDITOR_KEYS:
        st.session_state.pop(k, None)
    st.session_state["model_base"] = {"text": text, "number": number, "hash": hash_}


if "model_base" not in st.session_state:
    reset_draft(current_text, published.number, published.hash)
base = st.session_state["model_base"]
try:
    base_loaded: LoadedModel | None = parse_model(base["text"], file=path.name)
except ModelError as exc:
    base_loaded = None
    st.error(f"**The published model has errors** — fix them in the YAML tab ({len(exc.issues)} issue(s)):")
    st.code("\n".join(str(i) for i in exc.issues), language=None)


def rows_height(n: int) -> int:
    """A table tall enough to show `n` rows without scrolling."""
    return (n + 1) * 35 + 3


def frame(value) -> pl.DataFrame:  # noqa: ANN001 - what st.data_editor hands back
    return value if isinstance(value, pl.DataFrame) else pl.from_pandas(value)


# -- suggested weights (a draft for ops to judge; never applied by itself) ---------------
if editor:
    with st.expander("Suggest weights from past renewals"):
        st.caption(
            "Fits each segment's weights to what happened at past renewals (a regularised logistic "
            "regression on the signals' sub-scores 90 days before). Trust the cross-validated AUC — each "
            "renewal scored by a fit that never saw it — and compare the draft's preview below before publishing."
        )
        if st.button("Fit weights", key="suggest_fit"):
            st.session_state["suggest_on"] = True
        if st.session_state.get("suggest_on"):
            book = data.book_or_stop()
            suggestion = data.suggestion_view(book)
            if suggestion is None:
                st.info("No past renewals (outcomes) in the data: nothing to fit to.")
            else:
                st.dataframe(
                    suggestion.table(),
                    hide_index=True,
                    column_config={
                        "published AUC": st.column_config.NumberColumn(format="%.3f"),
                        "suggested AUC (cross-validated)": st.column_config.NumberColumn(format="%.3f"),
                    },
                )
                if st.button("Load the suggestion as my draft", key="suggest_load", disabled=not suggestion.changes):
                    st.session_state["yaml_editor"] = suggestion.text
                    st.rerun()

# -- the editors ----------------------------------------------------------------------------
tab_form, tab_yaml = st.tabs(["Weights, tiers and score points", "YAML (power users)"])
with tab_yaml:
    yaml_text = st.text_area(
        path.name, value=base["text"], height=560, key="yaml_editor", disabled=not editor,
        help="The whole model file. Validated as you type, like `python -m health validate`.",
    )  # fmt: skip
yaml_dirty = editor and yaml_text != base["text"]

changes: list = []
with tab_form:
    if base_loaded is None:
        st.warning("The form needs a valid model: use the YAML tab.")
    else:
        model = base_loaded.model
        segs = list(model.segments)
        if yaml_dirty:
            st.info("You are editing the YAML directly: the form is locked until the YAML is back to the published text.")
        locked = (not editor) or yaml_dirty
        st.markdown("**Signal weights per segment** — a blank cell leaves the signal out of that segment.")
        weights = pl.DataFrame(
            {
                "signal": list(model.signals),
                "label": [s.label for s in model.signals.values()],
                **{seg: [model.segments[seg].weights.get(s) for s in model.signals] for seg in segs},
            },
            schema={"signal": pl.String, "label": pl.String, **{seg: pl.Float64 for seg in segs}},
        )
        wcfg = {
            "signal": st.column_config.TextColumn("Signal", disabled=True),
            "label": st.column_config.TextColumn("What it measures", disabled=True, width="medium"),
            **{seg: st.column_config.NumberColumn(seg, min_value=0.0, step=0.25) for seg in segs},
        }
        if locked:
            st.dataframe(weights, hide_index=True, column_config=wcfg, height=rows_height(weights.height), placeholder="—")
            w_edit = weights
        else:
            w_edit = frame(st.data_editor(weights, hide_index=True, column_config=wcfg, height=rows_height(weights.height),
                                          placeholder="—", key="weights_editor"))  # fmt: skip

        st.markdown(
            "**Tier thresholds** — below *at risk* is at risk, below *watch* is watch. A segment with blank "
            "cells follows the default."
        )
        tiers = pl.DataFrame(
            {
                "scope": [ALL_SEGMENTS, *segs],
                "at_risk": [model.tiers.at_risk, *[(model.segments[s].tiers.at_risk if model.segments[s].tiers else None) for s in segs]],
                "watch": [model.tiers.watch, *[(model.segments[s].tiers.watch if model.segments[s].tiers else None) for s in segs]],
            },
            schema={"scope": pl.String, "at_risk": pl.Float64, "watch": pl.Float64},
        )
        tcfg = {
            "scope": st.column_config.TextColumn("Segment", disabled=True),
            "at_risk": st.column_config.NumberColumn("At risk below", min_value=0.0, max_value=100.0, step=1.0),
            "watch": st.column_config.NumberColumn("Watch below", min_value=0.0, max_value=100.0, step=1.0),
        }
        if locked:
            st.dataframe(tiers, hide_index=True, column_config=tcfg, placeholder="default")
            t_edit = tiers
        else:
            t_edit = frame(st.data_editor(tiers, hide_index=True, column_config=tcfg, placeholder="default", key="tiers_editor"))

        st.markdown(
            "**Score points** — each signal's raw value → 0..100 sub-score, straight lines between points, "
            "flat beyond them. Signals scored by percentile within their segment have no points (add some to "
            "switch one to points)."
        )
        points = pl.DataFrame(
            [
                {"signal": name, "raw": float(x), "sub_score": float(y)}
                for name, sig in model.signals.items()
                if sig.score != "percentile"
                for x, y in sig.score
            ],
            schema={"signal": pl.String, "raw": pl.Float64, "sub_score": pl.Float64},
        )
        pcfg = {
            "signal": st.column_config.SelectboxColumn("Signal", options=list(model.signals), required=True),
            "raw": st.column_config.NumberColumn("Raw value", required=True),
            "sub_score": st.column_config.NumberColumn("Sub-score", min_value=0.0, max_value=100.0, required=True),
        }
        if locked:
            st.dataframe(points, hide_index=True, column_config=pcfg, height=300)
            p_edit = points
        else:
            p_edit = frame(
                st.data_editor(points, hide_index=True, column_config=pcfg, num_rows="dynamic", height=300, key="points_editor")
            )

        if editor and not yaml_dirty:
            w_map = {seg: {r["signal"]: r[seg] for r in w_edit.iter_rows(named=True)} for seg in segs}
            rows = {r["scope"]: r for r in t_edit.iter_rows(named=True)}
            g = rows.get(ALL_SEGMENTS, {})
            g_pair = (
                g.get("at_risk") if g.get("at_risk") is not None else model.tiers.at_risk,
                g.get("watch") if g.get("watch") is not None else model.tiers.watch,
            )
            t_map: dict = {None: g_pair}
            for s in segs:
                r = rows.get(s, {})
                a, w = r.get("at_risk"), r.get("watch")
                t_map[s] = None if a is None and w is None else (a if a is not None else g_pair[0], w if w is not None else g_pair[1])
            p_map: dict = {}
            clean = p_edit.filter(pl.col("signal").is_not_null())
            for name, sig in model.signals.items():
                mine = clean.filter(pl.col("signal") == name).sort("raw")
                pts = [(r["raw"], r["sub_score"]) for r in mine.iter_rows(named=True)]
                if sig.score == "percentile" and not pts:
                    continue
                p_map[name] = pts
            try:
                changes = mv.form_changes(model, weights=w_map, tiers=t_map, scores=p_map)
            except (ValueError, TypeError) as exc:
                st.error(f"Cannot read the form: {exc}")

# -- the draft: validation, diff, what-if, publish -----------------------------------------
draft_text = base["text"]
if editor and yaml_dirty:
    draft_text = yaml_text
elif editor and changes:
    try:
        draft_text = mv.edit_weights(base["text"], changes)
    except mv.EditError as exc:
        st.error(f"Cannot apply the change: {exc}")

if base["hash"] != published.hash:
    if draft_text == base["text"]:  # nothing edited yet: simply follow the published model
        reset_draft(current_text, published.number, published.hash)
        st.rerun()
    newer = published
    st.warning(
        f"**Your draft is stale.** You started from version {base['number']} (`{base['hash']}`), but version "
        f"{newer.number} was published since by {newer.who} (“{newer.reason}”). Publishing would overwrite it, "
        "so it will be refused: start again from the published model."
    )
    if st.button("Discard my draft and start from the published model", key="rebase"):
        reset_draft(current_text, published.number, published.hash)
        st.rerun()

if editor:
    st.subheader("Draft")
    draft: LoadedModel | None = None
    if draft_text == base["text"]:
        st.caption("No changes yet: edit the weights, thresholds or points above (or the YAML) to see their effect here.")
    else:
        try:
            draft = parse_model(draft_text, file=path.name)
        except ModelError as exc:
            errors = [i for i in exc.issues if i.severity == "error"]
            st.error(f"**The draft has {len(errors)} problem(s)** — it cannot be published until they are fixed:")
            st.code("\n".join(str(i) for i in exc.issues), language=None)
        with st.expander(f"Changes to {path.name}", expanded=draft is None):
            st.code(mv.diff(base["text"], draft_text, f"version {base['number']}", "draft"), language="diff")

    wi = None
    if draft is not None:
        st.success(f"The draft is valid ({len(draft.model.signals)} signals, {len(draft.model.segments)} segments).")
        for warning in draft.warnings:
            st.warning(str(warning))
        book = data.load_book()
        if isinstance(book, data.Broken):
            st.warning(f"No preview: {book.title}.")
        elif book.model_hash not in mv.text_hashes(published.text):
            st.info("The app is still loading the published model: reload to preview.")
        else:
            wi = data.what_if_view(book, draft)
            st.markdown(f"**What changes** — the book as of {wi.as_of:%d %b %Y}, published model vs draft")
            into = wi.changes.filter(pl.col("tier_draft") == "at_risk")
            out_of = wi.changes.filter(pl.col("tier_published") == "at_risk")
            m = st.columns(4)
            m[0].metric("Accounts changing tier", f"{wi.n_changed:,}", f"of {wi.n_accounts:,}", delta_color="off", delta_arrow="off", border=True)
            m[1].metric("ARR changing tier", money(wi.arr_changed), delta_color="off", border=True)
            m[2].metric("Into at risk", f"{into.height:,}", money(float(into['arr'].sum() or 0)), delta_color="off", delta_arrow="off", border=True)
            m[3].metric("Out of at risk", f"{out_of.height:,}", money(float(out_of['arr'].sum() or 0)), delta_color="off", delta_arrow="off", border=True)

            def grid(value: str) -> pl.DataFrame:
                g = wi.table(value)
                g = g.with_columns(pl.col("from_tier").map_elements(tier_label, return_dtype=pl.String))
                return g.rename({"from_tier": "Published → draft", **{t: tier_label(t) for t in g.columns if t != "from_tier"}})

            c1, c2 = st.columns(2)
            with c1:
                st.caption("Tier migration — accounts")
                st.dataframe(grid("accounts"), hide_index=True)
            with c2:
                st.caption("Tier migration — ARR")
                arr_grid = grid("arr")
                st.dataframe(
                    arr_grid, hide_index=True,
                    column_config={c: st.column_config.NumberColumn(c, format="$%,.0f") for c in arr_grid.columns[1:]},
                )  # fmt: skip
            if wi.n_changed:
                st.caption(f"Accounts changing tier ({wi.n_changed:,}), largest ARR first")
                st.dataframe(
                    wi.changes.with_columns(
                        pl.col("tier_published").map_elements(tier_label, return_dtype=pl.String),
                        pl.col("tier_draft").map_elements(tier_label, return_dtype=pl.String),
                    ),
                    hide_index=True,
                                        column_config={
                        "account_id": "Account", "name": "Name", "segment": "Segment", "owner": "Owner",
                        "arr": st.column_config.NumberColumn("ARR", format="$%,.0f"),
                        "score_published": st.column_config.NumberColumn("Score now", format="%.0f"),
                        "score_draft": st.column_config.NumberColumn("Score (draft)", format="%.0f"),
                        "tier_published": "Tier now", "tier_draft": "Tier (draft)", "direction": "Direction",
                    },
                )  # fmt: skip
            else:
                st.caption("No account changes tier.")
            st.markdown("**Back-test** — each past renewal scored 90 days before it, published model vs draft")
            if wi.backtest is not None:
                compare = mv.backtest_table(wi.backtest["published"], wi.backtest["draft"])
                st.dataframe(compare, hide_index=True, height=rows_height(compare.height),
                                                          column_config={"figure": "Figure", "published": "Published", "draft": "Draft"})  # fmt: skip
            else:
                st.caption(f"No back-test: {wi.backtest_note}.")

        with st.form("publish_form"):
            reason = st.text_input("Why this change? (required; kept in the history)", key="publish_reason")
            go = st.form_submit_button("Publish", type="primary", key="publish_submit")
        if go:
            figures = wi.backtest["draft"] if wi is not None and wi.backtest is not None else None
            try:
                v = mv.publish(path, draft_text, user=user, reason=reason, base_hash=base["hash"], store=store,
                               backtest_figures=figures)  # fmt: skip
            except (PermissionDenied, mv.ReasonRequired, mv.StaleDraft, mv.NoChange) as exc:
                st.error(str(exc))
            except ModelError as exc:
                st.error("The draft has problems:")
                st.code("\n".join(str(i) for i in exc.issues), language=None)
            else:
                reset_draft(v.text, v.number, v.hash)
                st.session_state["model_flash"] = f"Published version {v.number} (`{v.hash}`). Scores use it from now on."
                st.session_state.pop("history_pick", None)
                st.rerun()

# -- history --------------------------------------------------------------------------------
st.subheader("Version history")


def auc_of(v: mv.Version) -> float | None:
    return ((v.backtest or {}).get("overall") or {}).get("auc")


st.dataframe(
    pl.DataFrame(
        {
            "version": [v.number for v in reversed(versions)],
            "when": [v.at.replace(tzinfo=None) for v in reversed(versions)],
            "who": [v.who for v in reversed(versions)],
            "what": [v.kind + (f" of version {v.restored_from}" if v.restored_from else "") for v in reversed(versions)],
            "why": [v.reason for v in reversed(versions)],
            "hash": [v.hash for v in reversed(versions)],
            "auc": [auc_of(v) for v in reversed(versions)],
        },
        schema={"version": pl.Int64, "when": pl.Datetime("us"), "who": pl.String, "what": pl.String,
                "why": pl.String, "hash": pl.String, "auc": pl.Float64},  # fmt: skip
    ),
    hide_index=True,
        column_config={
        "version": "Version", "when": st.column_config.DatetimeColumn("When (UTC)", format="D MMM YYYY HH:mm"),
        "who": "Who", "what": "What", "why": "Why", "hash": "Hash",
        "auc": st.column_config.NumberColumn("Back-test AUC", format="%.3f", help="At the time it was published"),
    },
)  # fmt: skip

numbers = [v.number for v in reversed(versions)]
pick = st.selectbox(
    "Show a version", numbers, key="history_pick",
    format_func=lambda n: f"Version {n}" + (" (published)" if n == published.number else ""),
)  # fmt: skip
chosen = next(v for v in versions if v.number == pick)
st.caption(f"Version {chosen.number} · {chosen.kind} · {chosen.who} · {chosen.at:%d %b %Y %H:%M} UTC · “{chosen.reason}”")
if chosen.diff:
    st.code(chosen.diff, language="diff")
else:
    st.caption("The first recorded version: no earlier text to compare with.")
if chosen.number != published.number:
    with st.expander(f"Compare version {chosen.number} with the published model"):
        st.code(mv.diff(chosen, published) or "(the same text)", language="diff")
    if editor:
        with st.form("rollback_form"):
            why = st.text_input(f"Why roll back to version {chosen.number}? (required)", key="rollback_reason")
            back = st.form_submit_button(f"Roll back to version {chosen.number}", key="rollback_submit")
        if back:
            try:
                v = mv.rollback(path, chosen.number, user=user, reason=why, store=store, base_hash=base["hash"])
            except (PermissionDenied, mv.ReasonRequired, mv.StaleDraft, mv.NoChange, mv.UnknownVersion) as exc:
                st.error(str(exc))
            except ModelError as exc:
                st.error("That version does not validate any more:")
                st.code("\n".join(str(i) for i in exc.issues), language=None)
            else:
                reset_draft(v.text, v.number, v.hash)
                st.session_state["model_flash"] = (
                    f"Rolled back: version {v.number} restores the text of version {chosen.number} (`{v.hash}`)."
                )
                st.session_state.pop("history_pick", None)
                st.session_state.pop("rollback_reason", None)
                st.rerun()
