"""The `snowflake` source kind on Snowpark's local testing session (table reads, column
mapping, the date filter as a column expression, failures per table)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from health.contract import validate
from sources.base import SourceConfigError
from sources.sample import generate
from sources.snowflake import SnowflakeSource, build_snowflake_source, parse_settings

snowpark = pytest.importorskip("snowflake.snowpark", reason="snowflake-snowpark-python is not installed")

SINCE = dt.date(2026, 9, 1)


@pytest.fixture(scope="module")
def book() -> dict[str, pl.DataFrame]:
    tables = generate(12)
    tables["usage"] = tables["usage"].filter(pl.col("date") >= dt.date(2026, 6, 1))  # keep the mock quick
    return tables


def _pandas(df: pl.DataFrame):
    """Dates as Python dates (Snowpark types them DATE; datetime64 would be TIMESTAMP)."""
    pdf = df.to_pandas(use_pyarrow_extension_array=False)
    for c, dtype in df.schema.items():
        if dtype == pl.Date:
            pdf[c] = pl.Series(df[c]).to_list()
            pdf[c] = pdf[c].astype(object)
    return pdf


@pytest.fixture(scope="module")
def session(book):
    from snowflake.snowpark import Session

    s = Session.builder.config("local_testing", True).create()
    rename = {"account_id": "CUSTOMER_ID", "owner": "CSM"}
    for name, df in book.items():
        if name == "accounts":
            df = df.rename(rename)
        frame = _pandas(df.rename({c: c.upper() for c in df.columns if c not in rename.values()}))
        s.create_dataframe(frame).write.save_as_table(name.upper())
    yield s
    s.close()


def source(session, **settings) -> SnowflakeSource:
    base = {"tables": {"accounts": {"columns": {"CUSTOMER_ID": "account_id", "CSM": "owner"}}}}
    return SnowflakeSource("sf", parse_settings("sf", {**base, **settings}), session=session)


def _sorted(df: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    return df.sort(key, nulls_last=True)


def test_tables_read_back_with_mapping(session, book):
    result = source(session).load()
    assert result.ok, [str(p) for p in result.problems]
    want = validate(book, "sample").tables
    assert set(result.tables) == set(want)
    for name, df in want.items():
        got = result.tables[name]
        assert set(df.columns) <= set(got.columns), name
        key = [c for c in ("account_id", "ticket_id", "invoice_id", "response_id", "touchpoint_id", "date",
                           "metric", "at", "kind", "renewal_date") if c in df.columns]
        g, w = _sorted(got.select(df.columns), key), _sorted(df, key)
        assert g.height == w.height, name
        for c in df.columns:
            assert g[c].cast(w[c].dtype).equals(w[c]), (name, c)


def test_since_filters_in_snowpark(session, book):
    result = source(session, since=SINCE.isoformat()).load()
    assert result.ok, [str(p) for p in result.problems]
    assert result.tables["usage"]["date"].min() >= SINCE
    assert result.tables["usage"].height == book["usage"].filter(pl.col("date") >= SINCE).height
    t = book["tickets"]
    kept = t.filter((pl.col("opened_at").dt.date() >= SINCE) | pl.col("closed_at").is_null()
                    | (pl.col("closed_at").dt.date() >= SINCE))
    assert result.tables["tickets"].height == kept.height
    assert result.tables["accounts"].height == book["accounts"].height


def test_missing_table_and_column_name_the_fix(session):
    src = source(session, tables={"accounts": {"columns": {"CUSTOMER_ID": "account_id", "CSM": "owner"}},
                                  "usage": {"table": "DAILY_USAGE"},
                                  "tickets": {"columns": {"PRIO": "priority"}}})
    result = src.load()
    errors = {p.table: p for p in result.errors}
    assert errors["usage"].kind == "missing_table" and "DAILY_USAGE" in errors["usage"].message
    assert "no column 'PRIO'" in errors["tickets"].message and "'sf'" in errors["tickets"].message
    assert {"accounts", "invoices", "surveys"} <= set(result.tables)


def test_the_active_session_is_used(session, book):
    """Inside Streamlit in Snowflake there is an active session: no credentials needed."""
    src = build_snowflake_source("sf", {"tables": {"accounts": {"columns": {"CUSTOMER_ID": "account_id",
                                                                           "CSM": "owner"}}}})
    result = src.load()
    assert result.ok and result.tables["accounts"].height == book["accounts"].height
    assert "the active session" in src.describe()


def test_no_session_and_no_connection_says_what_to_do(tmp_path, monkeypatch):
    import snowflake.snowpark.context as context

    def outside_snowflake():
        raise RuntimeError("no default session")  # what Snowpark says outside Snowflake

    monkeypatch.setattr(context, "get_active_session", outside_snowflake)
    src = build_snowflake_source("sf", {}, base_dir=str(tmp_path))
    result = src.load()
    assert not result.ok and "no active Snowflake session" in result.errors[0].message
    src = build_snowflake_source("sf", {"connection": "sf"}, base_dir=str(tmp_path))
    assert "no [connections.sf] section" in src.load().errors[0].message


def test_configuration_mistakes():
    with pytest.raises(SourceConfigError, match="create a view"):
        parse_settings("sf", {"tables": {"usage": {"query": "SELECT 1"}}})
    with pytest.raises(SourceConfigError, match="did you mean 'schema'"):
        parse_settings("sf", {"shema": "X"})
    with pytest.raises(SourceConfigError, match="did you mean 'usage'"):
        parse_settings("sf", {"tables": {"usages": {}}})
