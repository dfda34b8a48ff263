"""The app shell's sidebar: which data, how fresh, which model, as of when, who am I."""

from __future__ import annotations

import polars as pl
import streamlit as st

from ui import data
from ui.fmt import TABLE_LABELS


def sidebar() -> None:
    book = data.load_book()
    with st.sidebar:
        if isinstance(book, data.Broken):
            st.markdown("**Data source**")
            if book.source_name:
                st.markdown(f"`{book.source_name}` — {book.source_text}")
            st.error(book.title)
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
        label = "Data freshness" + (f" — {stale.height} stale" if stale.height else " — all fresh")
        with st.expander(label, expanded=bool(stale.height)):
            lines = []
            for r in fresh.iter_rows(named=True):
                name = TABLE_LABELS.get(r["table"], r["table"])
                if r["latest"] is None:
                    lines.append(f"- {name}: {r['note']}")
                    continue
                mark = "⚠️ **stale**" if r["stale"] else "✅" if r["stale"] is False else "·"
                lines.append(f"- {name}: latest {r['latest']:%d %b %Y}, {r['note'].split(' (')[0]} {mark}")
            st.markdown("\n".join(lines))
            st.caption("Stale = the latest record is older than the feed's expected delay.")
        if book.result.errors:
            st.warning(f"{len(book.result.errors)} data problem(s) in this source")
        owners, who, how = data.my_owners(book)
        if who:
            st.caption(f"You: {who} ({how})" + (f" → {', '.join(owners)}" if owners else " — owns no accounts here"))
        else:
            st.caption("Not signed in: set CHI_USER (or app.local_user in secrets) to use “My accounts”.")
