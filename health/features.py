"""Point-in-time features: raw signal values for every account at every as-of date.

The whole computation is one lazy Polars plan over **one dense, ordered grid**: every
account x every grid date, one integer row id `key * n_dates + t`, built from
`int_range` (so it is sorted by construction and every join keeps its order). Grid dates
are `g` days apart, where g is the gcd of the as-of spacing and every window and offset,
so each window boundary falls on a grid date; a few warm-up dates before the first as-of
date give the earliest windows their full length.

* **Windowed aggregates** (sum / count / mean / trend / share / ratio): each table is
  rolled up once to (account, grid bin) — one pass over the big usage table — joined to
  the grid, and a window is a rolling sum over a whole number of grid rows (shifted for
  an offset, e.g. the prior window of a trend). The warm-up rows keep every as-of row's
  window inside its own account, so the rolling sum runs down the whole grid at once.
  No window is re-aggregated per date. (A running total differenced at both ends would
  be as fast, but loses digits once it has summed a whole book of usage.)
* **State at T** (latest value, days since, open tickets, days overdue): each record
  lands on the first grid date at or after it; a forward fill or a running total per
  account carries it to later dates.

Point-in-time rules (DESIGN.md): a record counts at T when its time column's date is
<= T; a ticket is open at T when opened <= T and (closed is null or closed > T); an
invoice is overdue at T when due_date < T, issued <= T and (paid is null or paid > T).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from functools import reduce
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import polars as pl

from health.model import HealthModel, Operand, Signal, parse_days
from health.schema import TABLES

Frame = pl.LazyFrame | pl.DataFrame
KEY = "_key"
T_IDX = "_t"
ROW = "_row"
AS_OF = "as_of"

LIFECYCLE_COLUMNS = ("start_date", "status", "renewal_date")
"""Account columns the engine itself reads (who was a customer when)."""
DEFAULT_VALUE = {"usage": "value", "surveys": "score", "invoices": "amount"}
OPEN_COLUMNS = {"tickets": ("opened_at", "closed_at"), "invoices": ("issued_at", "paid_at")}


def _lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _date(col: str, schema: pl.Schema) -> pl.Expr:
    dtype = schema.get(col)
    if isinstance(dtype, pl.Datetime):
        return pl.col(col).dt.date()
    return pl.col(col).cast(pl.Date)


def _cond(sig_like: Signal | Operand, table: str) -> pl.Expr:
    parts: list[pl.Expr] = []
    if getattr(sig_like, "metric", None) is not None and table == "usage":
        parts.append(pl.col("metric") == pl.lit(sig_like.metric))
    if sig_like.where:
        parts.append(pl.sql_expr(sig_like.where).fill_null(False))
    # Not pl.lit(True): a literal is summed once per group, not once per row.
    return reduce(lambda a, b: a & b, parts) if parts else pl.col("_date").is_not_null()


class AggSpec(NamedTuple):
    """What one roll-up column adds up, in words a SQL compiler can use
    (`health.pushdown`): per (account, grid bin), the sum of `value` (kind "sum") or the
    number of rows (kind "count") where `metric` (usage only) and `where` hold."""

    kind: str
    metric: str | None
    where: str | None
    value: str | None


@dataclass
class _TablePlan:
    """What one event table must deliver: aggregate columns and the windows over them."""

    table: str
    agg_exprs: dict[str, pl.Expr] = field(default_factory=dict)
    windows: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """output column -> (aggregate column, window days, offset days)."""
    specs: dict[str, AggSpec] = field(default_factory=dict)
    """aggregate column -> what it adds up (the same as its Polars expression)."""
    states: dict[str, tuple[str, Signal]] = field(default_factory=dict)
    """output column -> (kind, signal) for latest / days_since / open_* / overdue."""
    metrics: set[str] = field(default_factory=set)
    all_metrics: bool = False

    def agg(self, kind: str, cond: pl.Expr, value: str | None, label: str, spec: AggSpec | None = None) -> str:
        # Table-qualified: every table's roll-up is joined onto the same grid.
        name = f"_a_{self.table}_{len(self.agg_exprs)}_{label}"
        for existing, expr in self.agg_exprs.items():
            if expr.meta.eq(self._agg_expr(kind, cond, value)):
                return existing
        self.agg_exprs[name] = self._agg_expr(kind, cond, value)
        if spec is not None:
            self.specs[name] = spec
        return name

    @staticmethod
    def _agg_expr(kind: str, cond: pl.Expr, value: str | None) -> pl.Expr:
        if kind == "count":
            return pl.when(cond).then(1).otherwise(0).cast(pl.Int64)
        return pl.when(cond).then(pl.col(value).cast(pl.Float64)).otherwise(0.0)  # type: ignore[arg-type]

    def window(self, agg_col: str, days: int, offset: int) -> str:
        name = f"_w_{agg_col}_{days}_{offset}"
        self.windows[name] = (agg_col, days, offset)
        return name


class FeaturePlan:
    """Compiles the model's signals into per-table plans and raw-value expressions."""

    def __init__(self, model: HealthModel, signals: Sequence[str] | None = None):
        self.model = model
        self.names = list(signals) if signals is not None else list(model.signals)
        self.tables: dict[str, _TablePlan] = {}
        self.raw: dict[str, pl.Expr] = {}
        self.start_guard: dict[str, int] = {}
        for name in self.names:
            self.raw[name] = self._compile(name, model.signals[name])

    def _plan(self, table: str) -> _TablePlan:
        return self.tables.setdefault(table, _TablePlan(table))

    def _note_metric(self, plan: _TablePlan, obj: Signal | Operand, extra: str | None = None) -> None:
        if plan.table != "usage":
            return
        if getattr(obj, "metric", None) is None:
            plan.all_metrics = True
        else:
            plan.metrics.add(obj.metric)  # type: ignore[arg-type]
        if extra:
            plan.metrics.add(extra)

    def _window_sum(self, obj: Signal | Operand, table: str, kind: str, days: int, offset: int = 0,
                    metric: str | None = None) -> pl.Expr:
        plan = self._plan(table)
        self._note_metric(plan, obj, metric)
        cond = _cond(obj, table)
        if metric is not None:
            cond = (pl.col("metric") == pl.lit(metric)) & (
                pl.sql_expr(obj.where).fill_null(False) if obj.where else pl.col("_date").is_not_null()
            )
        value = obj.value or DEFAULT_VALUE.get(table)
        spec = AggSpec(
            kind,
            metric if metric is not None else (getattr(obj, "metric", None) if table == "usage" else None),
            obj.where,
            value if kind == "sum" else None,
        )
        agg = plan.agg(kind, cond, value if kind == "sum" else None, kind, spec)
        return pl.col(plan.window(agg, days, offset))

    def _operand(self, op: Operand, table_default: str) -> pl.Expr:
        if op.column is not None:
            return pl.col(op.column).cast(pl.Float64)
        table = op.table or table_default
        days = _days(op.window)
        if op.measure == "count":
            return self._window_sum(op, table, "count", days).cast(pl.Float64)
        total = self._window_sum(op, table, "sum", days)
        if op.measure == "sum":
            return total
        count = self._window_sum(op, table, "count", days)
        return pl.when(count > 0).then(total / count)

    def _compile(self, name: str, sig: Signal) -> pl.Expr:
        m, table = sig.measure, sig.table
        if m == "column":
            return pl.col(sig.column).cast(pl.Float64)  # type: ignore[arg-type]
        if m == "age":
            return (pl.col(AS_OF) - pl.col(sig.column)).dt.total_days().cast(pl.Float64)  # type: ignore[arg-type]
        if m == "ratio":
            num = self._operand(sig.numerator, table)  # type: ignore[arg-type]
            den = self._operand(sig.denominator, table)  # type: ignore[arg-type]
            return pl.when(den > 0).then(num / den)
        w = sig.window_days or 0
        if m == "count":
            return self._window_sum(sig, table, "count", w).cast(pl.Float64)
        if m == "sum":
            return self._window_sum(sig, table, "sum", w)
        if m == "mean":
            total = self._window_sum(sig, table, "sum", w)
            count = self._window_sum(sig, table, "count", w)
            return pl.when(count > 0).then(total / count)
        if m == "trend":
            last = self._window_sum(sig, table, "sum", w, 0)
            prior = self._window_sum(sig, table, "sum", w, w)
            self.start_guard[name] = 2 * w
            return pl.when(prior > 0).then((last - prior) / prior)
        if m == "share":
            part = self._window_sum(sig, table, "sum", w)
            whole = self._window_sum(sig, table, "sum", w, metric=sig.of)
            return pl.when(whole > 0).then(part / whole)
        plan = self._plan(table)
        self._note_metric(plan, sig)
        col = f"_s_{name}"
        plan.states[col] = (m, sig)
        return pl.col(col)


