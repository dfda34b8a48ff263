"""Push the expensive part of the features — the windowed roll-ups — down to SQL.

The engine (`health.features`) rolls every event table up to (account, grid bin) once:
per bin, the sum of a value or the number of rows where a signal's `metric` / `where`
hold; windows are then rolling sums over whole bins on the grid. That roll-up is the only
step that reads raw records (hundreds of millions of usage rows at scale). This module
compiles it, per table, to ONE neutral sqlglot expression tree —

    SELECT account_id, CAST(DATE_DIFF(day, CAST(<time> AS DATE), :hi) DIV <step> AS BIGINT) AS _back,
           SUM(CASE WHEN <metric = ...> AND <where> THEN CAST(<value> AS DOUBLE) ELSE 0 END) AS _a_usage_0_sum,
           CAST(SUM(CASE WHEN ... THEN 1 ELSE 0 END) AS BIGINT) AS _a_usage_1_count, ...
    FROM <table, or its mapped columns> AS r
    WHERE CAST(<time> AS DATE) > :lo AND CAST(<time> AS DATE) <= :hi [AND metric IN (...)]
    GROUP BY account_id, <_back>

— rendered per dialect (duckdb, postgres, snowflake, databricks, tsql) with the grid's
dates as bound parameters. The model's `where` conditions are parsed by sqlglot (only
expressions: no sub-queries or statements) and re-rendered, never pasted. The result
(account, bin, aggregates) comes back as Polars and is joined onto the engine's grid by
`compute_features(..., rollup_provider=provider(...))`, which finishes the windows,
ratios, trends and every state measure exactly as it does for a Polars roll-up: the same
model gives the same numbers wherever the roll-up ran (tests/health/test_pushdown.py).

The state measures (latest, days_since, open_count, open_max_age, max_days_overdue) are
pushed down the same way (`compile_state`, `state_provider`): each returns the sparse
(account, grid position) frame the engine would build — the latest record's date and
value per bin, +1/-1 at opening and closing, the earliest open record per grid date
(a join on the grid's positions) — and the engine fills it forward. With both providers
Polars reads only the accounts. What always stays in Polars: everything after the
roll-ups (windows over bins, forward fills, scores, tiers).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import polars as pl
import sqlglot
from sqlglot import exp

from health.features import KEY, ROW, DEFAULT_VALUE, FeaturePlan, _Grid, _TablePlan
from health.model import HealthModel
from health.schema import TABLES

DIALECTS: tuple[str, ...] = ("duckdb", "postgres", "snowflake", "databricks", "tsql")
CONDITION_DIALECT = "postgres"
"""The model's conditions are written for Polars' SQL, which follows PostgreSQL."""
BACK = "_back"
SQLALCHEMY_DIALECTS = {"postgresql": "postgres", "mssql": "tsql", "duckdb": "duckdb",
                       "snowflake": "snowflake", "databricks": "databricks", "sqlite": "sqlite"}

_FORBIDDEN = tuple(
    getattr(exp, name) for name in (
        "Query", "Subquery", "Command", "DDL", "DML", "Drop", "Create", "Insert", "Update", "Delete",
        "Merge", "Block", "Table", "Placeholder", "Parameter", "Star", "Into",
    ) if hasattr(exp, name)
)


class PushdownError(ValueError):
    """A condition or table that cannot be pushed down; the message says which and why."""


def translate_condition(where: str) -> exp.Expression:
    """A model condition (`where:`) as a neutral sqlglot tree. Only expressions are
    allowed: comparisons, boolean logic, IN, IS NULL, LIKE, arithmetic, functions."""
    try:
        statements = [t for t in sqlglot.parse(where, read=CONDITION_DIALECT) if t is not None]
        if len(statements) != 1:
            raise PushdownError(f"the condition {where!r} must be one expression, not {len(statements)} statements")
        tree = statements[0]
    except sqlglot.errors.ParseError as exc:
        raise PushdownError(f"cannot translate the condition {where!r} to SQL: {str(exc).splitlines()[0]}") from None
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise PushdownError(
                f"the condition {where!r} contains {type(node).__name__.lower()}, which a signal "
                f"condition may not (only expressions over the table's columns)"
            )
    return tree


@dataclass(frozen=True)
class SqlTable:
    """Where one canonical table lives in the database.

    `name` is a (schema-qualified) table name, or `query` a SELECT in `dialect`;
    `columns` maps the database's column names to canonical names (source names are
    quoted exactly as given when `quote` — the names a database reported — else left to
    the dialect's case rules)."""

    name: str | None = None
    query: str | None = None
    dialect: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    quote: bool = False

    def from_(self, table: str, needed: Sequence[str]) -> exp.Expression:
        if self.query:
            try:
                base: exp.Expression = exp.Subquery(this=sqlglot.parse_one(self.query, read=self.dialect),
                                                    alias=exp.TableAlias(this=exp.to_identifier("src")))
            except sqlglot.errors.ParseError as exc:
                raise PushdownError(f"the query for {table} cannot be parsed: {str(exc).splitlines()[0]}") from None
        else:
            base = exp.to_table(self.name or table, dialect=self.dialect)
        if not self.columns and not self.quote:
            return base.as_("r") if not isinstance(base, exp.Subquery) else _realias(base, "r")
        theirs = {ours: th for th, ours in self.columns.items()}
        cols = [
            exp.alias_(exp.column(exp.to_identifier(theirs.get(c, c), quoted=self.quote or None)), c)
            for c in needed
        ]
        return exp.Subquery(this=exp.select(*cols).from_(base), alias=exp.TableAlias(this=exp.to_identifier("r")))


