"""Parity: the windowed roll-ups compiled to SQL (health.pushdown) give the same features
as the Polars engine — on the sample book and on random data (hypothesis) — executed by
DuckDB and by a real PostgreSQL server; the SQL renders for every dialect."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from health.features import compute_features
from health.model import HealthModel, Operand, Segment, Signal, Tiers
from health.model_loader import load_model
from health.pushdown import (
    DIALECTS,
    PushdownError,
    SqlTable,
    compile_rollups,
    duckdb_runner,
    provider,
    sqlalchemy_runner,
    state_provider,
    translate_condition,
)
from sources.sample import generate

duckdb = pytest.importorskip("duckdb")
pytest.importorskip("sqlalchemy")
from tests.sources.pg import fresh_database, load_tables, pg_fixture  # noqa: E402

pg_url = pg_fixture()
TOL = 1e-9
BASE = dt.date(2026, 1, 1)


def assert_same(a: pl.DataFrame, b: pl.DataFrame, signals: list[str]) -> None:
    a = a.sort("account_id", "as_of")
    b = b.sort("account_id", "as_of")
    assert a.select("account_id", "as_of").equals(b.select("account_id", "as_of"))
    for s in signals:
        x, y = a[s], b[s]
        assert (x.is_null() == y.is_null()).all(), f"{s}: missing in one engine only"
        both = pl.DataFrame({"x": x, "y": y}).drop_nulls()
        if both.height:
            worst = both.select(
                ((pl.col("x") - pl.col("y")).abs() / pl.max_horizontal(pl.lit(1.0), pl.col("x").abs())).max()
            ).item()
            assert worst <= TOL, f"{s}: Polars and SQL differ by {worst:.3g}"


def window_signals(model: HealthModel) -> list[str]:
    windowed = {"sum", "count", "mean", "trend", "share", "ratio"}
    return [n for n, s in model.signals.items() if s.measure in windowed]


# ----------------------------------------------------------------- the sample book


@pytest.fixture(scope="module")
def book() -> dict[str, pl.DataFrame]:
    return generate(60)


@pytest.fixture(scope="module")
def model() -> HealthModel:
    loaded = load_model("weights.yaml")
    return getattr(loaded, "model", loaded)


def weekly(book, weeks: int = 26) -> list[dt.date]:
    last = book["usage"]["date"].max()
    return [last - dt.timedelta(days=7 * i) for i in range(weeks)]


def duck_with(tables: dict[str, pl.DataFrame]):
    con = duckdb.connect()
    for name, df in tables.items():
        con.register(f"{name}_frame", df.to_arrow())
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM "{name}_frame"')
    return con


def test_sample_book_same_features_in_duckdb(book, model):
    as_of = weekly(book)
    polars = compute_features(book, model, as_of).collect()
    con = duck_with(book)
    pushed = compute_features(book, model, as_of, rollup_provider=provider(duckdb_runner(con))).collect()
    assert len(window_signals(model)) >= 6
    assert_same(polars, pushed, list(model.signals))


def test_sample_book_everything_pushed_down_to_duckdb(book, model):
    """Windows and state measures in SQL: Polars reads only the accounts."""
    as_of = weekly(book, 40)
    polars = compute_features(book, model, as_of).collect()
    run = duckdb_runner(duck_with(book))
    pushed = compute_features({"accounts": book["accounts"], "outcomes": book["outcomes"]}, model, as_of,
                              rollup_provider=provider(run), state_provider=state_provider(run)).collect()
    states = {"latest", "days_since", "open_count", "open_max_age", "max_days_overdue"}
    assert {s.measure for s in model.signals.values()} >= states
    assert_same(polars, pushed, list(model.signals))


def test_sample_book_without_raw_usage_in_polars(book, model):
    """usage has only windowed signals: pushed down, it need not be loaded at all."""
    as_of = weekly(book, 8)
    polars = compute_features(book, model, as_of).collect()
    con = duck_with(book)
    no_usage = {k: v for k, v in book.items() if k != "usage"}
    pushed = compute_features(no_usage, model, as_of,
                              rollup_provider=provider(duckdb_runner(con), tables=["usage"])).collect()
    assert_same(polars, pushed, list(model.signals))


def test_sample_book_mapped_columns(book, model):
    """The source's own names: the roll-up reads them through a renaming sub-query."""
    renamed = book["usage"].rename({"account_id": "Customer ID", "date": "day", "metric": "metric_name",
                                    "value": "metric_value"})
    con = duck_with({"product_usage": renamed})
    src = SqlTable("product_usage", columns={"Customer ID": "account_id", "day": "date",
                                             "metric_name": "metric", "metric_value": "value"}, quote=True)
    as_of = weekly(book, 6)
    polars = compute_features(book, model, as_of).collect()
    pushed = compute_features(book, model, as_of,
                              rollup_provider=provider(duckdb_runner(con), {"usage": src}, ["usage"])).collect()
    assert_same(polars, pushed, list(model.signals))


