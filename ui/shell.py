"""The app shell's sidebar: which data, how fresh, which model, as of when, who am I."""

from __future__ import annotations

import polars as pl
import streamlit as st

from ui import data
from ui.fmt import TABLE_LABELS


STYLE = """
<style>
/* A CSM's table needs the width: trim Streamlit's generous page margins. */
[data-testid="stMainBlockContainer"] { padding-left: 2rem; padding-right: 2rem; padding-top: 2.5rem; }
</style>
"""


def style() -> None:
    st.html(STYLE)


def sidebar() -> None:
    book = data.load_book()
    with st.sidebar:
        if isinstance(book, data.Broken):
            st.markdown("**Data source**")
            if book.source_name:
                st.markdown(f"`{book.source_name}` — {book.source_text}")
            st.error(book.title)
            if st.button("Reload data", icon=":material/refresh:"):
                data.reload()
                st.rerun()
            return
        st.markdown("**Data source**")
        st.markdown(f"`{book.source_name}` — {book.source_text}")
        st.markdown(
            f"Scores as of **{book.as_of:%d %b %Y}** (the latest day in the data)  \n"
            f"Health model `{book.model_hash}`"
            + (f" · version {book.model.version}" if book.model.version is not None else "")
        )
        fresh = book.freshness
        stale = fresh.filter(pl.col("stale").fill_null(False))
        if stale.height:
            names = ", ".join(
                f"{TABLE_LABELS.get(r['table'], r['table'])} (latest {r['latest']:%d %b}, {r['age_days']} days ago)"
                for r in stale.iter_rows(named=True)
            )
            st.markdown(f":orange[**Stale:** {names}]")
        else:
            st.markdown(":green[All feeds fresh]")
        with st.expander("Freshness per table"):
            lines = []
            for r in fresh.iter_rows(named=True):
                name = TABLE_LABELS.get(r["table"], r["table"])
                if r["latest"] is None:
                    lines.append(f"{name}: {r['note']}")
                    continue
                state = " · :orange[stale]" if r["stale"] else " · :green[fresh]" if r["stale"] is False else ""
                lines.append(f"{name}: {r['latest']:%d %b %Y}{state}")
            st.markdown("  \n".join(lines))
            limits = [
                f"{TABLE_LABELS.get(r['table'], r['table'])} {r['stale_after_days']} d"
                for r in fresh.iter_rows(named=True) if r["stale_after_days"] is not None
            ]
            st.caption(
                "Latest record per table. Stale: older than the feed's expected delay ("
                + (", ".join(limits) or "none set") + "; `expected_latency:` in config/sources.yaml)."
            )
        if book.result.errors:
            st.warning(f"{len(book.result.errors)} data problem(s) in this source")
        loaded = book.result.loaded_at
        if st.button("Reload data", icon=":material/refresh:", help=f"Loaded {loaded:%d %b %Y %H:%M} UTC; reloads every 10 minutes."):
            data.reload()
            st.rerun()
        owners, who, how = data.my_owners(book)
        if who:
            st.caption(f"You: {who} ({how})" + (f" → {', '.join(owners)}" if owners else " — owns no accounts here"))
        else:
            st.caption("Not signed in: set CHI_USER (or app.local_user in secrets) to use “My accounts”.")