def _realias(sub: exp.Subquery, alias: str) -> exp.Subquery:
    sub.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return sub


@dataclass
class Rollup:
    """One table's roll-up as a neutral tree, its parameters and how to key its result."""

    table: str
    tree: exp.Select
    params: dict[str, dt.date]
    aggs: dict[str, str]
    """aggregate column -> "sum" or "count"."""

    def sql(self, dialect: str, paramstyle: str = "named") -> tuple[str, Any]:
        """The SQL text for `dialect` and its parameters, in the driver's `paramstyle`
        (named :x, pyformat %(x)s, dollar $x, qmark ?, numeric :1, numeric_dollar $1 —
        duckdb-engine's —, format %s)."""
        order: list[str] = []
        unique: list[str] = []

        def swap(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Placeholder):
                name = node.name
                order.append(name)
                if name not in unique:
                    unique.append(name)
                # $n reuses one number per name: a GROUP BY expression must read the same
                # placeholder as its SELECT twin, or DuckDB cannot match them.
                text = {"named": f":{name}", "pyformat": f"%({name})s", "dollar": f"${name}",
                        "qmark": "?", "format": "%s", "numeric": f":{len(order)}",
                        "numeric_dollar": f"${unique.index(name) + 1}"}[paramstyle]
                return exp.var(text)
            return node

        text = self.tree.transform(swap).sql(dialect=dialect)
        if paramstyle == "numeric_dollar":
            return text, [self.params[n] for n in unique]
        if paramstyle in ("qmark", "format", "numeric"):
            return text, [self.params[n] for n in order]
        return text, dict(self.params)

    def empty(self) -> pl.DataFrame:
        return _empty(self)

    def finish(self, df: pl.DataFrame, grid: _Grid) -> pl.LazyFrame:
        """The database's result keyed onto the engine's grid: ROW + one column per aggregate."""
        df = df.rename({c: c.lower() for c in df.columns})
        n = grid.n_dates
        casts = [pl.col(a.lower()).cast(pl.Float64 if k == "sum" else pl.Int64).alias(a) for a, k in self.aggs.items()]
        return (
            df.lazy()
            .with_columns(grid.key().alias(KEY))
            .filter(pl.col(KEY).is_not_null())
            .select(
                (pl.col(KEY) * n + (n - 1 - pl.col(BACK).cast(pl.Int64))).alias(ROW),
                *[c.round_sig_figs(12) if self.aggs[c.meta.output_name()] == "sum" else c for c in casts],
            )
        )


def _date(col: str) -> exp.Expression:
    return exp.cast(exp.column(col), exp.DataType.build("date"))


def _param(name: str) -> exp.Expression:
    return exp.cast(exp.Placeholder(this=name), exp.DataType.build("date"))