@pytest.fixture(scope="module")
def pg_book(pg_url, book):
    import sqlalchemy as sa

    url = fresh_database(pg_url, "chi_pushdown_book")
    load_tables(url, book)
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def test_sample_book_same_features_in_postgres(pg_book, book, model):
    as_of = weekly(book)
    polars = compute_features(book, model, as_of).collect()
    with pg_book.connect() as conn:
        run = sqlalchemy_runner(conn)
        pushed = compute_features({"accounts": book["accounts"], "outcomes": book["outcomes"]}, model, as_of,
                                  rollup_provider=provider(run), state_provider=state_provider(run)).collect()
    assert_same(polars, pushed, list(model.signals))


# ----------------------------------------------------------- every dialect renders


def test_every_dialect_renders_and_parses_back(model, book):
    rollups = compile_rollups(model, weekly(book, 4))
    assert set(rollups) == {"usage", "tickets"}
    for r in rollups.values():
        for dialect in DIALECTS:
            text, params = r.sql(dialect)
            assert "2026-" not in text and set(params) == {"lo", "hi"}  # dates are bound
            sqlglot.parse_one(text, read=dialect)
            assert "GROUP BY" in text and "_back" in text
    tsql, _ = rollups["tickets"].sql("tsql")
    assert "escalated <> 0" in tsql  # a boolean column as a condition, in T-SQL
    pg, params = rollups["usage"].sql("postgres", "pyformat")
    assert "%(hi)s" in pg and isinstance(params, dict)
    q, params = rollups["usage"].sql("duckdb", "qmark")
    assert "?" in q and isinstance(params, list) and all(isinstance(p, dt.date) for p in params)


def test_conditions_are_expressions_only():
    assert translate_condition("priority IN ('P1', 'P2') AND NOT escalated").sql("snowflake")
    for bad in ("account_id IN (SELECT account_id FROM accounts)", "1 = 1; DROP TABLE usage",
                "value > (SELECT max(value) FROM usage)", "x = $1"):
        with pytest.raises(PushdownError):
            translate_condition(bad)


# ---------------------------------------------------------------- random data

METRICS = ("m1", "m2", "m3")
PRIORITIES = ("P1", "P2", "P3")
TICKET_WHERE = (None, "priority IN ('P1', 'P2')", "escalated", "sentiment < 0", "NOT escalated",
                "priority = 'P3' OR sentiment IS NULL", "sentiment BETWEEN -0.5 AND 0.5")
USAGE_WHERE = (None, None, "value > 2", "value <= 10 AND value >= 0")
WINDOWS = (1, 3, 7, 14, 28, 30)
money = st.floats(min_value=-50, max_value=1000, allow_nan=False).map(lambda v: round(v, 3))


