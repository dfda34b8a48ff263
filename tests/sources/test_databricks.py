"""The `databricks` source kind: the real databricks-sql-connector speaking its Thrift
protocol to a loopback warehouse (tests/sources/databricks_stub.py)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from health.contract import validate
from sources.base import SourceConfigError
from sources.sample import generate

pytest.importorskip("databricks.sql", reason="databricks-sql-connector is not installed")
from sources.databricks import DatabricksSource, build_databricks_source, parse_settings  # noqa: E402
from tests.sources.databricks_stub import Warehouse  # noqa: E402

TOKEN = "dapi-0123456789abcdef"


@pytest.fixture(scope="module")
def book() -> dict[str, pl.DataFrame]:
    return generate(30)


@pytest.fixture(scope="module")
def warehouse(book):
    tables = dict(book)
    tables["product_usage"] = tables.pop("usage").rename({"date": "usage_date", "metric": "metric_name"})
    with Warehouse(tables, token=TOKEN) as w:
        yield w


def source(w: Warehouse, token: str = TOKEN, **settings) -> DatabricksSource:
    secrets = {"connections": {"dbx": {"server_hostname": "127.0.0.1", "http_path": w.path, "access_token": token}}}
    base = {"connection": "dbx", "tables": {"usage": {"table": "product_usage",
                                                      "columns": {"usage_date": "date", "metric_name": "metric"}}}}
    return DatabricksSource("lake", parse_settings("lake", {**base, **settings}), secrets=secrets,
                            connect_args={"_connection_uri": w.uri, "_retry_stop_after_attempts_count": 1})


def test_reads_back_exactly_with_mapping(warehouse, book):
    result = source(warehouse).load()
    assert result.ok, [str(p) for p in result.problems]
    want = validate(book, "sample").tables
    assert set(result.tables) == set(want)
    for name, df in want.items():
        got = result.tables[name].select(df.columns)
        key = [c for c in df.columns if c.endswith("_id")] + [c for c in ("date", "metric", "at", "kind",
                                                                          "renewal_date") if c in df.columns]
        assert got.schema == df.schema, name
        assert got.sort(key, nulls_last=True).equals(df.sort(key, nulls_last=True)), name


def test_since_goes_as_a_native_parameter(warehouse, book):
    since = dt.date(2026, 8, 1)
    before = len(warehouse.handler.statements)
    result = source(warehouse, since=since.isoformat()).load()
    assert result.ok
    sent = warehouse.handler.statements[before:]
    assert any(":since" in s for s in sent) and not any("2026-08-01" in s for s in sent)
    assert result.tables["usage"].height == book["usage"].filter(pl.col("date") >= since).height


def test_bad_token_and_missing_table(warehouse):
    result = source(warehouse, token="dapi-wrong-secret").load()
    assert not result.ok and not result.tables
    msg = result.errors[0].message
    assert "Source 'lake' cannot connect to Databricks SQL" in msg and "access token" in msg
    assert "dapi-wrong-secret" not in msg
    result = source(warehouse, tables={"usage": {"table": "main.cs.usage_daily"}}).load()
    errors = {p.table: p for p in result.errors}
    assert errors["usage"].kind == "missing_table" and "main.cs.usage_daily" in errors["usage"].message
    assert "accounts" in result.tables and "tickets" in result.tables


def test_configuration_mistakes(tmp_path):
    with pytest.raises(SourceConfigError, match="add `connection: <name>`"):
        parse_settings("lake", {})
    with pytest.raises(SourceConfigError, match=r"no \[connections.dbx\] section"):
        build_databricks_source("lake", {"connection": "dbx"}, base_dir=str(tmp_path))
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[connections.dbx]\nserver_hostname = "h"\n')
    with pytest.raises(SourceConfigError, match="needs http_path, access_token"):
        build_databricks_source("lake", {"connection": "dbx"}, base_dir=str(tmp_path))


def test_rollups_pushed_down_to_the_warehouse(warehouse, book):
    """The Databricks-dialect roll-ups, sent by the real connector, give the Polars numbers
    (the loopback warehouse runs them with DuckDB)."""
    from health.features import compute_features
    from health.model_loader import load_model

    model = load_model("weights.yaml").model
    last = book["usage"]["date"].max()
    as_of = [last - dt.timedelta(days=7 * i) for i in range(8)]
    polars = compute_features(book, model, as_of).collect().sort("account_id", "as_of")
    src = source(warehouse)
    lean = src.load(skip=("usage", "tickets", "invoices", "surveys", "touchpoints", "milestones"))
    conn = src.connect()
    try:
        pushed = compute_features(lean.tables, model, as_of, rollup_provider=src.rollup_provider(conn),
                                  state_provider=src.state_provider(conn)).collect().sort("account_id", "as_of")
    finally:
        conn.close()
    assert any("DIV" in s or "DATEDIFF" in s for s in warehouse.handler.statements)
    for s in model.signals:
        a, b = polars[s], pushed[s]
        assert (a.is_null() == b.is_null()).all(), s
        assert ((a - b).abs() <= 1e-9 * a.abs().clip(lower_bound=1.0)).all(), s
