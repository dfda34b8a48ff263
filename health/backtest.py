"""Back-test the health model against known renewal outcomes.

For every past renewal in `outcomes`, the account is scored **as of the renewal date
minus a lead time** (90 days by default) — point-in-time, with the same engine that
gives today's score and the weekly history — and the score is compared with what
happened. All as-of dates go through the engine in one vectorised plan
(`compute_features` over every distinct as-of date, then `score_features`), and the
outcomes are joined on (account_id, as_of).

A *bad* outcome is a churn (and a downgrade with `downgrade=True`). The figures, overall
and per segment (the model's `health_segment` at T):

* ROC AUC of the score (Mann–Whitney with averaged ties; a lower score means more risk)
  with a 95% bootstrap interval that resamples *accounts*, not renewals (two renewals of
  one account are not independent);
* the bad-outcome rate per tier and the at-risk tier's rate as a multiple of the base
  rate (lift); recall: the share of bad outcomes the account was at_risk (or at_risk or
  watch) for at T;
* precision and lift in the worst decile by score (ties at the cut shared pro rata: the
  expected value under a random order of the tied accounts);
* a calibration table (score bands 0-20-40-60-80-100 -> n, bad rate);
* the AUC of each signal's sub-score alone (a sub-score is always higher = healthier, so
  `lower_is_better` signals need no special case).

Renewals the model could not score at T are counted by reason, never silently dropped:
the account is unknown, was not a customer at T, had insufficient data, or T is after
the data's last day.

**Snapshot leakage.** `accounts` is usually a snapshot of *today*: today's ARR, next
renewal date, plan, seats, status. Read at a past date it leaks the future (a churned
account's ARR is 0, its renewal date is its churn date). So the frame the model's
segments, rules and account-column signals see is rebuilt as of T:

* `renewal_date` at T is the first renewal in `outcomes` on or after T (the snapshot's
  renewal date only when no recorded renewal lies between T and today), and `arr` at T
  is that renewal's `arr_before` — the value of the contract in force at T;
* with an `account_history` table (account_id, valid_from, valid_to, attribute columns;
  valid_to null = still valid, the interval is [valid_from, valid_to)), its attributes
  as of T replace the snapshot columns (and take precedence over `outcomes`);
* every other account column read by a segment condition, a rule or a signal is flagged
  in the report unless it is one of `STABLE_ACCOUNT_COLUMNS`.

Signals that read a replaced column (`column` / `age` measures, a `ratio` with a column
operand) are recomputed from the as-of value; their table operands are computed by the
engine as helper signals in the same plan.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import polars as pl

from health.features import AS_OF, Frame, compute_features
from health.model import INSUFFICIENT, TIER_NAMES, HealthModel, Operand, Signal
from health.scoring import default_as_of, score_features

STABLE_ACCOUNT_COLUMNS: tuple[str, ...] = ("account_id", "name", "start_date", "crm_id", "region", "industry")
"""Account columns that do not change over an account's life (or whose change does not
tell the future). Every other account column — arr, renewal_date, segment, plan, seats,
status, owner, contract_months and any extra column — is treated as a snapshot of today.
`segment` is a snapshot column on purpose: sales segments are re-assigned as accounts
grow or shrink. Pass `stable_columns=` to declare others stable for your source."""

HISTORY_KEYS: tuple[str, ...] = ("account_id", "valid_from", "valid_to")
"""The key columns of `account_history`; every other column is an attribute."""

CALIBRATION_EDGES: tuple[float, ...] = (0, 20, 40, 60, 80, 100)
MIN_OUTCOMES = 30
MIN_BAD = 5
AUTO_WEEKLY_ABOVE = 5_000_000
"""`snap="auto"` snaps to a weekly grid when accounts x distinct as-of dates exceeds this
(about 1.5 s and 1 GB per million grid rows with the shipped model; see docs/backtest.md)."""

Snap = Literal["auto", "day", "week"]

STATUS_TEXT: dict[str, str] = {
    "scored": "scored",
    "unknown_account": "account not in the accounts table",
    "not_a_customer": "not a customer at T (started later, or had already left)",
    "insufficient_data": "insufficient data at T (coverage below min_coverage)",
    "after_data": "T is after the data's last day",
}


class BacktestError(ValueError):
    """The back-test cannot run on these tables (no outcomes, a bad account_history, ...)."""


# ---------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """One row of a tier table or a calibration table."""

    label: str
    n: int
    bad: int
    rate: float | None
    lift: float | None
    """rate / base rate of the group the band belongs to."""


@dataclass(frozen=True)
class Metrics:
    """The figures for one group of scored renewals (the whole book or one segment)."""

    n: int
    bad: int
    base_rate: float | None
    auc: float | None
    auc_low: float | None
    auc_high: float | None
    tiers: tuple[Band, ...]
    at_risk_lift: float | None
    recall_at_risk: float | None
    """Share of bad outcomes whose account was at_risk at T."""
    recall_flagged: float | None
    """Share of bad outcomes whose account was at_risk or watch at T."""
    decile_n: int
    decile_precision: float | None
    decile_lift: float | None
    calibration: tuple[Band, ...]
    too_small: bool
    """Fewer than `min_outcomes` renewals or `min_bad` bad outcomes: do not judge by it."""


@dataclass(frozen=True)
class SignalAuc:
    signal: str
    label: str
    weighted: bool
    """The signal has a weight in some segment."""
    n: int
    bad: int
    auc: float | None
    auc_low: float | None
    auc_high: float | None


@dataclass(frozen=True)
class NotScored:
    reason: str
    text: str
    n: int
    bad: int


@dataclass(frozen=True)
class SnapshotRead:
    """A segment condition, rule or signal that reads a snapshot account column."""

    column: str
    reader: str
    replaced_by: str | None
    """Where the back-test took the column's value as of T from; None = today's snapshot."""


@dataclass
class BacktestResult:
    lead_days: int
    downgrade: bool
    snap: str
    """"day" (exact lead) or "week" (as-of dates snapped to a weekly grid)."""
    n_as_of_dates: int
    data_end: dt.date
    n_outcomes: int
    overall: Metrics
    segments: dict[str, Metrics]
    signals: list[SignalAuc]
    not_scored: list[NotScored]
    replaced: dict[str, str]
    """Account column -> where its value as of T came from."""
    snapshot_reads: list[SnapshotRead]
    warnings: list[str]
    engine_seconds: float
    total_seconds: float
    resamples: int
    seed: int
    rows: pl.DataFrame = field(repr=False)
    """One row per renewal: the outcome, the as-of date, status, score, tier, segment,
    the as-of values of the replaced columns (as_of_<column>) and every signal's raw
    value and sub-score."""
    model_version: str | None = None

    @property
    def auc(self) -> float | None:
        return self.overall.auc

    def to_dict(self, include_rows: bool = True) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "rows"}
        out["data_end"] = self.data_end.isoformat()
        if include_rows:
            out["rows"] = self.rows.to_dicts()
        return json.loads(json.dumps(out, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ---------------------------------------------------------------------------------------
# The figures (plain numpy; no scikit-learn)
# ---------------------------------------------------------------------------------------


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks in ascending order; tied values share the average of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # 0-based rank of each value's first copy
    return (first + (counts + 1) / 2.0)[inverse]


def auc(score: Sequence[float] | np.ndarray, bad: Sequence[bool] | np.ndarray) -> float | None:
    """ROC AUC of `score` for the bad outcome, a lower score meaning more risk.

    The probability that a random good renewal scored higher than a random bad one, ties
    counting one half: Mann–Whitney U of the good renewals / (n_good x n_bad), with the
    ranks of tied scores averaged. None when one of the two classes is empty.
    """
    s = np.asarray(score, dtype=np.float64)
    b = np.asarray(bad, dtype=bool)
    n_bad, n_good = int(b.sum()), int((~b).sum())
    if n_bad == 0 or n_good == 0:
        return None
    ranks = average_ranks(s)
    u_good = ranks[~b].sum() - n_good * (n_good + 1) / 2.0
    return float(u_good / (n_good * n_bad))


def bootstrap_auc(
    score: np.ndarray,
    bad: np.ndarray,
    cluster: np.ndarray | None = None,
    resamples: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval for `auc`, resampling clusters (accounts) with
    replacement; vectorised: each resample is a weight per distinct score, so the AUC of
    all resamples is a few matrix operations (exact, ties included)."""
    s = np.asarray(score, dtype=np.float64)
    b = np.asarray(bad, dtype=bool)
    n = len(s)
    if n == 0 or resamples <= 0 or b.all() or not b.any():
        return None, None
    _, code = np.unique(s, return_inverse=True)
    n_values = int(code.max()) + 1
    if cluster is None:
        cl, n_cl = np.arange(n), n
    else:
        _, cl = np.unique(np.asarray(cluster), return_inverse=True)
        n_cl = int(cl.max()) + 1
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // max(n, n_cl, n_values))
    found: list[np.ndarray] = []
    done = 0
    while done < resamples:
        m = min(block, resamples - done)
        done += m
        draws = rng.integers(0, n_cl, size=(m, n_cl))
        offsets = np.arange(m)[:, None]
        counts = np.bincount((offsets * n_cl + draws).ravel(), minlength=m * n_cl).reshape(m, n_cl)
        weight = counts[:, cl].astype(np.float64)  # (m, n): how often each renewal was drawn
        slot = (offsets * n_values + code[None, :]).ravel()
        w_bad = np.bincount(slot, weights=(weight * b).ravel(), minlength=m * n_values).reshape(m, n_values)
        w_good = np.bincount(slot, weights=(weight * ~b).ravel(), minlength=m * n_values).reshape(m, n_values)
        tot_bad, tot_good = w_bad.sum(axis=1), w_good.sum(axis=1)
        above = tot_good[:, None] - np.cumsum(w_good, axis=1)  # good renewals scored strictly higher
        pairs = (w_bad * (above + 0.5 * w_good)).sum(axis=1)
        ok = (tot_bad > 0) & (tot_good > 0)
        found.append(pairs[ok] / (tot_bad[ok] * tot_good[ok]))
    values = np.concatenate(found)
    if len(values) < max(10, resamples // 2):
        return None, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def worst_fraction(score: np.ndarray, bad: np.ndarray, fraction: float = 0.1) -> tuple[int, float | None]:
    """(k, precision) of the k = ceil(fraction x n) lowest scores. Renewals tied at the
    cut-off score are taken pro rata (the expected precision under a random order)."""
    s = np.asarray(score, dtype=np.float64)
    b = np.asarray(bad, dtype=bool)
    n = len(s)
    if n == 0:
        return 0, None
    k = max(1, math.ceil(fraction * n - 1e-9))
    cut = np.sort(s)[k - 1]
    below, at = s < cut, s == cut
    share = (k - below.sum()) / at.sum()
    expected_bad = b[below].sum() + share * b[at].sum()
    return k, float(expected_bad / k)


def _rate(bad: int, n: int) -> float | None:
    return bad / n if n else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate(
    score: np.ndarray,
    bad: np.ndarray,
    tier: Sequence[str] | np.ndarray,
    cluster: np.ndarray | None = None,
    resamples: int = 500,
    seed: int = 0,
    min_outcomes: int = MIN_OUTCOMES,
    min_bad: int = MIN_BAD,
) -> Metrics:
    """Every figure for one group of scored renewals."""
    s = np.asarray(score, dtype=np.float64)
    b = np.asarray(bad, dtype=bool)
    t = np.asarray(tier, dtype=object)
    n, n_bad = len(s), int(b.sum())
    base = _rate(n_bad, n)
    tiers = []
    for name in TIER_NAMES:
        mask = t == name
        tn, tb = int(mask.sum()), int(b[mask].sum())
        tiers.append(Band(name, tn, tb, _rate(tb, tn), _ratio(_rate(tb, tn), base)))
    bands = []
    edges = CALIBRATION_EDGES
    band_of = np.clip(np.searchsorted(np.asarray(edges[1:-1]), s, side="right"), 0, len(edges) - 2)
    for i in range(len(edges) - 1):
        mask = band_of == i
        bn, bb = int(mask.sum()), int(b[mask].sum())
        bands.append(Band(f"{edges[i]:g}-{edges[i + 1]:g}", bn, bb, _rate(bb, bn), _ratio(_rate(bb, bn), base)))
    k, precision = worst_fraction(s, b)
    low, high = bootstrap_auc(s, b, cluster, resamples, seed)
    return Metrics(
        n=n,
        bad=n_bad,
        base_rate=base,
        auc=auc(s, b),
        auc_low=low,
        auc_high=high,
        tiers=tuple(tiers),
        at_risk_lift=tiers[0].lift,
        recall_at_risk=_rate(int((b & (t == "at_risk")).sum()), n_bad),
        recall_flagged=_rate(int((b & np.isin(t, ["at_risk", "watch"])).sum()), n_bad),
        decile_n=k,
        decile_precision=precision,
        decile_lift=_ratio(precision, base),
        calibration=tuple(bands),
        too_small=n < min_outcomes or n_bad < min_bad,
    )


# ---------------------------------------------------------------------------------------
# Snapshot columns
# ---------------------------------------------------------------------------------------


def _condition_columns(text: str) -> list[str]:
    return sorted(set(pl.sql_expr(text).meta.root_names()))


def account_reads(model: HealthModel) -> list[tuple[str, str]]:
    """(account column, who reads it) for every segment condition, rule and signal."""
    not_accounts = set(model.signals) | {"score", "coverage", "health_segment", "tier"}
    reads: list[tuple[str, str]] = []
    for name, seg in model.segments.items():
        if seg.when:
            reads += [(c, f"segment '{name}' (when: {seg.when})") for c in _condition_columns(seg.when)]
    for rule in model.rules:
        reads += [
            (c, f"rule '{rule.name}' (when: {rule.when})")
            for c in _condition_columns(rule.when)
            if c not in not_accounts
        ]
    for name, sig in model.signals.items():
        for part, obj in (("", sig), (" numerator", sig.numerator), (" denominator", sig.denominator)):
            column = getattr(obj, "column", None) if obj is not None else None
            if column:
                reads.append((column, f"signal '{name}'{part}"))
    return reads


def snapshot_reads(
    model: HealthModel,
    replaced: Mapping[str, str] | None = None,
    stable_columns: Sequence[str] = STABLE_ACCOUNT_COLUMNS,
) -> list[SnapshotRead]:
    """The model's reads of snapshot account columns, with where the back-test takes
    each column from as of T (None: it could not, today's snapshot is used)."""
    replaced = replaced or {}
    stable = set(stable_columns)
    return [
        SnapshotRead(column, reader, replaced.get(column))
        for column, reader in account_reads(model)
        if column not in stable
    ]


# ---------------------------------------------------------------------------------------
# Account attributes as of T
# ---------------------------------------------------------------------------------------


def _lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _check_history(history: pl.LazyFrame) -> list[str]:
    schema = history.collect_schema()
    missing = [c for c in HISTORY_KEYS if c not in schema]
    if missing:
        raise BacktestError(
            f"account_history needs the columns {', '.join(HISTORY_KEYS)} "
            f"(missing: {', '.join(missing)}); valid_to may be empty for the current row."
        )
    attrs = [c for c in schema if c not in HISTORY_KEYS]
    if not attrs:
        raise BacktestError("account_history has no attribute columns besides account_id, valid_from, valid_to.")
    return attrs


def _as_of_attributes(
    accounts: pl.LazyFrame,
    outcomes: pl.LazyFrame,
    history: pl.LazyFrame | None,
    dates: Sequence[dt.date],
) -> tuple[pl.LazyFrame, dict[str, str]]:
    """(account_id, as_of, replaced columns..., _hist_gap) for every account x date, and
    column -> source of its as-of value."""
    acc_schema = accounts.collect_schema()
    out_schema = outcomes.collect_schema()
    grid = (
        accounts.select("account_id")
        .unique()
        .join(pl.LazyFrame({AS_OF: sorted(set(dates))}, schema={AS_OF: pl.Date}), how="cross")
    )
    attrs = _check_history(history) if history is not None else []
    replaced: dict[str, str] = {}
    exprs: dict[str, pl.Expr] = {}
    snapshot_cols = [c for c in ("renewal_date", "arr", *attrs) if c in acc_schema]
    grid = grid.join(accounts.select("account_id", *dict.fromkeys(snapshot_cols)), on="account_id", how="left")

    next_cols = [pl.col("renewal_date").cast(pl.Date).alias("_next_renewal")]
    has_arr = "arr_before" in out_schema
    if has_arr:
        next_cols.append(pl.col("arr_before").cast(pl.Float64).alias("_next_arr"))
    upcoming = outcomes.filter(pl.col("renewal_date").is_not_null()).select("account_id", *next_cols).sort("_next_renewal")
    # join_asof needs both sides sorted by the as-of key (a join before it keeps no order).
    grid = grid.sort(AS_OF).join_asof(
        upcoming,
        left_on=AS_OF,
        right_on="_next_renewal",
        by="account_id",
        strategy="forward",
        check_sortedness=False,
    )
    found = pl.col("_next_renewal").is_not_null()
    if "renewal_date" in acc_schema:
        # No recorded renewal between T and today: the contract in force at T is today's.
        current = pl.col("renewal_date").is_null() | (pl.col("renewal_date") >= pl.col(AS_OF))
        exprs["renewal_date"] = pl.when(found).then(pl.col("_next_renewal")).when(current).then(pl.col("renewal_date"))
        if has_arr and "arr" in acc_schema:
            exprs["arr"] = pl.when(found).then(pl.col("_next_arr")).when(current).then(pl.col("arr").cast(pl.Float64))
    else:
        exprs["renewal_date"] = pl.col("_next_renewal")
        if has_arr:
            exprs["arr"] = pl.col("_next_arr")
    replaced["renewal_date"] = "outcomes.renewal_date (the next renewal on or after T)"
    if "arr" in exprs:
        replaced["arr"] = "outcomes.arr_before (of the next renewal on or after T)"

    gap = pl.lit(False)
    if history is not None:
        h_schema = history.collect_schema()
        hist = (
            history.select(
                "account_id",
                pl.col("valid_from").cast(pl.Date).alias("_valid_from"),
                pl.col("valid_to").cast(pl.Date).alias("_valid_to"),
                *[pl.col(c).alias(f"_h_{c}") for c in attrs],
            )
            .filter(pl.col("_valid_from").is_not_null())
            .sort("_valid_from")
        )
        grid = grid.sort(AS_OF).join_asof(
            hist, left_on=AS_OF, right_on="_valid_from", by="account_id", strategy="backward", check_sortedness=False
        )
        valid = pl.col("_valid_from").is_not_null() & (
            pl.col("_valid_to").is_null() | (pl.col(AS_OF) < pl.col("_valid_to"))
        )
        gaps = []
        for c in attrs:
            dtype = acc_schema.get(c, h_schema[c])
            value = pl.when(valid).then(pl.col(f"_h_{c}").cast(dtype, strict=False))
            if c in exprs:  # arr / renewal_date: the history first, then outcomes
                exprs[c] = pl.coalesce(value, exprs[c])
                replaced[c] = f"account_history, else {replaced[c]}"
            elif c in acc_schema:
                # Not covered by the history at T: today's snapshot (counted and reported).
                gaps.append(~valid)
                exprs[c] = pl.coalesce(value, pl.col(c))
                replaced[c] = "account_history"
            else:
                exprs[c] = value
                replaced[c] = "account_history"
        if gaps:
            gap = pl.any_horizontal(gaps)
    frame = grid.select("account_id", AS_OF, *[e.alias(c) for c, e in exprs.items()], gap.alias("_hist_gap"))
    return frame, replaced


def _helper_signal(name: str, op: Operand, table: str) -> Signal:
    table = op.table or table
    return Signal.model_validate(
        {
            "label": f"back-test helper for {name}",
            "table": table,
            "measure": op.measure,
            "metric": op.metric if table == "usage" else None,
            "where": op.where,
            "value": op.value,
            "window": op.window,
            "score": [(0.0, 0.0), (1.0, 100.0)],
        }
    )


def _recompute(model: HealthModel, replaced: set[str]) -> tuple[dict[str, Signal], dict[str, pl.Expr]]:
    """Helper signals for the engine, and the expressions that recompute every signal
    reading a replaced account column from its as-of value."""
    helpers: dict[str, Signal] = {}
    exprs: dict[str, pl.Expr] = {}
    for name, sig in model.signals.items():
        if sig.measure == "column" and sig.column in replaced:
            expr = pl.col(sig.column).cast(pl.Float64)
        elif sig.measure == "age" and sig.column in replaced:
            expr = (pl.col(AS_OF) - pl.col(sig.column)).dt.total_days().cast(pl.Float64)  # type: ignore[arg-type]
        elif sig.measure == "ratio" and any(
            op is not None and op.column in replaced for op in (sig.numerator, sig.denominator)
        ):
            sides = []
            for side, op in (("num", sig.numerator), ("den", sig.denominator)):
                assert op is not None
                if op.column is not None:
                    sides.append(pl.col(op.column).cast(pl.Float64))
                else:
                    helper = f"backtest_{side}__{name}"
                    helpers[helper] = _helper_signal(name, op, sig.table)
                    sides.append(pl.col(helper))
            num, den = sides
            expr = pl.when(den > 0).then(num / den)  # as the engine computes a ratio
        else:
            continue
        exprs[name] = expr.cast(pl.Float64).fill_nan(None).alias(name)
    return helpers, exprs


# ---------------------------------------------------------------------------------------
# The back-test
# ---------------------------------------------------------------------------------------


def _snap_dates(exact: pl.Expr, end: dt.date) -> pl.Expr:
    """The nearest grid date at or before T, the grid being every 7 days ending on `end`."""
    back = (pl.lit(end) - exact).dt.total_days()
    weeks = (back + 6).floordiv(7)
    return (pl.lit(end) - pl.duration(days=weeks * 7)).cast(pl.Date)


def run_backtest(
    tables: Mapping[str, Frame],
    model: HealthModel,
    lead_days: int = 90,
    downgrade: bool = False,
    account_history: Frame | None = None,
    snap: Snap = "auto",
    stable_columns: Sequence[str] = STABLE_ACCOUNT_COLUMNS,
    resamples: int = 500,
    seed: int = 0,
    min_outcomes: int = MIN_OUTCOMES,
    min_bad: int = MIN_BAD,
    model_version: str | None = None,
) -> BacktestResult:
    """Score every past renewal as of renewal_date - `lead_days` and compare with its outcome.

    `account_history` defaults to `tables["account_history"]` when there is one. `snap`:
    "day" scores exactly `lead_days` before each renewal; "week" snaps each as-of date to
    the nearest earlier date of the weekly grid ending on the data's last day (the dates
    of the app's weekly history; the lead becomes lead_days..lead_days+6); "auto" snaps
    only when accounts x distinct dates exceeds `AUTO_WEEKLY_ABOVE`.
    """
    started = time.perf_counter()
    if isinstance(lead_days, bool) or not isinstance(lead_days, int) or lead_days < 0:
        raise BacktestError(f"the lead time must be a whole number of days >= 0, got {lead_days!r}")
    if snap not in ("auto", "day", "week"):
        raise BacktestError(f"snap must be auto, day or week, got {snap!r}")
    if "accounts" not in tables:
        raise BacktestError("the source has no accounts table")
    if tables.get("outcomes") is None:
        raise BacktestError(
            "the source has no outcomes table: a back-test needs past renewals "
            "(account_id, renewal_date, outcome; arr_before recommended)."
        )
    accounts = _lazy(tables["accounts"])
    outcomes = _lazy(tables["outcomes"])
    history = account_history if account_history is not None else tables.get("account_history")
    history_lf = _lazy(history) if history is not None else None

    bad_kinds = ["churned", "downgraded"] if downgrade else ["churned"]
    base = (
        outcomes.filter(pl.col("renewal_date").is_not_null())
        .select(
            "account_id",
            pl.col("renewal_date").cast(pl.Date),
            "outcome",
            pl.col("outcome").is_in(bad_kinds).alias("bad"),
            (pl.col("renewal_date").cast(pl.Date) - pl.duration(days=lead_days)).alias("_exact"),
        )
        .collect()
    )
    if base.height == 0:
        raise BacktestError("the outcomes table has no renewals to test against")
    end = default_as_of(tables)
    ids = accounts.select(pl.col("account_id").unique()).collect()["account_id"]
    n_exact = base.filter(pl.col("_exact") <= end)["_exact"].n_unique()
    mode = snap
    if mode == "auto":
        mode = "week" if len(ids) * n_exact > AUTO_WEEKLY_ABOVE else "day"
    as_of = pl.col("_exact") if mode == "day" else _snap_dates(pl.col("_exact"), end)
    base = base.with_columns(as_of.alias(AS_OF), (pl.col("_exact") > end).alias("_after"))
    dates = sorted(base.filter(~pl.col("_after"))[AS_OF].unique().to_list())

    stable = set(stable_columns)
    warnings: list[str] = []
    attrs, replaced = _as_of_attributes(accounts, outcomes, history_lf, dates or [end])
    helpers, recomputed = _recompute(model, set(replaced))
    signal_names = list(model.signals)
    keep = [
        "score", "tier", "tier_by_score", "health_segment", "coverage", "rule",
        *[c for s in signal_names for c in (s, f"{s}__score")],
    ]  # fmt: skip

    engine_seconds = 0.0
    if dates:
        engine_model = model.model_copy(update={"signals": {**model.signals, **helpers}}) if helpers else model
        t0 = time.perf_counter()
        features = compute_features(tables, engine_model, dates)
        features = (
            features.drop(list(replaced), strict=False)
            .join(attrs, on=["account_id", AS_OF], how="left")
            .with_columns(list(recomputed.values()))
            .drop(list(helpers))
        )
        scored = score_features(features, model, signal_names)
        wanted = base.lazy().filter(~pl.col("_after")).select("account_id", AS_OF).unique()
        scores = (
            scored.join(wanted, on=["account_id", AS_OF], how="semi")
            .select("account_id", AS_OF, *keep, *[pl.col(c).alias(f"as_of_{c}") for c in replaced], "_hist_gap")
            .collect()
        )
        engine_seconds = time.perf_counter() - t0
    else:
        scores = pl.DataFrame(schema={"account_id": pl.String, AS_OF: pl.Date})

    rows = base.join(scores, on=["account_id", AS_OF], how="left")
    for c in [*keep, *[f"as_of_{c}" for c in replaced], "_hist_gap"]:
        if c not in rows.columns:
            rows = rows.with_columns(pl.lit(None).alias(c))
    status = (
        pl.when(pl.col("_after"))
        .then(pl.lit("after_data"))
        .when(~pl.col("account_id").is_in(ids.implode()))
        .then(pl.lit("unknown_account"))
        .when(pl.col("tier").is_null())
        .then(pl.lit("not_a_customer"))
        .when(pl.col("tier_by_score") == INSUFFICIENT)
        .then(pl.lit("insufficient_data"))
        .otherwise(pl.lit("scored"))
    )
    rows = rows.with_columns(status.alias("status")).sort("renewal_date", "account_id")

    gaps = int(rows["_hist_gap"].fill_null(False).sum())
    if gaps:
        warnings.append(
            f"account_history did not cover T for {gaps} renewal(s): today's snapshot was used for them."
        )
    rows = rows.drop("_exact", "_after", "_hist_gap", "tier_by_score")

    scored_rows = rows.filter(pl.col("status") == "scored")
    metrics_args = {"resamples": resamples, "seed": seed, "min_outcomes": min_outcomes, "min_bad": min_bad}

    def metrics_of(frame: pl.DataFrame) -> Metrics:
        return evaluate(
            frame["score"].to_numpy(),
            frame["bad"].to_numpy(),
            frame["tier"].to_list(),
            frame["account_id"].to_numpy(),
            **metrics_args,
        )

    overall = metrics_of(scored_rows)
    segments = {
        seg: metrics_of(scored_rows.filter(pl.col("health_segment") == seg))
        for seg in model.segments
        if scored_rows.filter(pl.col("health_segment") == seg).height
    }
    for seg, m in segments.items():
        if m.too_small:
            warnings.append(
                f"segment '{seg}': {m.n} scored renewals, {m.bad} bad — too few to judge "
                f"(want at least {min_outcomes} and {min_bad})."
            )
    if overall.too_small:
        warnings.append(
            f"only {overall.n} scored renewals with {overall.bad} bad outcomes: too few to judge the model."
        )

    used = set(model.used_signals)
    customers = rows.filter(pl.col("status").is_in(["scored", "insufficient_data"]))
    signals = []
    for s in signal_names:
        have = customers.filter(pl.col(f"{s}__score").is_not_null())
        sv, bv = have[f"{s}__score"].to_numpy(), have["bad"].to_numpy()
        low, high = bootstrap_auc(sv, bv, have["account_id"].to_numpy(), resamples, seed)
        signals.append(
            SignalAuc(s, model.signals[s].label, s in used, have.height, int(bv.sum()), auc(sv, bv), low, high)
        )

    not_scored = []
    for reason in ("unknown_account", "not_a_customer", "insufficient_data", "after_data"):
        part = rows.filter(pl.col("status") == reason)
        if part.height:
            not_scored.append(NotScored(reason, STATUS_TEXT[reason], part.height, int(part["bad"].sum())))

    reads = snapshot_reads(model, replaced, stable)
    for r in reads:
        if r.replaced_by is None:
            warnings.append(
                f"{r.reader} reads `{r.column}`, a snapshot of today: the back-test could not read it as "
                f"of T (give account_history with a `{r.column}` column, or declare it stable)."
            )
    if "arr" not in replaced and "arr" not in stable:
        warnings.append("outcomes has no arr_before: `arr` could not be read as of T.")

    return BacktestResult(
        lead_days=lead_days,
        downgrade=downgrade,
        snap=mode,
        n_as_of_dates=len(dates),
        data_end=end,
        n_outcomes=rows.height,
        overall=overall,
        segments=segments,
        signals=signals,
        not_scored=not_scored,
        replaced=replaced,
        snapshot_reads=reads,
        warnings=warnings,
        engine_seconds=engine_seconds,
        total_seconds=time.perf_counter() - started,
        resamples=resamples,
        seed=seed,
        rows=rows,
        model_version=model_version,
    )


# ---------------------------------------------------------------------------------------
# The plain-text report
# ---------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _lift(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}x"


def _auc_text(m: Metrics | SignalAuc) -> str:
    if m.auc is None:
        return "—"
    ci = f" [{m.auc_low:.2f}–{m.auc_high:.2f}]" if m.auc_low is not None and m.auc_high is not None else ""
    return f"{m.auc:.2f}{ci}"


def _bands(title: str, bands: Sequence[Band]) -> list[str]:
    lines = [f"  {title:<10} {'n':>5} {'bad':>5} {'rate':>6} {'lift':>6}"]
    for b in bands:
        lines.append(f"  {b.label:<10} {b.n:>5} {b.bad:>5} {_pct(b.rate):>6} {_lift(b.lift):>6}")
    return lines


def format_report(result: BacktestResult) -> str:
    r = result
    bad_word = "churned or downgraded" if r.downgrade else "churned"
    o = r.overall
    n_not = sum(x.n for x in r.not_scored)
    when = (
        f"exactly {r.lead_days} days before each renewal"
        if r.snap == "day"
        else f"{r.lead_days}-{r.lead_days + 6} days before each renewal (snapped to the weekly grid ending {r.data_end})"
    )
    version = f" (model {r.model_version})" if r.model_version else ""
    lines = [
        f"Back-test{version}: scored {when}, on {r.n_as_of_dates} as-of dates; data ends {r.data_end}.",
        f"Bad outcome = {bad_word}. {r.n_outcomes} past renewals: {o.n} scored, {n_not} not scored.",
    ]
    for x in r.not_scored:
        lines.append(f"  not scored — {x.text}: {x.n} ({x.bad} bad)")
    lines += [
        "",
        f"Overall: n={o.n}, bad={o.bad} (base rate {_pct(o.base_rate)})",
        f"  AUC {_auc_text(o)}  (95% bootstrap CI, {r.resamples} resamples of accounts; 0.5 = no better than chance)",
        f"  recall: {_pct(o.recall_at_risk)} of bad outcomes were at_risk at T, {_pct(o.recall_flagged)} at_risk or watch",
        f"  worst decile by score ({o.decile_n} renewals): {_pct(o.decile_precision)} bad, lift {_lift(o.decile_lift)}",
        "",
        *_bands("tier", o.tiers),
        "",
        *_bands("score", o.calibration),
        "",
        "By segment (the model's segment at T):",
        f"  {'segment':<14} {'n':>5} {'bad':>5} {'AUC [95% CI]':<18} {'at_risk lift':>12} {'recall a/w':>11} {'decile lift':>11}",
    ]
    for seg, m in r.segments.items():
        flag = "  (too few to judge)" if m.too_small else ""
        lines.append(
            f"  {seg:<14} {m.n:>5} {m.bad:>5} {_auc_text(m):<18} {_lift(m.at_risk_lift):>12} "
            f"{_pct(m.recall_flagged):>11} {_lift(m.decile_lift):>11}{flag}"
        )
    lines += [
        "",
        "Signals alone (AUC of the sub-score where the signal has a value; * = not weighted):",
        f"  {'signal':<28} {'n':>5} {'bad':>5}  AUC [95% CI]",
    ]
    for s in sorted(r.signals, key=lambda x: -(x.auc or 0)):
        mark = "" if s.weighted else " *"
        lines.append(f"  {s.signal + mark:<28} {s.n:>5} {s.bad:>5}  {_auc_text(s)}")
    lines += ["", "Account columns read as of T (not today's snapshot):"]
    for col, src in r.replaced.items():
        lines.append(f"  {col} <- {src}")
    if r.warnings:
        lines += ["", "Warnings:"]
        lines += [f"  - {w}" for w in r.warnings]
    lines += ["", f"Engine {r.engine_seconds:.2f} s, total {r.total_seconds:.2f} s."]
    return "\n".join(lines)