def _days(window: str | int | None) -> int:
    return parse_days(window) if window is not None else 0


@dataclass(frozen=True)
class _Grid:
    """Accounts x grid dates as integers. An account is its position among the account
    ids; a grid date is `t` (0 = the first warm-up date); a row is `key * n_dates + t`.
    Joining on one integer is several times faster than on (account_id, date)."""

    ids: pl.Enum
    n_keys: int
    last: dt.date
    step: int
    n_dates: int
    as_of: tuple[dt.date, ...]

    @classmethod
    def build(cls, ids: pl.Series, as_of: Sequence[dt.date], plan: "FeaturePlan") -> "_Grid":
        dates = sorted(set(as_of))
        if not dates:
            raise ValueError("at least one as-of date is needed")
        last = dates[-1]
        spans = [(last - d).days for d in dates]
        lengths = [v for tp in plan.tables.values() for (_, w, off) in tp.windows.values() for v in (w, off) if v]
        step = reduce(math.gcd, spans + lengths) or 1
        warm = max([(off + w) // step for tp in plan.tables.values() for (_, w, off) in tp.windows.values()] or [0])
        n_dates = max(spans) // step + 1 + warm
        return cls(pl.Enum(ids), len(ids), last, step, n_dates, tuple(dates))

    @property
    def first(self) -> dt.date:
        return self.last - dt.timedelta(days=self.step * (self.n_dates - 1))

    def key(self) -> pl.Expr:
        """account_id -> key; accounts not in `accounts` become null (and drop out)."""
        return pl.col("account_id").cast(self.ids, strict=False).to_physical().cast(pl.Int64)

    def t_of(self, day: pl.Expr) -> pl.Expr:
        """Grid position of the first grid date on or after `day` (may be < 0 or >= n)."""
        epoch_last = (self.last - dt.date(1970, 1, 1)).days
        back = (pl.lit(epoch_last, pl.Int64) - day.cast(pl.Date).cast(pl.Int64)) // self.step
        return (self.n_dates - 1 - back).cast(pl.Int64)

    def t_after(self, day: pl.Expr) -> pl.Expr:
        """Grid position of the first grid date strictly after `day`."""
        return self.t_of(day + pl.duration(days=1))

    def frame(self) -> pl.LazyFrame:
        n = self.n_dates
        as_of_t = pl.Series([n - 1 - (self.last - d).days // self.step for d in self.as_of], dtype=pl.Int64)
        return (
            pl.LazyFrame()
            .select(pl.int_range(0, self.n_keys * n, dtype=pl.Int64).alias(ROW))
            .with_columns((pl.col(ROW) // n).alias(KEY), (pl.col(ROW) % n).alias(T_IDX))
            .with_columns(
                (pl.lit(self.first) + pl.duration(days=pl.col(T_IDX) * self.step)).alias(AS_OF),
                pl.col(T_IDX).is_in(as_of_t.implode()).alias("_is_as_of"),
            )
        )


def compute_features(
    tables: Mapping[str, Frame],
    model: HealthModel,
    as_of: Sequence[dt.date],
    signals: Sequence[str] | None = None,
    account_columns: Sequence[str] | None = None,
    stream_rollups: bool = False,
    rollup_provider: "RollupProvider | None" = None,
    state_provider: "StateProvider | None" = None,
) -> pl.LazyFrame:
    """Raw signal values for every account active at each as-of date.

    `stream_rollups=True` runs the per-table roll-ups (the part that reads raw records)
    first, on Polars' streaming engine, and returns a plan over their results: the right
    choice when the raw tables are large lazy scans (a benchmark-sized book).

    `rollup_provider` computes the windowed roll-ups elsewhere (`health.pushdown`: in SQL, where
    the data lives): called with (table, plan, grid), it returns that table's roll-up
    keyed by grid row (or None to roll up in Polars). A table whose roll-up comes from it
    need not be in `tables` unless it also has state measures. `state_provider` does the
    same for the state measures: it returns the sparse per-row frames `_state_features`
    would build (`health.pushdown.state_provider`), or None.

    Returns a LazyFrame with account_id, as_of, the accounts columns (all of them, or
    `account_columns` — a weekly history of 100k accounts should not copy every name and
    owner 105 times), and one Float64 column per signal, named after the signal. Only the
    account ids are read eagerly (to fix the integer keys); the rest is one lazy plan.
    """
    plan = FeaturePlan(model, signals)
    accounts = _lazy(tables["accounts"])
    ids = accounts.select(pl.col("account_id").drop_nulls().unique(maintain_order=True)).collect()["account_id"]
    grid = _Grid.build(ids, as_of, plan)
    acc_schema = accounts.collect_schema()
    if account_columns is not None:
        wanted = {"account_id", *account_columns, *(c for c in LIFECYCLE_COLUMNS if c in acc_schema)}
        accounts = accounts.select([c for c in acc_schema if c in wanted])
    accounts = accounts.with_columns(grid.key().alias(KEY)).filter(pl.col(KEY).is_not_null()).unique(KEY, keep="first")
    outcomes = tables.get("outcomes")
    if outcomes is not None:
        churned = (
            _lazy(outcomes)
            .filter(pl.col("outcome") == "churned")
            .group_by("account_id")
            .agg(pl.col("renewal_date").min().alias("_churned_on"))
        )
        accounts = accounts.join(churned, on="account_id", how="left")

    wide = grid.frame().join(accounts, on=KEY, how="left", maintain_order="left")
    finish: list[pl.Expr] = []
    rollups: list[pl.LazyFrame] = []
    for table, tplan in plan.tables.items():
        frame = tables.get(table)
        binned = rollup_provider(table, tplan, grid) if rollup_provider is not None and tplan.windows else None
        pushed = state_provider(table, tplan, grid) if state_provider is not None and tplan.states else None
        if frame is None and binned is None and pushed is None:
            finish.extend(_empty_columns(tplan))
            continue
        if pushed is not None:  # the state measures' sparse frames come from elsewhere
            rollups.extend(pushed)
            finish.extend(_state_outputs(tplan, grid))
            tplan = _TablePlan(table, agg_exprs=tplan.agg_exprs, windows=tplan.windows, specs=tplan.specs,
                               metrics=tplan.metrics, all_metrics=tplan.all_metrics)
        if frame is None:  # windows pushed down; states (if any) have no data
            finish.extend(pl.lit(None, dtype=pl.Float64).alias(n) for n in tplan.states)
            tplan = _TablePlan(table, agg_exprs=tplan.agg_exprs, windows=tplan.windows, specs=tplan.specs)
        else:
            frame = _prepare(_lazy(frame), tplan, grid)
        parts, exprs = _table_features(frame, tplan, grid, binned)
        rollups.extend(parts)
        finish.extend(exprs)
    spent: list[str] = []
    if stream_rollups and rollups:
        # The roll-ups read the raw tables (hundreds of millions of usage rows at scale):
        # run them on the streaming engine, all at once, and keep only their small results,
        # then place each value at its row of the grid directly (row id = position), which
        # costs a fraction of a join of millions of rows.
        dense = _scatter(pl.collect_all(rollups, engine="streaming"), grid.n_keys * grid.n_dates)
        spent = dense.columns
        wide = pl.concat([wide.collect(), dense], how="horizontal").lazy()
        del dense
    elif rollups:
        # One join instead of one per roll-up: each roll-up has its own columns and at
        # most one row per grid row, so stacking them and taking the max per row merges.
        # Both sides sorted on the row id: a merge join that keeps the grid's order.
        merged = pl.concat(rollups, how="diagonal").group_by(ROW).agg(pl.all().max()).sort(ROW)
        wide = wide.with_columns(pl.col(ROW).set_sorted()).join(
            merged.with_columns(pl.col(ROW).set_sorted()), on=ROW, how="left", maintain_order="left"
        )
        spent = [c for part in rollups for c in part.collect_schema() if c != ROW]
    if finish:
        wide = wide.with_columns(finish)
    # The roll-up columns have served; copying them through the filter would not.
    wide = _active_only(wide.drop(spent).filter(pl.col("_is_as_of")), acc_schema)

    raw_exprs = []
    for name in plan.names:
        expr = plan.raw[name]
        guard = plan.start_guard.get(name)
        if guard and "start_date" in acc_schema:
            expr = pl.when(
                pl.col("start_date").is_null() | (pl.col("start_date") <= pl.col(AS_OF) - pl.duration(days=guard))
            ).then(expr)
        raw_exprs.append(expr.cast(pl.Float64).fill_nan(None).alias(name))
    wide = wide.with_columns(raw_exprs)
    internal = [c for c in wide.collect_schema() if c.startswith("_")]
    return wide.drop(internal)


def _scatter(parts: Sequence[pl.DataFrame], n_rows: int) -> pl.DataFrame:
    """Sparse roll-ups (a row id and value columns each) as dense columns of `n_rows`,
    null where a row has no value. The grid's row id is its position, so this is an
    index assignment, not a join."""
    columns: list[pl.Series] = []
    for part in parts:
        at = part[ROW].to_numpy()
        for name in part.columns:
            if name == ROW:
                continue
            values = part[name]
            dtype = values.dtype
            if dtype == pl.Float64 or dtype.is_integer() or dtype == pl.Date:
                # Integers and days as float64 are exact (|x| < 2**53); NaN marks "no value".
                dense = np.full(n_rows, np.nan)
                dense[at] = values.to_physical().cast(pl.Float64).to_numpy()
                series = pl.Series(name, dense, nan_to_null=True)
                del dense
                if dtype == pl.Date:
                    series = series.cast(pl.Int32).cast(pl.Date)
                elif dtype != pl.Float64:
                    series = series.cast(dtype)
            else:
                raise TypeError(f"roll-up column {name} has type {dtype}; expected a number or a date")
            columns.append(series)
    return pl.DataFrame(columns)


def _empty_columns(tplan: _TablePlan) -> list[pl.Expr]:
    """The table is absent: every feature over it is missing (not zero)."""
    names = list(tplan.windows) + list(tplan.states)
    return [pl.lit(None, dtype=pl.Float64).alias(n) for n in names]


def _active_only(wide: pl.LazyFrame, acc_schema: pl.Schema) -> pl.LazyFrame:
    """Keep (account, T) pairs where the account was a customer at T (started, and not
    churned: `_churned_on` comes from the outcomes table)."""
    cond = pl.lit(True)
    if "start_date" in acc_schema:
        cond = cond & (pl.col("start_date").is_null() | (pl.col("start_date") <= pl.col(AS_OF)))
    if "_churned_on" in wide.collect_schema():
        cond = cond & (pl.col("_churned_on").is_null() | (pl.col(AS_OF) < pl.col("_churned_on")))
    if "status" in acc_schema:
        # A churned account without an outcome row: its renewal date is when it left.
        cond = cond & ~(
            (pl.col("status") == "churned").fill_null(False)
            & (pl.col("renewal_date") <= pl.col(AS_OF)).fill_null(False)
        )
    return wide.filter(cond)


def _prepare(frame: pl.LazyFrame, tplan: _TablePlan, grid: _Grid) -> pl.LazyFrame:
    """The record's day (`_date`); usage metrics no signal reads dropped."""
    schema = frame.collect_schema()
    tcol = TABLES[tplan.table].time_column
    assert tcol is not None
    if tplan.table == "usage" and not tplan.all_metrics and tplan.metrics:
        frame = frame.filter(pl.col("metric").is_in(sorted(tplan.metrics)))
    return frame.with_columns(_date(tcol, schema).alias("_date"))


def _keyed(frame: pl.LazyFrame, grid: _Grid) -> pl.LazyFrame:
    return frame.with_columns(grid.key().alias(KEY)).filter(pl.col(KEY).is_not_null())


RollupProvider = Callable[[str, _TablePlan, "_Grid"], "pl.LazyFrame | None"]
StateProvider = Callable[[str, _TablePlan, "_Grid"], "list[pl.LazyFrame] | None"]


def _state_outputs(tplan: _TablePlan, grid: "_Grid") -> list[pl.Expr]:
    """The expressions that finish the state measures on the grid from their sparse
    frames, when those frames are computed elsewhere (they do not depend on the data)."""
    schema = {"account_id": pl.String, "_date": pl.Date, **{c.name: c.dtype for c in TABLES[tplan.table].columns}}
    return _state_features(pl.LazyFrame(schema=schema), tplan, grid)[1]


def _table_features(frame: pl.LazyFrame | None, tplan: _TablePlan, grid: _Grid,
                    binned: pl.LazyFrame | None = None) -> tuple[list[pl.LazyFrame], list[pl.Expr]]:
    """Sparse per-row frames to join onto the grid, and the expressions that finish the
    features on the joined grid (which is in row order). `binned`: the windowed roll-up
    computed elsewhere (ROW + one column per aggregate), else it is computed here."""
    parts: list[pl.LazyFrame] = []
    exprs: list[pl.Expr] = []
    n = grid.n_dates
    if tplan.windows and binned is not None:
        parts.append(binned)
    elif tplan.windows:
        assert frame is not None
        t = grid.t_of(pl.col("_date"))
        in_grid = (pl.col("_date") > pl.lit(grid.first - dt.timedelta(days=grid.step))) & (
            pl.col("_date") <= pl.lit(grid.last)
        )
        binned = (
            _keyed(frame.filter(in_grid), grid)
            .group_by((pl.col(KEY) * n + t).alias(ROW))
            .agg([_repeatable(expr.sum()).alias(name) for name, expr in tplan.agg_exprs.items()])
        )
        parts.append(binned)
    if tplan.windows:
        for name, (agg, w, off) in tplan.windows.items():
            total = pl.col(agg).fill_null(0).rolling_sum(window_size=w // grid.step, min_samples=1)
            if off:
                total = total.shift(off // grid.step)
            if agg.endswith("_sum"):
                # A float window sum that should be exactly zero must not come out as 1e-12.
                total = pl.when(total.abs() < 1e-9).then(0.0).otherwise(total)
            exprs.append(total.alias(name))
    if tplan.states:
        assert frame is not None
        state_parts, state_exprs = _state_features(frame, tplan, grid)
        parts.extend(state_parts)
        exprs.extend(state_exprs)
    return parts, exprs


def _repeatable(total: pl.Expr) -> pl.Expr:
    """A parallel group-by adds floats in no fixed order, so the last bit of a sum can
    differ between runs; 12 significant digits make every run give the same numbers.
    (Integer sums are exact already; rounding is a no-op there.)"""
    return total.round_sig_figs(12)


def _fill_within_account(value: pl.Expr, marker: pl.Expr) -> pl.Expr:
    """Forward fill down the grid without crossing from one account into the next: a
    filled value is kept only where the row it came from belongs to the same account.
    (Two global fills are much cheaper than a fill `.over()` 100k accounts.)"""
    source = pl.when(marker.is_not_null()).then(pl.col(KEY)).forward_fill()
    return pl.when(source == pl.col(KEY)).then(value.forward_fill())


def _running_total_within_account(delta: pl.Expr, n_dates: int) -> pl.Expr:
    """Running total restarting at each account: the global running total minus its value
    on the previous account's last row (rows are `key * n_dates + t`)."""
    total = delta.cum_sum()
    before = total.gather((pl.col(KEY) * n_dates - 1).clip(lower_bound=0))
    return total - pl.when(pl.col(KEY) > 0).then(before).otherwise(0)


def _state_features(frame: pl.LazyFrame, tplan: _TablePlan, grid: _Grid) -> tuple[list[pl.LazyFrame], list[pl.Expr]]:
    schema = frame.collect_schema()
    n = grid.n_dates
    frame = _keyed(frame.filter(pl.col("_date") <= pl.lit(grid.last)), grid)

    def row_of(t_idx: pl.Expr) -> pl.Expr:
        return pl.col(KEY) * n + t_idx

    def clamp(t: pl.Expr) -> pl.Expr:
        # Older than the grid: already known at its first date.
        return pl.max_horizontal(t, pl.lit(0, pl.Int64))

    def end_of(col: str) -> pl.Expr:
        if col not in schema:
            return pl.lit(n, pl.Int64)
        # Closed after the grid's last date: open to its end, never past it (a range past
        # n would run into the next account's rows).
        end_t = pl.min_horizontal(clamp(grid.t_of(_date(col, schema))), pl.lit(n, pl.Int64))
        return pl.when(pl.col(col).is_null()).then(pl.lit(n, pl.Int64)).otherwise(end_t)

    sparse: list[pl.LazyFrame] = []
    outputs: list[pl.Expr] = []
    for col, (kind, sig) in tplan.states.items():
        rows = frame.filter(_cond(sig, tplan.table))
        if kind in ("latest", "days_since"):
            value = sig.value or DEFAULT_VALUE.get(tplan.table)
            t = clamp(grid.t_of(pl.col("_date")))
            aggs = [pl.col("_date").max().alias(f"{col}_at")]
            if kind == "latest":
                # Several answers on the latest day (two respondents): their mean.
                latest_day = pl.col(value).cast(pl.Float64).filter(pl.col("_date") == pl.col("_date").max())  # type: ignore[arg-type]
                aggs.append(latest_day.mean().alias(f"{col}_v"))
            sparse.append(rows.filter(t < n).group_by(row_of(t).alias(ROW)).agg(aggs))
            at = _fill_within_account(pl.col(f"{col}_at"), pl.col(f"{col}_at"))
            age = (pl.col(AS_OF) - at).dt.total_days()
            fresh = age <= sig.lookback_days if sig.lookback_days is not None else pl.lit(True)
            if kind == "latest":
                result = _fill_within_account(pl.col(f"{col}_v"), pl.col(f"{col}_at"))
            else:
                result = age.cast(pl.Float64)
            outputs.append(pl.when(fresh).then(result).cast(pl.Float64).alias(col))
        elif kind == "open_count":
            start, end = OPEN_COLUMNS[tplan.table]
            lo = clamp(grid.t_of(_date(start, schema)))
            sparse.append(
                pl.concat(
                    [
                        rows.select(KEY, lo.alias(T_IDX), pl.lit(1, pl.Int64).alias("_d")),
                        rows.select(KEY, end_of(end).alias(T_IDX), pl.lit(-1, pl.Int64).alias("_d")),
                    ]
                )
                .filter(pl.col(T_IDX) < n)
                .group_by(row_of(pl.col(T_IDX)).alias(ROW))
                .agg(pl.col("_d").sum().alias(f"{col}_d"))
            )
            outputs.append(_running_total_within_account(pl.col(f"{col}_d").fill_null(0), n).cast(pl.Float64).alias(col))
        else:  # open_max_age, max_days_overdue: explode each record over the dates it is open
            start, end = OPEN_COLUMNS[tplan.table]
            if kind == "max_days_overdue":
                since = pl.col("due_date").cast(pl.Date)
                lo = pl.max_horizontal(clamp(grid.t_after(since)), clamp(grid.t_of(_date("issued_at", schema))))
            else:
                since = _date(start, schema)
                lo = clamp(grid.t_of(since))
            sparse.append(
                rows.select(KEY, since.alias("_since"), lo.alias("_lo"), end_of(end).alias("_hi"))
                .filter(pl.col("_lo") < pl.col("_hi"))
                .with_columns(pl.int_ranges("_lo", "_hi", dtype=pl.Int64).alias(T_IDX))
                .explode(T_IDX)
                .group_by(row_of(pl.col(T_IDX)).alias(ROW))
                .agg(pl.col("_since").min().alias(f"{col}_since"))
            )
            days = (pl.col(AS_OF) - pl.col(f"{col}_since")).dt.total_days().cast(pl.Float64)
            outputs.append(days.fill_null(0.0).alias(col))
    return sparse, outputs
