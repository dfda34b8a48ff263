"""The `sql` source kind against real databases: DuckDB (duckdb-engine), SQLite and a
real PostgreSQL server (tests/sources/pg.py)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from health.contract import validate
from health.schema import TABLES
from sources.base import SourceConfigError
from sources.check import run_check
from sources.sample import generate
from sources.sql import SqlSource, SqlTableSettings, build_sql_source
from tests.sources.pg import fresh_database, load_tables, pg_fixture

duckdb_engine = pytest.importorskip("duckdb_engine")
pg_url = pg_fixture()

TODAY = dt.date(2026, 12, 4)


@pytest.fixture(scope="module")
def book() -> dict[str, pl.DataFrame]:
    return generate(60)


def _sorted(df: pl.DataFrame, table: str) -> pl.DataFrame:
    key = list(TABLES[table].key) or [c for c in df.columns]
    return df.sort(key, nulls_last=True)


def same_tables(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    assert set(got) == set(want)
    for name, df in want.items():
        g = got[name].select(df.columns)
        assert g.schema == df.schema, name
        assert _sorted(g, name).equals(_sorted(df, name)), name


@pytest.fixture(scope="module")
def duck_file(book, tmp_path_factory) -> Path:
    import duckdb

    path = tmp_path_factory.mktemp("duck") / "book.duckdb"
    con = duckdb.connect(str(path))
    for name, df in book.items():
        con.register("frame", df.to_arrow())
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
        con.unregister("frame")
    con.close()
    return path


def source(name: str = "wh", **settings) -> SqlSource:
    return build_sql_source(name, {"url_env": "CHI_TEST_SQL_URL", **settings}, base_dir=".")


def test_duckdb_book_reads_back_exactly(duck_file, book, monkeypatch):
    monkeypatch.setenv("CHI_TEST_SQL_URL", f"duckdb:///{duck_file}")
    result = source().load()
    assert result.ok, [str(p) for p in result.problems]
    same_tables(result.tables, validate(book, "sample").tables)


def test_since_is_a_bound_parameter_and_keeps_open_records(duck_file, book, monkeypatch):
    monkeypatch.setenv("CHI_TEST_SQL_URL", f"duckdb:///{duck_file}")
    src = source(since="2026-06-01")
    from_, _ = src._from_clause("tickets", SqlTableSettings())
    stmt = src.query_for("tickets", {"opened_at": "opened_at", "closed_at": "closed_at"}, from_)
    text = str(stmt)
    assert ":since" in text and "2026" not in text  # bound, never pasted into the SQL
    result = src.load()
    assert result.ok, [str(p) for p in result.problems]
    since = dt.date(2026, 6, 1)
    usage = result.tables["usage"]
    assert usage["date"].min() >= since
    assert usage.height == book["usage"].filter(pl.col("date") >= since).height
    t = book["tickets"]
    open_then = t.filter((pl.col("opened_at").dt.date() >= since) | pl.col("closed_at").is_null()
                         | (pl.col("closed_at").dt.date() >= since))
    assert result.tables["tickets"].height == open_then.height
    assert result.tables["accounts"].height == book["accounts"].height  # never filtered by date
    assert result.tables["outcomes"].height == book["outcomes"].height


def test_sqlite_mapping_query_keep_and_text_dates(tmp_path, monkeypatch):
    db = tmp_path / "crm.db"
    con = sqlite3.connect(db)
    con.executescript(
        """
        CREATE TABLE customers ("Customer ID" TEXT, "Account Name" TEXT, csm TEXT, tier TEXT,
                                arr_eur REAL, renewal TEXT, region TEXT);
        INSERT INTO customers VALUES ('A1', 'Acme', 'Ann', 'smb', 1200.5, '01/09/2027', 'EU'),
                                     ('A2', 'Bolt', 'Bob', 'mid', 50000, '15/03/2027', 'NA');
        CREATE TABLE daily (acct TEXT, day TEXT, metric_name TEXT, metric_value REAL, env TEXT, plan_code TEXT);
        INSERT INTO daily VALUES ('A1', '2026-11-01', 'active_users', 5, 'prod', 'p1'),
                                 ('A1', '2026-11-02', 'active_users', 6, 'test', 'p1'),
                                 ('A2', '2026-11-02', 'active_users', 9, 'prod', 'p2'),
                                 ('A2', '2025-01-02', 'active_users', 1, 'prod', 'p2');
        """
    )
    con.commit()
    con.close()
    monkeypatch.setenv("CHI_TEST_SQL_URL", f"sqlite:///{db}")
    src = source(
        since="2026-01-01",
        tables={
            "accounts": {"table": "customers", "date_formats": {"renewal_date": "%d/%m/%Y"},
                         "columns": {"Customer ID": "account_id", "Account Name": "name", "csm": "owner",
                                     "tier": "segment", "arr_eur": "arr", "renewal": "renewal_date"}},
            "usage": {"query": "SELECT * FROM daily WHERE env = 'prod'", "keep": ["plan_code"],
                      "columns": {"acct": "account_id", "day": "date", "metric_name": "metric",
                                  "metric_value": "value"}},
        },
    )
    result = src.load()
    assert result.ok, [str(p) for p in result.problems]
    acc = result.tables["accounts"].sort("account_id")
    assert acc["renewal_date"].to_list() == [dt.date(2027, 9, 1), dt.date(2027, 3, 15)]
    assert acc["region"].to_list() == ["EU", "NA"]  # extra account columns are kept
    usage = result.tables["usage"].sort("account_id")
    assert usage.columns == ["account_id", "date", "metric", "value", "plan_code"]  # env not read
    assert usage["value"].to_list() == [5.0, 9.0]  # the query's filter and the date range


def test_missing_table_and_column_name_the_fix_and_the_rest_loads(duck_file, monkeypatch):
    monkeypatch.setenv("CHI_TEST_SQL_URL", f"duckdb:///{duck_file}")
    result = source(tables={"usage": {"table": "usag"},
                            "tickets": {"columns": {"prio": "priority"}}}).load()
    probs = {p.table: p for p in result.problems if p.severity == "error"}
    assert "Did you mean 'usage'" in probs["usage"].message and "wh" in probs["usage"].message
    assert probs["usage"].kind == "missing_table"
    assert "no column 'prio'" in probs["tickets"].message
    assert "accounts" in result.tables and "invoices" in result.tables and "usage" not in result.tables


def test_url_from_secrets_and_configuration_mistakes(tmp_path, duck_file, monkeypatch):
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text(
        f'[connections.wh]\nurl = "duckdb:///{duck_file}"\n'
        '[connections.pg]\ndialect = "postgresql"\ndriver = "psycopg"\nhost = "db.example"\n'
        'port = 5432\ndatabase = "crm"\nusername = "chi"\npassword = "s3cret-pw"\n'
    )
    src = build_sql_source("wh", {"connection": "wh"}, base_dir=str(tmp_path))
    assert src.load().ok
    pg = build_sql_source("pg", {"connection": "pg"}, base_dir=str(tmp_path))
    assert "s3cret-pw" not in pg.describe() and "db.example:5432/crm" in pg.describe()
    monkeypatch.delenv("NOPE_URL", raising=False)
    with pytest.raises(SourceConfigError, match="NOPE_URL, which is not set"):
        build_sql_source("wh", {"url_env": "NOPE_URL"})
    with pytest.raises(SourceConfigError, match=r"no \[connections.other\]"):
        build_sql_source("wh", {"connection": "other"}, base_dir=str(tmp_path))
    with pytest.raises(SourceConfigError, match="did you mean 'tables'"):
        build_sql_source("wh", {"connection": "wh", "tabels": {}}, base_dir=str(tmp_path))
    with pytest.raises(SourceConfigError, match="either `table:` or `query:`"):
        build_sql_source("wh", {"connection": "wh", "tables": {"usage": {"table": "a", "query": "select 1"}}},
                         base_dir=str(tmp_path))
    monkeypatch.setenv("BAD_URL", "not a url")
    with pytest.raises(SourceConfigError, match="not a valid SQLAlchemy URL"):
        build_sql_source("wh", {"url_env": "BAD_URL"})


def test_sources_check_command_on_a_sql_source(tmp_path, duck_file, monkeypatch):
    monkeypatch.delenv("CHI_SOURCE", raising=False)
    monkeypatch.setenv("CHI_WH_URL", f"duckdb:///{duck_file}")
    (tmp_path / "config").mkdir()
    cfg = tmp_path / "config" / "sources.yaml"
    cfg.write_text("active: sample\nsources:\n  sample: {kind: sample}\n"
                   "  wh:\n    kind: sql\n    url_env: CHI_WH_URL\n")
    report, code = run_check(cfg, "wh", today=TODAY)
    assert code == 0, report
    assert "source 'wh': SQL database duckdb:///" in report
    assert "accounts: 60 rows kept, 0 rejected" in report


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def pg_book(pg_url, book) -> str:
    url = fresh_database(pg_url, "chi_sql_adapter")
    load_tables(url, {k: v for k, v in book.items() if k not in ("accounts", "usage")})
    rename = {"accounts": {"__table__": "Customers", "account_id": "Customer ID", "owner": "CSM"},
              "usage": {"__table__": "DailyUsage", "date": "Day", "metric": "metric_name", "value": "metric value"}}
    load_tables(url, {"accounts": book["accounts"], "usage": book["usage"]}, rename=rename, schema="crm")
    return url


PG_TABLES = {
    "accounts": {"table": "crm.Customers", "columns": {"Customer ID": "account_id", "CSM": "owner"}},
    "usage": {"table": "crm.DailyUsage", "columns": {"Day": "date", "metric_name": "metric", "metric value": "value"}},
}


def test_postgres_book_with_mapping_reads_back_exactly(pg_book, book, monkeypatch):
    monkeypatch.setenv("CHI_TEST_SQL_URL", pg_book)
    result = source(tables=PG_TABLES).load()
    assert result.ok, [str(p) for p in result.problems]
    same_tables(result.tables, validate(book, "sample").tables)


def test_postgres_bad_credentials_and_network_down(pg_book, monkeypatch):
    import sqlalchemy as sa

    url = sa.make_url(pg_book)
    monkeypatch.setenv("CHI_TEST_SQL_URL", url.set(username="nobody", password="hunter2-secret")
                       .render_as_string(hide_password=False))
    result = source().load()
    assert not result.ok and not result.tables
    msg = result.errors[0].message
    assert "Source 'wh' cannot connect" in msg and "user name and password" in msg
    assert "hunter2-secret" not in msg and "***" in msg
    assert "hunter2-secret" not in source().describe()

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CHI_TEST_SQL_URL", url.set(port=port).render_as_string(hide_password=False))
    result = source().load()
    msg = result.errors[0].message
    assert "Source 'wh' cannot connect" in msg and f"127.0.0.1:{port}" in msg and "server is running" in msg


def test_postgres_missing_table_rolls_back_and_loads_the_rest(pg_book, monkeypatch):
    monkeypatch.setenv("CHI_TEST_SQL_URL", pg_book)
    result = source(tables={**PG_TABLES, "surveys": {"table": "survey"}}).load()
    kinds = {p.table: p.kind for p in result.errors}
    assert kinds == {"surveys": "missing_table"}
    assert {"accounts", "usage", "tickets", "invoices"} <= set(result.tables)


def test_postgres_source_pushes_the_rollups_down(pg_book, book, monkeypatch):
    """The source's own tables and mapping, rolled up in PostgreSQL: the same features as
    Polars on the loaded tables, without loading usage at all."""
    from health.features import compute_features
    from health.model_loader import load_model

    model = load_model("weights.yaml").model
    monkeypatch.setenv("CHI_TEST_SQL_URL", pg_book)
    src = source(tables=PG_TABLES)
    full = src.load()
    last = full.tables["usage"]["date"].max()
    as_of = [last - dt.timedelta(days=7 * i) for i in range(12)]
    polars = compute_features(full.tables, model, as_of).collect().sort("account_id", "as_of")
    lean = src.load(skip=("usage",))
    assert lean.ok and "usage" not in lean.tables
    with src.engine().connect() as conn:
        pushed = compute_features(lean.tables, model, as_of, rollup_provider=src.rollup_provider(conn)).collect()
    pushed = pushed.sort("account_id", "as_of")
    for s in model.signals:
        both = pl.DataFrame({"a": polars[s], "b": pushed[s]})
        assert (both["a"].is_null() == both["b"].is_null()).all(), s
        assert ((both["a"] - both["b"]).abs() <= 1e-9 * both["a"].abs().clip(lower_bound=1.0)).all(), s
    # everything in the database: Polars gets only the accounts (and outcomes)
    only = src.load(skip=("usage", "tickets", "invoices", "surveys", "touchpoints", "milestones"))
    assert set(only.tables) == {"accounts", "outcomes"}
    with src.engine().connect() as conn:
        pushed = compute_features(only.tables, model, as_of, rollup_provider=src.rollup_provider(conn),
                                  state_provider=src.state_provider(conn)).collect()
    pushed = pushed.sort("account_id", "as_of")
    for s in model.signals:
        both = pl.DataFrame({"a": polars[s], "b": pushed[s]})
        assert (both["a"].is_null() == both["b"].is_null()).all(), s
        assert ((both["a"] - both["b"]).abs() <= 1e-9 * both["a"].abs().clip(lower_bound=1.0)).all(), s


def test_extra_columns_the_model_reads_are_read_without_keep(tmp_path, monkeypatch):
    from health.model import HealthModel, Segment, Signal, Tiers
    from health.pushdown import columns_needed

    db = tmp_path / "x.db"
    con = sqlite3.connect(db)
    con.executescript(
        """
        CREATE TABLE accounts (account_id TEXT, name TEXT, segment TEXT, owner TEXT, arr REAL, renewal_date TEXT);
        INSERT INTO accounts VALUES ('A1', 'Acme', 'smb', 'Ann', 10, '2027-01-01');
        CREATE TABLE usage (account_id TEXT, date TEXT, metric TEXT, value REAL, plan_code TEXT, env TEXT);
        INSERT INTO usage VALUES ('A1', '2026-11-01', 'active_users', 5, 'p1', 'prod');
        """
    )
    con.commit()
    con.close()
    model = HealthModel(
        signals={"u": Signal(label="u", table="usage", metric="active_users", measure="sum", window="7d",
                             where="plan_code = 'p1'", score=[[0, 0], [1, 100]])},
        segments={"default": Segment(weights={"u": 1})}, tiers=Tiers(at_risk=40, watch=70),
    )
    assert columns_needed(model) == {"usage": {"plan_code"}}
    monkeypatch.setenv("CHI_TEST_SQL_URL", f"sqlite:///{db}")
    result = source().load(extra_columns=columns_needed(model))
    assert result.ok, [str(p) for p in result.problems]
    assert result.tables["usage"].columns == ["account_id", "date", "metric", "value", "plan_code"]  # not env


def test_pushdown_refused_clearly_for_a_dialect_it_does_not_render(tmp_path, monkeypatch):
    from health.pushdown import PushdownError

    monkeypatch.setenv("CHI_TEST_SQL_URL", f"sqlite:///{tmp_path / 'x.db'}")
    src = source()
    with src.engine().connect() as conn, pytest.raises(PushdownError, match="sqlite database"):
        src.rollup_provider(conn)


def test_score_command_pushes_usage_down_and_gets_the_same_scores(tmp_path, duck_file, monkeypatch):
    """`python -m health score` on a SQL source rolls usage up in the database
    (`pushdown: auto`) — and scores exactly as with `pushdown: off`."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "config").mkdir()
    outs = {}
    for mode in ("auto", "off"):
        cfg = tmp_path / "config" / f"sources-{mode}.yaml"
        cfg.write_text(f"active: wh\nsources:\n  wh:\n    kind: sql\n    url_env: CHI_WH_URL\n    pushdown: {mode}\n")
        out = tmp_path / f"scores-{mode}.parquet"
        done = subprocess.run(
            [sys.executable, "-m", "health", "score", "--config", str(cfg), "--history", "8", "--out", str(out)],
            cwd=root, env={**__import__("os").environ, "CHI_WH_URL": f"duckdb:///{duck_file}"},
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert ("rolled up in the database" in done.stderr) == (mode == "auto")
        outs[mode] = pl.read_parquet(out).sort("account_id", "as_of")
    from polars.testing import assert_frame_equal

    assert_frame_equal(outs["auto"], outs["off"], check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