@st.composite
def books(draw):
    n_acc = draw(st.integers(1, 4))
    ids = [f"A{i}" for i in range(n_acc)]
    accounts = pl.DataFrame(
        {
            "account_id": ids,
            "name": ids,
            "segment": ["smb"] * n_acc,
            "owner": ["o"] * n_acc,
            "arr": [1000.0] * n_acc,
            "renewal_date": [dt.date(2027, 1, 1)] * n_acc,
            "seats": draw(st.lists(st.one_of(st.none(), st.integers(0, 50)), min_size=n_acc, max_size=n_acc)),
            "start_date": draw(st.lists(st.one_of(st.none(), st.dates(BASE - dt.timedelta(days=30), BASE + dt.timedelta(days=90))),
                                        min_size=n_acc, max_size=n_acc)),
        },
        schema_overrides={"seats": pl.Int64, "start_date": pl.Date},
    )
    who = st.sampled_from(ids + ["ZZ"])  # ZZ: rows of an account that is not in accounts
    usage_rows = draw(st.lists(st.tuples(who, st.integers(0, 110), st.sampled_from(METRICS),
                                         st.one_of(st.none(), money)), max_size=120))
    usage = pl.DataFrame(
        [(a, BASE + dt.timedelta(days=d), m, v) for a, d, m, v in usage_rows],
        schema={"account_id": pl.String, "date": pl.Date, "metric": pl.String, "value": pl.Float64},
        orient="row",
    )
    ticket_rows = draw(st.lists(st.tuples(who, st.integers(0, 150), st.integers(0, 23), st.sampled_from(PRIORITIES),
                                          st.one_of(st.none(), st.booleans()),
                                          st.one_of(st.none(), st.floats(-1, 1).map(lambda v: round(v, 2)))),
                                max_size=40))
    closes = draw(st.lists(st.one_of(st.none(), st.integers(0, 200)), min_size=len(ticket_rows),
                           max_size=len(ticket_rows)))
    tickets = pl.DataFrame(
        [(f"t{i}", a, dt.datetime.combine(BASE + dt.timedelta(days=d), dt.time(h)), p, e, s,
          None if c is None else dt.datetime.combine(BASE + dt.timedelta(days=d + c), dt.time((h + 5) % 24)))
         for i, ((a, d, h, p, e, s), c) in enumerate(zip(ticket_rows, closes, strict=True))],
        schema={"ticket_id": pl.String, "account_id": pl.String, "opened_at": pl.Datetime("us"),
                "priority": pl.String, "escalated": pl.Boolean, "sentiment": pl.Float64,
                "closed_at": pl.Datetime("us")},
        orient="row",
    )
    inv_rows = draw(st.lists(st.tuples(who, st.integers(-60, 150), st.integers(0, 60), st.one_of(st.none(), st.integers(0, 200)),
                                       money), max_size=25))
    invoices = pl.DataFrame(
        [(f"i{i}", a, BASE + dt.timedelta(days=d), BASE + dt.timedelta(days=d + due),
          None if paid is None else BASE + dt.timedelta(days=d + paid), amt)
         for i, (a, d, due, paid, amt) in enumerate(inv_rows)],
        schema={"invoice_id": pl.String, "account_id": pl.String, "issued_at": pl.Date, "due_date": pl.Date,
                "paid_at": pl.Date, "amount": pl.Float64},
        orient="row",
    )
    survey_rows = draw(st.lists(st.tuples(who, st.integers(-100, 150), st.sampled_from(("nps", "csat")),
                                          st.one_of(st.none(), st.integers(0, 10))), max_size=25))
    surveys = pl.DataFrame(
        [(f"r{i}", a, BASE + dt.timedelta(days=d), k, None if v is None else float(v))
         for i, (a, d, k, v) in enumerate(survey_rows)],
        schema={"response_id": pl.String, "account_id": pl.String, "responded_at": pl.Date, "kind": pl.String,
                "score": pl.Float64},
        orient="row",
    )
    touch_rows = draw(st.lists(st.tuples(who, st.integers(-100, 150), st.sampled_from(("qbr", "call", "exec_meeting"))),
                               max_size=25))
    touchpoints = pl.DataFrame(
        [(f"m{i}", a, BASE + dt.timedelta(days=d), k) for i, (a, d, k) in enumerate(touch_rows)],
        schema={"touchpoint_id": pl.String, "account_id": pl.String, "at": pl.Date, "kind": pl.String},
        orient="row",
    )
    return {"accounts": accounts, "usage": usage, "tickets": tickets, "invoices": invoices, "surveys": surveys,
            "touchpoints": touchpoints}