def compile_table(tplan: _TablePlan, grid: _Grid, source: SqlTable | None = None) -> Rollup:
    """The windowed roll-up of one table as a neutral sqlglot tree."""
    table = tplan.table
    tcol = TABLES[table].time_column
    assert tcol is not None
    needed: list[str] = ["account_id", tcol]
    aggs: dict[str, str] = {}
    selects: list[exp.Expression] = []
    for name in tplan.agg_exprs:
        spec = tplan.specs.get(name)
        if spec is None:
            raise PushdownError(f"roll-up {name} of {table} has no SQL description")
        parts: list[exp.Expression] = []
        if spec.metric is not None:
            parts.append(exp.EQ(this=exp.column("metric"), expression=exp.Literal.string(spec.metric)))
            needed.append("metric")
        if spec.where:
            cond_tree = translate_condition(spec.where)
            parts.append(exp.paren(cond_tree) if not isinstance(cond_tree, (exp.Column, exp.Predicate)) else cond_tree)
            needed.extend(c.name for c in cond_tree.find_all(exp.Column))
        cond = exp.and_(*parts) if parts else None
        if spec.kind == "sum":
            value = spec.value or DEFAULT_VALUE.get(table)
            if value is None:
                raise PushdownError(f"roll-up {name} of {table} sums no column")
            needed.append(value)
            val = exp.cast(exp.column(value), exp.DataType.build("double"))
            inner = val if cond is None else exp.Case(ifs=[exp.If(this=cond, true=val)],
                                                       default=exp.Literal.number(0))
            agg = exp.cast(exp.Sum(this=inner), exp.DataType.build("double"))
        else:
            inner = (exp.Literal.number(1) if cond is None
                     else exp.Case(ifs=[exp.If(this=cond, true=exp.Literal.number(1))], default=exp.Literal.number(0)))
            agg = exp.cast(exp.Sum(this=inner), exp.DataType.build("bigint"))
        aggs[name] = spec.kind
        selects.append(exp.alias_(agg, name))

    day = _date(tcol)
    back = exp.cast(
        exp.IntDiv(this=exp.DateDiff(this=_param("hi"), expression=day, unit=exp.var("DAY")),
                   expression=exp.Literal.number(grid.step)),
        exp.DataType.build("bigint"),
    )
    where = exp.and_(
        exp.GT(this=_date(tcol), expression=_param("lo")),
        exp.LTE(this=_date(tcol), expression=_param("hi")),
        exp.Not(this=exp.Is(this=exp.column("account_id"), expression=exp.Null())),
    )
    if table == "usage" and not tplan.all_metrics and tplan.metrics:
        where = exp.and_(where, exp.In(this=exp.column("metric"),
                                       expressions=[exp.Literal.string(m) for m in sorted(tplan.metrics)]))
        needed.append("metric")
    src = (source or SqlTable()).from_(table, list(dict.fromkeys(needed)))
    tree = (
        exp.select(exp.column("account_id"), exp.alias_(back, BACK), *selects)
        .from_(src)
        .where(where)
        .group_by(exp.column("account_id"), back.copy())
    )
    params = {"lo": grid.first - dt.timedelta(days=grid.step), "hi": grid.last}
    return Rollup(table, tree, params, aggs)


def plan_and_grid(model: HealthModel, as_of: Sequence[dt.date], signals: Sequence[str] | None = None,
                  ids: pl.Series | None = None) -> tuple[FeaturePlan, _Grid]:
    """The engine's plan and grid for these dates (the grid's dates do not depend on the
    accounts; pass `ids` to key results)."""
    plan = FeaturePlan(model, signals)
    grid = _Grid.build(ids if ids is not None else pl.Series("account_id", [], pl.String), as_of, plan)
    return plan, grid


def compile_rollups(model: HealthModel, as_of: Sequence[dt.date], signals: Sequence[str] | None = None,
                    sources: Mapping[str, SqlTable] | None = None) -> dict[str, Rollup]:
    """Every windowed roll-up the model needs, per table."""
    plan, grid = plan_and_grid(model, as_of, signals)
    return {t: compile_table(tp, grid, (sources or {}).get(t)) for t, tp in plan.tables.items() if tp.windows}


Runner = Callable[[Any], pl.DataFrame]
"""Runs a compiled roll-up (Rollup or StateRollup) and returns its rows."""


