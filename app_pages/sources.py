"""Sources & uploads (ops): how fresh each canonical table is, and files uploaded by hand.

Per table: the rows loaded (from the source and from uploads), the latest record, when the
source was loaded, and whether the feed is late against its expected latency
(`expected_latency:` in config/sources.yaml). Below, a file (CSV / Excel / Parquet) can
be uploaded for any canonical table — the exec touchpoint spreadsheet, say — with a
mapping editor (their column -> canonical column, date formats, decimal mark) and a
preview of every problem the data contract finds. Nothing counts until "Accept": then the
rows that pass are stored under data/uploads/<table>/ and join the book on the next load.
The logic is in health.uploads; this page only drives it.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from health import uploads as up
from health.schema import TABLES
from sources.readers import read_any
from ui import data
from ui.fmt import TABLE_LABELS

KEEP = "(keep as an extra column)"
FILE_KEY = "up_file"
# Session state: the file being staged, {"name": ..., "data": bytes} (st.file_uploader
# fills it; a test can seed it). A comment, not a string: Streamlit would print a string.


def label(table: str) -> str:
    return f"{TABLE_LABELS.get(table, table)} ({table})"


st.title("Sources & uploads")
st.caption(
    "How fresh each table is, and files uploaded by hand for any table. An upload is checked "
    "against the data contract and shown in full before anything is stored; accepted rows join "
    "the source's rows on the next load."
)

book = data.load_book()
if isinstance(book, data.Broken):
    data.show_broken(book)
    st.stop()

folder = data.uploads_dir()
flash = st.session_state.pop("up_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])
pending = st.session_state.pop("up_pending", None)  # "Replace" pressed on an accepted upload
if pending:
    st.session_state["up_table"], st.session_state["up_replaces"] = pending

accepted = up.list_uploads(folder)

# ---- Freshness per table -----------------------------------------------------------------
st.subheader("Tables")
uploaded_rows: dict[str, int] = {}
last_upload: dict[str, str] = {}
for u in accepted:
    uploaded_rows[u.table] = uploaded_rows.get(u.table, 0) + int(u.manifest.get("rows_accepted") or 0)
    last_upload[u.table] = max(last_upload.get(u.table, ""), str(u.manifest.get("uploaded_at", ""))[:16].replace("T", " "))
fresh = book.freshness
loaded_at = book.result.loaded_at
rows = []
for r in fresh.iter_rows(named=True):
    limit = r["stale_after_days"]
    state = "—" if r["stale"] is None else ("⚠️ stale" if r["stale"] else "✅ fresh")
    rows.append({
        "Table": label(r["table"]),
        "Rows": r["rows"],
        "Of which uploaded": uploaded_rows.get(r["table"], 0),
        "Latest record": r["latest"],
        "Age (days)": r["age_days"],
        "Expected latency": f"{limit} d" if limit is not None else "none",
        "Loaded (UTC)": f"{loaded_at:%Y-%m-%d %H:%M}",
        "Last upload (UTC)": last_upload.get(r["table"], ""),
        "State": state,
        "Note": r["note"],
    })
st.dataframe(pl.DataFrame(rows), hide_index=True, width="stretch",
             column_config={"Latest record": st.column_config.DateColumn(format="YYYY-MM-DD")})
st.caption(
    f"Source `{book.source_name}` ({book.source_text}) loaded {loaded_at:%d %b %Y %H:%M} UTC. "
    "Stale: the latest record is older than the expected latency — set it per table with "
    "`expected_latency: {usage: 2d, invoices: 35d}` in config/sources.yaml."
)

# ---- Upload -------------------------------------------------------------------------------
st.subheader("Upload a file")
tables = list(TABLES)
table = st.selectbox("Table", tables, key="up_table", format_func=label)
spec = TABLES[table]
st.caption(
    f"{spec.grain}. Required: {', '.join(spec.required_columns)}"
    + (f"; optional: {', '.join(spec.optional_columns)}" if spec.optional_columns else "") + "."
)
got = st.file_uploader("CSV, Excel (.xlsx) or Parquet", type=["csv", "tsv", "txt", "xlsx", "parquet", "pq"], key="up_widget")
if got is not None and st.session_state.get("up_done") == (got.name, got.size):
    pass  # just accepted: still in the uploader, but not a new file to stage
elif got is not None:
    st.session_state.pop("up_done", None)
    current = st.session_state.get(FILE_KEY)
    if not current or current.get("name") != got.name or current.get("size") != got.size:
        st.session_state[FILE_KEY] = {"name": got.name, "data": got.getvalue(), "size": got.size, "widget": True}
else:
    st.session_state.pop("up_done", None)
    if (st.session_state.get(FILE_KEY) or {}).get("widget"):  # the user took the file out of the uploader
        st.session_state.pop(FILE_KEY, None)

staged_file = st.session_state.get(FILE_KEY)
if staged_file:
    name, payload = staged_file["name"], staged_file["data"]
    # First pass without a mapping: the file's own columns (for the editor)
    probe = up.stage(payload, name, table, {}, accounts=book.tables.get("accounts"), reader=read_any)
    canon = [c.name for c in spec.columns]
    saved: dict = st.session_state.setdefault("up_saved", {})  # what the user picked, per table x column
    mine = saved.setdefault(table, {})
    guess = up.guess_mapping(probe.file_columns, table)
    mapping: dict[str, str] = {}
    date_formats: dict[str, str] = {}
    if probe.file_columns:
        st.markdown(f"**Mapping for `{name}`** — their column → canonical column of *{table}*")
        cols = st.columns(3)
        for i, col in enumerate(probe.file_columns):
            options = [KEEP, *canon]
            default = mine.get(col) or guess.get(col) or (col if col in canon else KEEP)
            key = f"up_map::{table}::{col}"
            if key not in st.session_state:
                st.session_state[key] = default if default in options else KEEP
            with cols[i % 3]:
                choice = st.selectbox(col, options, key=key)
            mine[col] = choice
            if choice != KEEP and choice != col:
                mapping[col] = choice
        dates = [c.name for c in spec.columns if c.dtype in (pl.Date, pl.Datetime("us"))]
        if dates:
            dcols = st.columns(len(dates) + 1)
            for i, dcol in enumerate(dates):
                with dcols[i]:
                    value = st.text_input(
                        f"Date format of {dcol}", key=f"up_fmt::{table}::{dcol}",
                        placeholder="auto, or e.g. %d/%m/%Y",
                        help="Left empty: ISO dates (2026-11-30) are read, and d/m/Y vs m/d/Y is decided from "
                             "the values when they leave a single reading. A strftime format like %d/%m/%Y.",
                    )
                    if value.strip():
                        date_formats[dcol] = value.strip()
            with dcols[-1]:
                dec = st.selectbox("Decimal mark", ["auto", ".", ","], key="up_decimal")
        else:
            dec = st.selectbox("Decimal mark", ["auto", ".", ","], key="up_decimal")
        decimal = None if dec == "auto" else dec
    else:
        decimal = None

    same_table = [u for u in accepted if u.table == table]
    replace_options = [None, *[u.id for u in same_table]]
    if st.session_state.get("up_replaces") not in replace_options:
        st.session_state["up_replaces"] = None
    names = {u.id: f"replace {u.filename} ({u.id})" for u in same_table}
    replaces = st.selectbox("Replaces", replace_options, key="up_replaces",
                            format_func=lambda v: "nothing: add to the table" if v is None else names.get(v, v))
    existing = book.tables.get(table)
    if replaces is not None and existing is not None and spec.key:
        old = next(u for u in same_table if u.id == replaces)
        try:  # the rows being replaced do not count as already loaded
            existing = existing.join(pl.read_parquet(old.parquet).select(spec.key), on=list(spec.key), how="anti")
        except Exception:  # noqa: BLE001, S110 - a damaged old upload: check against everything
            pass
    staged = (
        up.stage(payload, name, table, mapping, date_formats=date_formats, decimal=decimal,
                 accounts=book.tables.get("accounts"), existing=existing, reader=read_any)
        if probe.file_columns else probe
    )

    # ---- Preview
    st.markdown("**Preview**")
    if staged.mapping:
        st.dataframe(
            pl.DataFrame({"their column": list(staged.mapping), "canonical column": list(staged.mapping.values())}),
            hide_index=True,
        )
    m1, m2, m3 = st.columns(3)
    m1.metric("Rows read", f"{staged.rows_read:,}")
    m2.metric("Rows that pass", f"{staged.rows_valid:,}")
    m3.metric("Rows rejected", f"{staged.rows_rejected:,}")
    if not staged.problems:
        st.success(f"{name}: no problems found.")
    for p in staged.problems:
        text = p.message + (f" ({p.count:,} rows)" if p.count else "")
        (st.error if p.severity == "error" else st.warning)(text)
    if staged.rejected is not None and staged.rejected.height:
        st.markdown("Rejected rows (with the file line and the reason):")
        st.dataframe(staged.rejected.head(200), hide_index=True)
    if staged.valid is not None and staged.valid.height:
        st.markdown("Rows that will be added:")
        st.dataframe(staged.valid.head(50), hide_index=True)

    b1, b2 = st.columns(2)
    accept_label = f"Accept {staged.rows_valid:,} row(s)" + (f", leave {staged.rows_rejected:,} out" if staged.rows_rejected else "")
    if b1.button(accept_label, key="up_accept", type="primary", disabled=not staged.can_accept):
        who, _how = data.current_user()
        try:
            stored = up.accept(staged, who, folder, replaces=replaces)
        except up.UploadError as exc:
            st.error(str(exc))
        else:
            done = st.session_state.pop(FILE_KEY, None) or {}
            if done.get("widget"):
                st.session_state["up_done"] = (done.get("name"), done.get("size"))
            st.session_state.pop("up_replaces", None)
            st.session_state["up_flash"] = (
                "success",
                f"Stored {stored.manifest['rows_accepted']:,} {table} row(s) from {name} (upload {stored.id})"
                + (f", replacing {replaces}" if replaces else "") + ". They are part of the book from now on.",
            )
            st.rerun()
    if b2.button("Discard this file", key="up_discard"):
        done = st.session_state.pop(FILE_KEY, None) or {}
        if done.get("widget"):  # still in the uploader: do not stage it again
            st.session_state["up_done"] = (done.get("name"), done.get("size"))
        st.rerun()
    if not staged.can_accept:
        st.caption("Nothing can be accepted yet: fix the mapping above (or the file) until some rows pass.")

# ---- Accepted uploads ---------------------------------------------------------------------
st.subheader("Accepted uploads")
if not accepted:
    st.caption(f"None yet. Accepted uploads are stored in {folder}.")
for u in accepted:
    m = u.manifest
    with st.container(border=True):
        st.markdown(
            f"**{label(u.table)}** — `{u.filename}` · {m.get('rows_accepted', 0):,} row(s) "
            f"({m.get('rows_rejected', 0):,} left out) · by {m.get('uploaded_by')} at {str(m.get('uploaded_at', ''))[:16]} UTC"
        )
        mapping_text = ", ".join(f"{k} → {v}" for k, v in (m.get("mapping") or {}).items()) or "none (same names)"
        fmts = ", ".join(f"{k}: {v}" for k, v in (m.get("date_formats") or {}).items())
        st.caption(f"Upload {u.id}. Mapping: {mapping_text}" + (f". Date formats: {fmts}" if fmts else "") + ".")
        c1, c2 = st.columns(2)
        if c1.button("Replace…", key=f"up_replace::{u.table}::{u.id}"):
            st.session_state["up_pending"] = (u.table, u.id)
            st.session_state["up_flash"] = ("info", f"Upload the new file for {u.table} above; it will replace {u.filename}.")
            st.rerun()
        if c2.button("Remove", key=f"up_remove::{u.table}::{u.id}"):
            try:
                up.remove(folder, u.table, u.id)
            except up.UploadError as exc:
                st.session_state["up_flash"] = ("error", str(exc))
            else:
                st.session_state["up_flash"] = ("success", f"Removed {u.filename} ({u.id}); its rows are no longer in the book.")
            st.rerun()