@st.composite
def models(draw):
    signals: dict[str, Signal] = {}
    common = {"score": [[0, 0], [1, 100]]}
    for i in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(("latest", "days_since", "open_count", "open_max_age", "max_days_overdue")))
        lookback = draw(st.sampled_from((None, "30d", "90d")))
        if kind == "latest":
            sig = Signal(label="l", table="surveys", measure="latest", where=draw(st.sampled_from((None, "kind = 'nps'"))),
                         value="score", lookback=lookback, **common)
        elif kind == "days_since":
            sig = Signal(label="d", table="touchpoints", measure="days_since", lookback=lookback,
                         where=draw(st.sampled_from((None, "kind IN ('exec_meeting', 'qbr')"))), **common)
        elif kind == "max_days_overdue":
            sig = Signal(label="o", table="invoices", measure="max_days_overdue",
                         where=draw(st.sampled_from((None, "amount > 100"))), **common)
        else:
            table = draw(st.sampled_from(("tickets", "invoices")))
            where = draw(st.sampled_from(TICKET_WHERE if table == "tickets" else (None, "amount > 100")))
            sig = Signal(label="c", table=table, measure=kind, where=where, **common)
        signals[f"st{i}"] = sig
    for i in range(draw(st.integers(0 if signals else 1, 4))):
        table = draw(st.sampled_from(("usage", "tickets")))
        measure = draw(st.sampled_from(("sum", "count", "mean", "trend", "share", "ratio")))
        window = f"{draw(st.sampled_from(WINDOWS))}d"
        common = {"label": f"s{i}", "score": [[0, 0], [1, 100]]}
        if table == "usage":
            metric = draw(st.sampled_from(METRICS))
            where = draw(st.sampled_from(USAGE_WHERE))
            if measure == "share":
                sig = Signal(table="usage", measure="share", metric=metric, of=draw(st.sampled_from(METRICS)),
                             where=where, window=window, **common)
            elif measure == "ratio":
                num = Operand(table="usage", measure=draw(st.sampled_from(("sum", "count", "mean"))),
                              metric=metric, where=where, window=window)
                den = (Operand(column="seats") if draw(st.booleans()) else
                       Operand(table="usage", measure="sum", metric=draw(st.sampled_from(METRICS)),
                               window=f"{draw(st.sampled_from(WINDOWS))}d"))
                sig = Signal(table="usage", measure="ratio", numerator=num, denominator=den, **common)
            else:
                sig = Signal(table="usage", measure=measure, metric=metric, where=where, window=window, **common)
        else:
            where = draw(st.sampled_from(TICKET_WHERE))
            if measure in ("share", "ratio"):
                num = Operand(table="tickets", measure="count", where=where, window=window)
                den = Operand(table="tickets", measure="count", window=f"{draw(st.sampled_from(WINDOWS))}d")
                sig = Signal(table="tickets", measure="ratio", numerator=num, denominator=den, **common)
            elif measure == "count":
                sig = Signal(table="tickets", measure="count", where=where, window=window, **common)
            else:
                sig = Signal(table="tickets", measure=measure, value="sentiment", where=where, window=window, **common)
        signals[f"s{i}"] = sig
    return HealthModel(signals=signals, segments={"default": Segment(weights={n: 1 for n in signals})},
                       tiers=Tiers(at_risk=40, watch=70))


as_of_dates = st.lists(st.integers(20, 110).map(lambda d: BASE + dt.timedelta(days=d)), min_size=1, max_size=3,
                       unique=True)
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                     HealthCheck.data_too_large])


@settings(max_examples=200, **SETTINGS)
@given(tables=books(), model=models(), as_of=as_of_dates)
def test_random_books_same_features_in_duckdb(tables, model, as_of):
    polars = compute_features(tables, model, as_of).collect()
    run = duckdb_runner(duck_with(tables))
    pushed = compute_features({"accounts": tables["accounts"]}, model, as_of, rollup_provider=provider(run),
                              state_provider=state_provider(run)).collect()
    assert_same(polars, pushed, list(model.signals))


@pytest.fixture(scope="module")
def pg_random(pg_url):
    import sqlalchemy as sa

    url = fresh_database(pg_url, "chi_pushdown_random")
    engine = sa.create_engine(url)
    yield url, engine
    engine.dispose()


@settings(max_examples=15, **SETTINGS)
@given(tables=books(), model=models(), as_of=as_of_dates)
def test_random_books_same_features_in_postgres(pg_random, tables, model, as_of):
    url, engine = pg_random
    load_tables(url, tables)
    polars = compute_features(tables, model, as_of).collect()
    with engine.connect() as conn:
        run = sqlalchemy_runner(conn)
        pushed = compute_features({"accounts": tables["accounts"]}, model, as_of, rollup_provider=provider(run),
                                  state_provider=state_provider(run)).collect()
    assert_same(polars, pushed, list(model.signals))