def provider(run: Runner, sources: Mapping[str, SqlTable] | None = None,
             tables: Sequence[str] | None = None) -> Callable[[str, _TablePlan, _Grid], pl.LazyFrame | None]:
    """A `rollup_provider` for `compute_features`: roll `tables` (default: every table
    with windows) up in SQL with `run`, key the result onto the grid."""

    def rollup(table: str, tplan: _TablePlan, grid: _Grid) -> pl.LazyFrame | None:
        if tables is not None and table not in tables:
            return None
        r = compile_table(tplan, grid, (sources or {}).get(table))
        return r.finish(run(r), grid)

    return rollup


def _empty(r: Rollup) -> pl.DataFrame:
    return pl.DataFrame(schema={"account_id": pl.String, BACK: pl.Int64,
                                **{a: (pl.Float64 if k == "sum" else pl.Int64) for a, k in r.aggs.items()}})


def duckdb_runner(con: Any) -> Runner:
    """Run roll-ups on a DuckDB connection (native `$name` parameters)."""

    def run(r: Rollup) -> pl.DataFrame:
        text, params = r.sql("duckdb", "dollar")
        df = pl.from_arrow(con.sql(text, params=params).to_arrow_table())
        return df if df.height else r.empty()

    return run


def sqlalchemy_runner(conn: Any, dialect: str | None = None) -> Runner:
    """Run roll-ups on a SQLAlchemy connection, in its driver's own parameter style."""

    name = dialect or SQLALCHEMY_DIALECTS.get(conn.dialect.name, conn.dialect.name)

    def run(r: Rollup) -> pl.DataFrame:
        text, params = r.sql(name, conn.dialect.paramstyle)
        res = conn.exec_driver_sql(text, tuple(params) if isinstance(params, list) else params)
        cols = [str(c).lower() for c in res.keys()]
        rows = res.fetchall()
        if not rows:
            return r.empty()
        return pl.DataFrame([tuple(row) for row in rows], schema=cols, orient="row", infer_schema_length=None)

    return run


# ------------------------------------------------------------------ state measures

T_COL = "_t"


@dataclass
class StateRollup:
    """One state measure's sparse frame (what `_state_features` builds in Polars) as a
    neutral tree: (account, grid position `_t`, columns)."""

    table: str
    tree: exp.Select
    params: dict[str, dt.date]
    dtypes: dict[str, pl.DataType]

    sql = Rollup.sql

    def empty(self) -> pl.DataFrame:
        return _empty_state(self)

    def finish(self, df: pl.DataFrame, grid: _Grid) -> pl.LazyFrame:
        df = df.rename({c: c.lower() for c in df.columns})
        n = grid.n_dates
        return (
            df.lazy()
            .with_columns(grid.key().alias(KEY))
            .filter(pl.col(KEY).is_not_null())
            .select((pl.col(KEY) * n + pl.col(T_COL).cast(pl.Int64)).alias(ROW),
                    *[pl.col(c.lower()).cast(t).alias(c) for c, t in self.dtypes.items()])
        )


def _back(day: exp.Expression, step: int, minus: int = 0) -> exp.Expression:
    """Whole grid steps from `day` back from the last grid date (day <= last)."""
    diff: exp.Expression = exp.DateDiff(this=_param("hi"), expression=day, unit=exp.var("DAY"))
    if minus:
        diff = exp.Sub(this=diff, expression=exp.Literal.number(minus))
    return exp.cast(exp.IntDiv(this=exp.paren(diff), expression=exp.Literal.number(step)), exp.DataType.build("bigint"))


def _t_of(day: exp.Expression, grid: _Grid, minus: int = 0) -> exp.Expression:
    """The grid position of `day` (<= the last date), clamped at 0 (older than the grid:
    known at its first date). `minus=1`: the first grid date strictly after `day`."""
    t = exp.Sub(this=exp.Literal.number(grid.n_dates - 1), expression=_back(day, grid.step, minus))
    return exp.Greatest(this=t, expressions=[exp.Literal.number(0)])


