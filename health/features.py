"""Point-in-time features: raw signal values for every account at every as-of date.

The whole computation is one lazy Polars plan. Its shape is what keeps 100k accounts x
104 weekly dates fast and linear:

* **Windowed aggregates** (sum / count / mean / trend / share / ratio) never re-aggregate
  a window per as-of date. Records are rolled up once into fixed-width time bins
  (width g = the gcd of the as-of spacing, the windows and their offsets, so every window
  boundary falls on a bin edge), a running total is taken per account, and a window sum
  is the difference of the running total at its two ends (a shift by a whole number of
  bins). One pass over the big table, then work proportional to accounts x bins.
* **State at T** (latest value, days since, open tickets, days overdue) uses the as-of
  index of each record: "first as-of date at or after the event", then a running total or
  forward fill along the as-of axis.

Accounts are integer keys (their position in `accounts`), and every feature frame is
keyed by one integer per (account, date) row, so the frames join on a single int column.

Point-in-time rules (DESIGN.md): a record counts at T when its time column's date is
<= T; a ticket is open at T when opened <= T and (closed is null or closed > T); an
invoice is overdue at T when due_date < T, issued <= T and (paid is null or paid > T).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from functools import reduce
from typing import Mapping, Sequence

import polars as pl

from health.model import HealthModel, Operand, Signal
from health.schema import TABLES

Frame = pl.LazyFrame | pl.DataFrame
KEY = "_key"
T_IDX = "_t"
ROW = "_row"
AS_OF = "as_of"

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


@dataclass
class _TablePlan:
    """What one event table must deliver: aggregate columns and the windows over them."""

    table: str
    agg_exprs: dict[str, pl.Expr] = field(default_factory=dict)
    windows: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """output column -> (aggregate column, window days, offset days)."""
    states: dict[str, tuple[str, Signal]] = field(default_factory=dict)
    """output column -> (kind, signal) for latest / days_since / open_* / overdue."""
    metrics: set[str] = field(default_factory=set)
    all_metrics: bool = False

    def agg(self, kind: str, cond: pl.Expr, value: str | None, label: str) -> str:
        name = f"_a_{len(self.agg_exprs)}_{label}"
        for existing, expr in self.agg_exprs.items():
            if expr.meta.eq(self._agg_expr(kind, cond, value)):
                return existing
        self.agg_exprs[name] = self._agg_expr(kind, cond, value)
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
        agg = plan.agg(kind, cond, value if kind == "sum" else None, kind)
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
    from health.model import parse_days

    return parse_days(window) if window is not None else 0


def as_of_frame(as_of: Sequence[dt.date]) -> pl.DataFrame:
    dates = sorted(set(as_of))
    if not dates:
        raise ValueError("at least one as-of date is needed")
    return pl.DataFrame({AS_OF: dates, T_IDX: list(range(len(dates)))}, schema={AS_OF: pl.Date, T_IDX: pl.Int32})


@dataclass(frozen=True)
class _Grid:
    """Integer keys: an account is its position in `accounts`, a row of the account x
    date grid is `key * n_dates + date index`. Joining on one integer is several times
    faster than on (account_id, date)."""

    ids: pl.Enum
    n_keys: int
    dates: pl.DataFrame

    @property
    def n_dates(self) -> int:
        return self.dates.height

    def key(self) -> pl.Expr:
        """account_id -> key; accounts not in `accounts` become null (and drop out)."""
        return pl.col("account_id").cast(self.ids, strict=False).to_physical().cast(pl.Int64)

    def dense(self, width: int, name: str) -> pl.LazyFrame:
        """Every (key, 0..width-1) pair, in order, as one integer column."""
        return pl.LazyFrame().select(pl.int_range(0, self.n_keys * width, dtype=pl.Int64).alias(name))


def compute_features(
    tables: Mapping[str, Frame],
    model: HealthModel,
    as_of: Sequence[dt.date],
    signals: Sequence[str] | None = None,
) -> pl.LazyFrame:
    """Raw signal values for every account active at each as-of date.

    Returns a LazyFrame with account_id, as_of, every accounts column, and one Float64
    column per signal (named after the signal). Only the account ids are read eagerly
    (to fix the integer keys); the rest is one lazy plan.
    """
    plan = FeaturePlan(model, signals)
    dates = as_of_frame(as_of)
    accounts = _lazy(tables["accounts"])
    ids = accounts.select(pl.col("account_id").drop_nulls().unique(maintain_order=True)).collect()["account_id"]
    grid = _Grid(pl.Enum(ids), len(ids), dates)
    acc_schema = accounts.collect_schema()

    wide = (
        accounts.with_columns(grid.key().alias(KEY))
        .join(dates.lazy(), how="cross")
        .with_columns((pl.col(KEY) * grid.n_dates + pl.col(T_IDX)).alias(ROW))
    )
    for table, tplan in plan.tables.items():
        frame = tables.get(table)
        if frame is None:
            wide = wide.with_columns(_empty_columns(tplan))
            continue
        for part in _table_features(_lazy(frame), tplan, grid):
            wide = wide.join(part, on=ROW, how="left")

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
    wide = _active_only(wide, tables, acc_schema)
    internal = [c for c in wide.collect_schema() if c.startswith("_")]
    return wide.drop(internal)


def _empty_columns(tplan: _TablePlan) -> list[pl.Expr]:
    """The table is absent: every feature over it is missing (not zero)."""
    names = list(tplan.windows) + list(tplan.states)
    return [pl.lit(None, dtype=pl.Float64).alias(n) for n in names]


def _active_only(wide: pl.LazyFrame, tables: Mapping[str, Frame], acc_schema: pl.Schema) -> pl.LazyFrame:
    """Keep (account, T) pairs where the account was a customer at T."""
    cond = pl.lit(True)
    if "start_date" in acc_schema:
        cond = cond & (pl.col("start_date").is_null() | (pl.col("start_date") <= pl.col(AS_OF)))
    outcomes = tables.get("outcomes")
    if outcomes is not None:
        churned = (
            _lazy(outcomes)
            .filter(pl.col("outcome") == "churned")
            .group_by("account_id")
            .agg(pl.col("renewal_date").min().alias("_churned_on"))
        )
        wide = wide.join(churned, on="account_id", how="left", maintain_order="left")
        cond = cond & (pl.col("_churned_on").is_null() | (pl.col(AS_OF) < pl.col("_churned_on")))
    if "status" in acc_schema:
        # A churned account without an outcome row: its renewal date is when it left.
        cond = cond & ~(
            (pl.col("status") == "churned").fill_null(False)
            & (pl.col("renewal_date") <= pl.col(AS_OF)).fill_null(False)
        )
    return wide.filter(cond)


def _table_features(frame: pl.LazyFrame, tplan: _TablePlan, grid: _Grid) -> list[pl.LazyFrame]:
    schema = frame.collect_schema()
    spec = TABLES[tplan.table]
    tcol = spec.time_column
    assert tcol is not None
    frame = frame.with_columns(_date(tcol, schema).alias("_date"))
    if tplan.table == "usage" and not tplan.all_metrics and tplan.metrics:
        frame = frame.filter(pl.col("metric").is_in(sorted(tplan.metrics)))
    out: list[pl.LazyFrame] = []
    if tplan.windows:
        out.append(_window_features(frame, tplan, grid))
    if tplan.states:
        out.append(_state_features(frame, schema, tplan, grid))
    return out


def _window_features(frame: pl.LazyFrame, tplan: _TablePlan, grid: _Grid) -> pl.LazyFrame:
    """Window sums on fixed-width bins: one pass over the records, then shifts.

    The dense (account x bin) grid is laid out account after account; the running total
    runs over the whole grid and a window sum is the difference of two of its values.
    Crossing into the previous account's block is harmless: the subtraction removes
    everything before the window, whoever it belonged to. `k_max` is chosen so that no
    window of an as-of row reaches further back than its own block.
    """
    as_of = grid.dates[AS_OF].to_list()
    origin = as_of[-1]
    spans = [(origin - d).days for d in as_of]
    lengths = [v for (_, w, off) in tplan.windows.values() for v in (w, off) if v]
    g = reduce(math.gcd, spans + lengths) or 1
    reach = max((off + w) for (_, w, off) in tplan.windows.values())
    k_max = max(spans) // g + reach // g - 1
    n_bins = k_max + 1

    k = (pl.lit(origin) - pl.col("_date")).dt.total_days() // g
    binned = (
        frame.with_columns(k.alias("_k"))
        .filter((pl.col("_k") >= 0) & (pl.col("_k") <= k_max))
        .with_columns((grid.key() * n_bins + (k_max - pl.col("_k"))).alias("_ck"))
        .filter(pl.col("_ck").is_not_null())
        .group_by("_ck")
        .agg([expr.sum().alias(name) for name, expr in tplan.agg_exprs.items()])
    )
    t_of_bin = {k_max - span // g: i for i, span in enumerate(spans)}
    dense = (
        grid.dense(n_bins, "_ck")
        .join(binned, on="_ck", how="left", maintain_order="left")
        .with_columns([pl.col(c).fill_null(0).cum_sum().alias(f"_P{c}") for c in tplan.agg_exprs])
    )
    sums = []
    for name, (agg, w, off) in tplan.windows.items():
        running = pl.col(f"_P{agg}")
        upper = running.shift(off // g, fill_value=0) if off else running
        lower = running.shift((off + w) // g, fill_value=0)
        sums.append((upper - lower).alias(name))
    t_idx = (pl.col("_ck") % n_bins).replace_strict(t_of_bin, default=None, return_dtype=pl.Int64)
    return (
        dense.with_columns(sums)
        .with_columns(t_idx.alias(T_IDX))
        .filter(pl.col(T_IDX).is_not_null())
        .select(((pl.col("_ck") // n_bins) * grid.n_dates + pl.col(T_IDX)).alias(ROW), *tplan.windows)
    )


def _index_of(dates: pl.DataFrame, expr: pl.Expr, side: str = "left") -> pl.Expr:
    """Position of the first as-of date >= expr (side='left') or > expr (side='right')."""
    found = pl.lit(dates[AS_OF]).search_sorted(expr, side=side).cast(pl.Int32)  # type: ignore[arg-type]
    return pl.when(expr.is_not_null()).then(found)


def _state_features(frame: pl.LazyFrame, schema: pl.Schema, tplan: _TablePlan, grid: _Grid) -> pl.LazyFrame:
    dates, n = grid.dates, grid.n_dates
    dense = grid.dense(n, ROW).with_columns(
        (pl.col(ROW) // n).alias(KEY),
        pl.lit(dates[AS_OF]).gather(pl.col(ROW) % n).alias(AS_OF),
    )
    frame = frame.with_columns(grid.key().alias(KEY)).filter(pl.col(KEY).is_not_null())

    def row_of(t_idx: pl.Expr) -> pl.Expr:
        return pl.col(KEY) * n + t_idx

    outputs: list[pl.Expr] = []
    for col, (kind, sig) in tplan.states.items():
        cond = _cond(sig, tplan.table)
        rows = frame.filter(cond)
        if kind in ("latest", "days_since"):
            value = sig.value or DEFAULT_VALUE.get(tplan.table)
            t = _index_of(dates, pl.col("_date"))
            picked = rows.filter(t < n).with_columns(row_of(t).alias(ROW))
            aggs = [pl.col("_date").max().alias(f"{col}_at")]
            if kind == "latest":
                aggs.append(pl.col(value).cast(pl.Float64).sort_by("_date").last().alias(f"{col}_v"))  # type: ignore[arg-type]
            per_t = picked.group_by(ROW).agg(aggs)
            dense = dense.join(per_t, on=ROW, how="left", maintain_order="left").with_columns(
                pl.col(c).forward_fill().over(KEY) for c in [a.meta.output_name() for a in aggs]
            )
            age = (pl.col(AS_OF) - pl.col(f"{col}_at")).dt.total_days()
            fresh = age <= sig.lookback_days if sig.lookback_days is not None else pl.lit(True)
            result = pl.col(f"{col}_v") if kind == "latest" else age.cast(pl.Float64)
            outputs.append(pl.when(fresh).then(result).cast(pl.Float64).alias(col))
        elif kind == "open_count":
            start, end = OPEN_COLUMNS[tplan.table]
            lo = _index_of(dates, _date(start, schema))
            hi = _index_of(dates, _date(end, schema)).fill_null(n) if end in schema else pl.lit(n, pl.Int32)
            events = (
                pl.concat(
                    [
                        rows.select(KEY, lo.alias(T_IDX), pl.lit(1, pl.Int64).alias("_d")),
                        rows.select(KEY, hi.alias(T_IDX), pl.lit(-1, pl.Int64).alias("_d")),
                    ]
                )
                .filter(pl.col(T_IDX) < n)
                .group_by(row_of(pl.col(T_IDX)).alias(ROW))
                .agg(pl.col("_d").sum().alias(f"{col}_d"))
            )
            dense = dense.join(events, on=ROW, how="left", maintain_order="left")
            outputs.append(pl.col(f"{col}_d").fill_null(0).cum_sum().over(KEY).cast(pl.Float64).alias(col))
        else:  # open_max_age, max_days_overdue: explode each record over the dates it is open
            start, end = OPEN_COLUMNS[tplan.table]
            if kind == "max_days_overdue":
                since = pl.col("due_date").cast(pl.Date)
                lo = pl.max_horizontal(
                    _index_of(dates, since, side="right"), _index_of(dates, _date("issued_at", schema))
                )
            else:
                since = _date(start, schema)
                lo = _index_of(dates, since)
            hi = _index_of(dates, _date(end, schema)).fill_null(n) if end in schema else pl.lit(n, pl.Int32)
            spans = (
                rows.select(KEY, since.alias("_since"), lo.alias("_lo"), hi.alias("_hi"))
                .filter(pl.col("_lo") < pl.col("_hi"))
                .with_columns(pl.int_ranges("_lo", "_hi", dtype=pl.Int32).alias(T_IDX))
                .explode(T_IDX)
                .group_by(row_of(pl.col(T_IDX)).alias(ROW))
                .agg(pl.col("_since").min().alias(f"{col}_since"))
            )
            dense = dense.join(spans, on=ROW, how="left", maintain_order="left")
            days = (pl.col(AS_OF) - pl.col(f"{col}_since")).dt.total_days().cast(pl.Float64)
            outputs.append(days.fill_null(0.0).alias(col))
    return dense.select(ROW, *outputs)