def boundary_book() -> tuple[dict[str, pl.DataFrame], list[dt.date]]:
    """Every state record's dates on, just before and just after the as-of dates (weekly
    grid), one account per combination — where an off-by-one in SQL would show."""
    T = dt.date(2026, 3, 31)
    as_of = [T - dt.timedelta(days=7 * i) for i in range(3)]
    offs = (-8, -7, -1, 0, 1, 7, None)
    inv, tic, sur, tou, ids = [], [], [], [], []
    i = 0
    for a in (-20, -14, -8, -7, 0):
        for b in offs:
            for c in offs:
                acc = f"A{i:04d}"
                ids.append(acc)
                issued = T + dt.timedelta(days=a)
                due = T + dt.timedelta(days=b if b is not None else 3)
                paid = None if c is None else T + dt.timedelta(days=c)
                inv.append((f"i{i}", acc, issued, due, paid, 100.0 + i))
                tic.append((f"t{i}", acc, dt.datetime.combine(issued, dt.time(9)), "P1",
                            None if paid is None else dt.datetime.combine(paid, dt.time(23))))
                sur.append((f"r{i}", acc, due, "nps", float(i % 11)))
                sur.append((f"q{i}", acc, due, "nps", float((i * 7) % 11)))  # two answers on one day
                tou.append((f"m{i}", acc, paid or issued, "qbr"))
                i += 1
    accounts = pl.DataFrame({"account_id": ids, "name": ids, "segment": "s", "owner": "o", "arr": 1.0,
                             "renewal_date": dt.date(2027, 1, 1)})
    tables = {
        "accounts": accounts,
        "invoices": pl.DataFrame(inv, schema=["invoice_id", "account_id", "issued_at", "due_date", "paid_at", "amount"],
                                 orient="row"),
        "tickets": pl.DataFrame(tic, schema={"ticket_id": pl.String, "account_id": pl.String,
                                             "opened_at": pl.Datetime("us"), "priority": pl.String,
                                             "closed_at": pl.Datetime("us")}, orient="row"),
        "surveys": pl.DataFrame(sur, schema=["response_id", "account_id", "responded_at", "kind", "score"], orient="row"),
        "touchpoints": pl.DataFrame(tou, schema=["touchpoint_id", "account_id", "at", "kind"], orient="row"),
    }
    return tables, as_of


def test_state_measures_at_the_grid_edges(pg_url):
    tables, as_of = boundary_book()
    common = {"score": [[0, 0], [1, 100]]}
    model = HealthModel(
        signals={
            "overdue": Signal(label="o", table="invoices", measure="max_days_overdue", **common),
            "open_inv": Signal(label="i", table="invoices", measure="open_count", **common),
            "open_age": Signal(label="a", table="tickets", measure="open_max_age", **common),
            "open_tix": Signal(label="t", table="tickets", measure="open_count", **common),
            "nps": Signal(label="n", table="surveys", measure="latest", value="score", lookback="7d", **common),
            "since": Signal(label="s", table="touchpoints", measure="days_since", lookback="7d", **common),
        },
        segments={"default": Segment(weights={"overdue": 1})}, tiers=Tiers(at_risk=40, watch=70),
    )
    polars = compute_features(tables, model, as_of).collect()
    assert polars["overdue"].max() > 0 and polars["open_tix"].max() > 0
    run = duckdb_runner(duck_with(tables))
    pushed = compute_features({"accounts": tables["accounts"]}, model, as_of, rollup_provider=provider(run),
                              state_provider=state_provider(run)).collect()
    assert_same(polars, pushed, list(model.signals))
    import sqlalchemy as sa

    url = fresh_database(pg_url, "chi_pushdown_edges")
    load_tables(url, tables)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        run = sqlalchemy_runner(conn)
        pushed = compute_features({"accounts": tables["accounts"]}, model, as_of, rollup_provider=provider(run),
                                  state_provider=state_provider(run)).collect()
    engine.dispose()
    assert_same(polars, pushed, list(model.signals))