def _condition(sig: Any, table: str) -> tuple[exp.Expression | None, list[str]]:
    parts: list[exp.Expression] = []
    cols: list[str] = []
    if getattr(sig, "metric", None) is not None and table == "usage":
        parts.append(exp.EQ(this=exp.column("metric"), expression=exp.Literal.string(sig.metric)))
        cols.append("metric")
    if sig.where:
        tree = translate_condition(sig.where)
        parts.append(exp.paren(tree))
        cols.extend(c.name for c in tree.find_all(exp.Column))
    return (exp.and_(*parts) if parts else None), cols


def compile_state(tplan: _TablePlan, grid: _Grid, col: str, source: SqlTable | None = None) -> StateRollup:
    """One state measure (latest, days_since, open_count, open_max_age, max_days_overdue)."""
    from health.features import OPEN_COLUMNS

    kind, sig = tplan.states[col]
    table = tplan.table
    tcol = TABLES[table].time_column
    assert tcol is not None
    n = grid.n_dates
    cond, cond_cols = _condition(sig, table)
    day = _date(tcol)
    base = [exp.LTE(this=day, expression=_param("hi")),
            exp.Not(this=exp.Is(this=exp.column("account_id"), expression=exp.Null()))]
    if cond is not None:
        base.append(cond)
    needed = ["account_id", tcol, *cond_cols]
    params = {"hi": grid.last}
    acc = exp.column("account_id")
    if kind in ("latest", "days_since"):
        value = sig.value or DEFAULT_VALUE.get(table)
        inner_cols = [acc, exp.alias_(day.copy(), "_d"), exp.alias_(_t_of(day.copy(), grid), T_COL)]
        if kind == "latest":
            needed.append(value)
            inner_cols.append(exp.alias_(exp.cast(exp.column(value), exp.DataType.build("double")), "_v"))
        src = (source or SqlTable()).from_(table, list(dict.fromkeys(needed)))
        inner = exp.select(*inner_cols).from_(src).where(exp.and_(*base))
        outs = [exp.alias_(exp.Max(this=exp.column("_d")), f"{col}_at")]
        dtypes: dict[str, pl.DataType] = {f"{col}_at": pl.Date()}
        if kind == "latest":
            # Several answers on the latest day of a bin: their mean (as the engine does).
            mx = exp.Window(this=exp.Max(this=exp.column("_d")),
                            partition_by=[exp.column("account_id"), exp.column(T_COL)])
            inner = exp.select("account_id", "_d", T_COL, "_v", exp.alias_(mx, "_mx")).from_(inner.subquery("a"))
            latest = exp.Case(ifs=[exp.If(this=exp.EQ(this=exp.column("_d"), expression=exp.column("_mx")),
                                          true=exp.column("_v"))])
            outs.append(exp.alias_(exp.cast(exp.Avg(this=latest), exp.DataType.build("double")), f"{col}_v"))
            dtypes[f"{col}_v"] = pl.Float64()
        tree = (exp.select(exp.column("account_id"), exp.column(T_COL), *outs)
                .from_(inner.subquery("b")).group_by(exp.column("account_id"), exp.column(T_COL)))
        return StateRollup(table, tree, params, dtypes)

    start, end = OPEN_COLUMNS[table]
    needed += [start, end]
    src = (source or SqlTable()).from_(table, list(dict.fromkeys(needed)))
    end_day = _date(end)
    if kind == "open_count":
        opened = exp.select(acc.copy(), exp.alias_(_t_of(_date(start), grid), T_COL),
                            exp.alias_(exp.Literal.number(1), "_delta")).from_(src.copy()).where(exp.and_(*[b.copy() for b in base]))
        closed = (exp.select(acc.copy(), exp.alias_(_t_of(end_day.copy(), grid), T_COL),
                             exp.alias_(exp.Literal.number(-1), "_delta")).from_(src.copy())
                  .where(exp.and_(*[b.copy() for b in base],
                                  exp.Not(this=exp.Is(this=exp.column(end), expression=exp.Null())),
                                  exp.LTE(this=end_day.copy(), expression=_param("hi")))))
        both = exp.union(opened, closed, distinct=False)
        tree = (exp.select(exp.column("account_id"), exp.column(T_COL),
                           exp.alias_(exp.cast(exp.Sum(this=exp.column("_delta")), exp.DataType.build("bigint")),
                                      f"{col}_d"))
                .from_(exp.Subquery(this=both, alias=exp.TableAlias(this=exp.to_identifier("u"))))
                .group_by(exp.column("account_id"), exp.column(T_COL)))
        return StateRollup(table, tree, params, {f"{col}_d": pl.Int64()})

    # open_max_age, max_days_overdue: every grid position a record is open at
    if kind == "max_days_overdue":
        since = _date("due_date")
        needed.append("due_date")
        src = (source or SqlTable()).from_(table, list(dict.fromkeys(needed)))
        lo = exp.Greatest(this=_t_of(since.copy(), grid, minus=1), expressions=[_t_of(_date("issued_at"), grid)])
        base.append(exp.LT(this=since.copy(), expression=_param("hi")))  # due on/after the last date: never overdue
    else:
        since = _date(start)
        lo = _t_of(since.copy(), grid)
    hi = exp.Case(ifs=[exp.If(this=exp.or_(exp.Is(this=exp.column(end), expression=exp.Null()),
                                           exp.GT(this=end_day.copy(), expression=_param("hi"))),
                              true=exp.Literal.number(n))],
                  default=_t_of(end_day.copy(), grid))
    spans = exp.select(acc.copy(), exp.alias_(since, "_since"), exp.alias_(lo, "_lo"), exp.alias_(hi, "_hi")) \
        .from_(src).where(exp.and_(*base))
    grid_t = exp.values([(i,) for i in range(n)], alias="g", columns=[T_COL])
    tree = (
        exp.select(exp.column("account_id", table="o"), exp.alias_(exp.column(T_COL, table="g"), T_COL),
                   exp.alias_(exp.Min(this=exp.column("_since", table="o")), f"{col}_since"))
        .from_(exp.Subquery(this=spans, alias=exp.TableAlias(this=exp.to_identifier("o"))))
        .join(grid_t, on=exp.and_(
            exp.GTE(this=exp.column(T_COL, table="g"), expression=exp.column("_lo", table="o")),
            exp.LT(this=exp.column(T_COL, table="g"), expression=exp.column("_hi", table="o"))))
        .group_by(exp.column("account_id", table="o"), exp.column(T_COL, table="g"))
    )
    return StateRollup(table, tree, params, {f"{col}_since": pl.Date()})


def _empty_state(r: StateRollup) -> pl.DataFrame:
    return pl.DataFrame(schema={"account_id": pl.String, T_COL: pl.Int64, **r.dtypes})


def state_provider(run: Callable[[Any], pl.DataFrame], sources: Mapping[str, SqlTable] | None = None,
                   tables: Sequence[str] | None = None) -> Callable[[str, _TablePlan, _Grid], list[pl.LazyFrame] | None]:
    """A `state_provider` for `compute_features`: the state measures of `tables` (default:
    every table that has them) computed in SQL with `run` (a runner from this module)."""

    def states(table: str, tplan: _TablePlan, grid: _Grid) -> list[pl.LazyFrame] | None:
        if tables is not None and table not in tables:
            return None
        out = []
        for col in tplan.states:
            r = compile_state(tplan, grid, col, (sources or {}).get(table))
            out.append(r.finish(run(r), grid))
        return out

    return states


# ------------------------------------------------------------ columns a model reads


def columns_needed(model: HealthModel) -> dict[str, set[str]]:
    """Per event table, the columns the model's signals read beyond the canonical ones a
    source always reads: those named in `where` conditions and as `value`. A warehouse
    source reads them too (`SqlSource.load(extra_columns=columns_needed(model))`), and
    nothing else."""
    out: dict[str, set[str]] = {}

    def note(table: str | None, where: str | None, value: str | None) -> None:
        if table is None or table == "accounts":
            return
        cols = out.setdefault(table, set())
        if where:
            cols.update(c.name for c in translate_condition(where).find_all(exp.Column))
        if value:
            cols.add(value)

    for sig in model.signals.values():
        note(sig.table, sig.where, sig.value)
        for op in (sig.numerator, sig.denominator):
            if op is not None and op.column is None:
                note(op.table or sig.table, op.where, op.value)
    canonical = {t: {c.name for c in TABLES[t].columns} for t in TABLES}
    return {t: cols - canonical[t] for t, cols in out.items() if cols - canonical[t]}
