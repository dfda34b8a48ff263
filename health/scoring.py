"""From raw signal values to a score, a tier and an explanation — as Polars expressions.

For every signal `s` the scored frame carries:

* `s` — the raw value (days, ratio, count, ...), null when missing;
* `s__score` — the 0..100 sub-score (after the missing-data policy);
* `s__weight` — the signal's weight in the account's segment;
* `s__contribution` — its share of the score: weights renormalise over the signals
  present, so the contributions add up to `score` exactly;
* `s__lost` — points the signal costs the account (weight share x (100 - sub-score)),
  which ranks the drivers of a low score.

Plus `health_segment`, `score`, `coverage` (share of the segment's weight that had
data), `tier_by_score`, `rule` (the override that fired, if any), `rule_reason`, `tier`.
"""

from __future__ import annotations

import datetime as dt
from functools import reduce
from typing import Mapping, Sequence

import polars as pl

from health.features import AS_OF, Frame, RollupProvider, compute_features
from health.model import INSUFFICIENT, HealthModel, Signal

SUFFIXES = ("score", "weight", "contribution", "lost")


def piecewise(x: pl.Expr, points: Sequence[tuple[float, float]]) -> pl.Expr:
    """Piecewise-linear map through `points`, flat beyond the first and last point."""
    (x0, y0), (_, yn) = points[0], points[-1]
    chain = pl.when(x <= x0).then(pl.lit(float(y0)))
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        slope = (yb - ya) / (xb - xa)
        chain = chain.when(x <= xb).then(ya + (x - xa) * slope)
    return pl.when(x.is_not_null()).then(chain.otherwise(pl.lit(float(yn))))


def sub_score(name: str, sig: Signal) -> pl.Expr:
    raw = pl.col(name)
    if sig.score == "percentile":
        rank = raw.rank("average").over("health_segment", AS_OF)
        n = raw.count().over("health_segment", AS_OF)
        pct = pl.when(n > 1).then((rank - 1) / (n - 1) * 100).otherwise(50.0)
        sub = pct if sig.direction == "higher_is_better" else 100 - pct
        sub = pl.when(raw.is_not_null()).then(sub)
        worst = 0.0
    else:
        sub = piecewise(raw, sig.score)
        worst = float(min(p[1] for p in sig.score))
    if sig.missing == "neutral":
        sub = sub.fill_null(50.0)
    elif sig.missing == "worst":
        sub = sub.fill_null(worst)
    return sub.cast(pl.Float64)


def _by_segment(mapping: dict[str, float], default: float | None = 0.0) -> pl.Expr:
    """A per-segment constant, chosen by comparing the (categorical) segment column —
    cheaper on millions of rows than a string lookup."""
    chain = None
    for name, value in mapping.items():
        cond = pl.col("health_segment") == pl.lit(name)
        chain = pl.when(cond).then(pl.lit(float(value))) if chain is None else chain.when(cond).then(pl.lit(float(value)))
    if chain is None:
        return pl.lit(default, pl.Float64)
    return chain.otherwise(pl.lit(default, pl.Float64))


def segment_expr(model: HealthModel) -> pl.Expr:
    default = next(name for name, seg in model.segments.items() if seg.when is None)
    chain = None
    for name, seg in model.segments.items():
        if seg.when is None:
            continue
        cond = pl.sql_expr(seg.when).fill_null(False)
        chain = pl.when(cond).then(pl.lit(name)) if chain is None else chain.when(cond).then(pl.lit(name))
    names = pl.Enum(list(model.segments))
    if chain is None:
        return pl.lit(default).cast(names).alias("health_segment")
    return chain.otherwise(pl.lit(default)).cast(names).alias("health_segment")


def score_features(features: pl.LazyFrame, model: HealthModel, signals: Sequence[str] | None = None) -> pl.LazyFrame:
    """Weight, tier and override a features frame (see the module docstring)."""
    names = list(signals) if signals is not None else list(model.signals)
    lf = features.with_columns(segment_expr(model))
    weights = {s: {seg: segdef.weights.get(s, 0.0) for seg, segdef in model.segments.items()} for s in names}

    lf = lf.with_columns(
        [sub_score(s, model.signals[s]).alias(f"{s}__score") for s in names]
        + [_by_segment(weights[s]).alias(f"{s}__weight") for s in names]
    )
    present = {s: pl.when(pl.col(f"{s}__score").is_not_null()).then(pl.col(f"{s}__weight")).otherwise(0.0) for s in names}
    total_present = pl.sum_horizontal(list(present.values())) if names else pl.lit(0.0)
    total = pl.sum_horizontal([pl.col(f"{s}__weight") for s in names]) if names else pl.lit(0.0)
    lf = lf.with_columns(
        total_present.alias("_w_present"),
        total.alias("_w_total"),
    ).with_columns(
        [
            pl.when(pl.col("_w_present") > 0)
            .then(present[s] * pl.col(f"{s}__score").fill_null(0.0) / pl.col("_w_present"))
            .alias(f"{s}__contribution")
            for s in names
        ]
        + [
            pl.when(pl.col("_w_present") > 0)
            .then(present[s] * (100.0 - pl.col(f"{s}__score").fill_null(100.0)) / pl.col("_w_present"))
            .alias(f"{s}__lost")
            for s in names
        ]
    )
    lf = lf.with_columns(
        pl.sum_horizontal([pl.col(f"{s}__contribution") for s in names]).alias("score")
        if names
        else pl.lit(None, pl.Float64).alias("score"),
        pl.when(pl.col("_w_total") > 0).then(pl.col("_w_present") / pl.col("_w_total")).otherwise(0.0).alias("coverage"),
    ).with_columns(pl.when(pl.col("_w_present") > 0).then(pl.col("score")).alias("score"))

    at_risk = _by_segment({n: model.segment_tiers(n).at_risk for n in model.segments}, None)
    watch = _by_segment({n: model.segment_tiers(n).watch for n in model.segments}, None)
    by_score = (
        pl.when(pl.col("score").is_null() | (pl.col("coverage") < model.min_coverage))
        .then(pl.lit(INSUFFICIENT))
        .when(pl.col("score") < at_risk)
        .then(pl.lit("at_risk"))
        .when(pl.col("score") < watch)
        .then(pl.lit("watch"))
        .otherwise(pl.lit("healthy"))
    )
    lf = lf.with_columns(by_score.alias("tier_by_score"))
    lf = lf.with_columns(_rules(model, names))
    lf = lf.with_columns(
        pl.coalesce(pl.col("_rule_tier"), pl.col("tier_by_score")).alias("tier"),
    )
    return lf.drop("_w_present", "_w_total", "_rule_tier").with_columns(pl.col("health_segment").cast(pl.String))


def _rules(model: HealthModel, names: Sequence[str]) -> list[pl.Expr]:
    # Scoring a subset of the signals: rules that read a left-out signal cannot fire.
    left_out = set(model.signals) - set(names)
    rules = [r for r in model.rules if not (set(pl.sql_expr(r.when).meta.root_names()) & left_out)]
    if not rules:
        return [
            pl.lit(None, pl.String).alias("rule"),
            pl.lit(None, pl.String).alias("rule_reason"),
            pl.lit(None, pl.String).alias("_rule_tier"),
        ]
    conds = [pl.sql_expr(r.when).fill_null(False) for r in rules]

    def first_match(values: list[str | None]) -> pl.Expr:
        chain = reduce(
            lambda acc, cv: acc.when(cv[0]).then(pl.lit(cv[1], pl.String)),
            list(zip(conds, values))[1:],
            pl.when(conds[0]).then(pl.lit(values[0], pl.String)),
        )
        return chain.otherwise(pl.lit(None, pl.String))

    return [
        first_match([r.name for r in rules]).alias("rule"),
        first_match([r.reason or r.name for r in rules]).alias("rule_reason"),
        first_match([r.tier for r in rules]).alias("_rule_tier"),
    ]


def model_account_columns(model: HealthModel) -> list[str]:
    """The account columns the model reads: in segment and rule conditions and signals."""
    cols: set[str] = set()
    for seg in model.segments.values():
        if seg.when:
            cols.update(pl.sql_expr(seg.when).meta.root_names())
    for rule in model.rules:
        cols.update(pl.sql_expr(rule.when).meta.root_names())
    for sig in model.signals.values():
        for obj in (sig, sig.numerator, sig.denominator):
            if obj is not None and getattr(obj, "column", None):
                cols.add(obj.column)  # type: ignore[union-attr]
    return sorted(cols - set(model.signals) - {"score", "coverage", "health_segment"})


def score_lazy(
    tables: Mapping[str, Frame],
    model: HealthModel,
    as_of: Sequence[dt.date],
    signals: Sequence[str] | None = None,
    lean: bool = False,
    stream_rollups: bool = False,
    rollup_provider: "RollupProvider | None" = None,
) -> pl.LazyFrame:
    """`lean`: carry only the account columns the model reads, and leave out the columns
    that follow from the segment (`<signal>__weight`, `<signal>__lost`: see `derive`);
    `stream_rollups`: see `compute_features`."""
    columns = model_account_columns(model) if lean else None
    features = compute_features(tables, model, as_of, signals, columns, stream_rollups, rollup_provider)
    scored = score_features(features, model, signals)
    if lean:
        names = list(signals) if signals is not None else list(model.signals)
        scored = scored.drop([f"{s}__{kind}" for s in names for kind in ("weight", "lost")])
    return scored


def derive(scored: pl.DataFrame, model: HealthModel) -> pl.DataFrame:
    """Put back what a lean score frame leaves out: each signal's weight in the row's
    segment and the points it costs — cheap on the rows one is about to show."""
    names = [s for s in model.signals if f"{s}__score" in scored.columns]
    weights = {s: {seg: d.weights.get(s, 0.0) for seg, d in model.segments.items()} for s in names}
    out = scored.with_columns([_by_segment(weights[s]).alias(f"{s}__weight") for s in names])
    present = {s: pl.when(pl.col(f"{s}__score").is_not_null()).then(pl.col(f"{s}__weight")).otherwise(0.0) for s in names}
    total = pl.sum_horizontal(list(present.values()))
    return out.with_columns(
        [
            pl.when(total > 0).then(present[s] * (100.0 - pl.col(f"{s}__score").fill_null(100.0)) / total).alias(f"{s}__lost")
            for s in names
        ]
    )


def score(
    tables: Mapping[str, Frame],
    model: HealthModel,
    as_of: dt.date,
    signals: Sequence[str] | None = None,
) -> pl.DataFrame:
    """One row per account active at `as_of`: score, tier, segment, coverage, the rule
    that fired, and per signal its raw value, sub-score, weight and contribution."""
    return score_lazy(tables, model, [as_of], signals).collect()


def weekly_dates(end: dt.date, weeks: int) -> list[dt.date]:
    """`weeks` + 1 dates, a week apart, ending on `end` (so `weeks` weekly changes)."""
    return [end - dt.timedelta(days=7 * k) for k in range(weeks, -1, -1)]


def score_history(
    tables: Mapping[str, Frame],
    model: HealthModel,
    end: dt.date,
    weeks: int = 104,
    signals: Sequence[str] | None = None,
    streaming: bool = False,
    lean: bool = False,
    rollup_provider: "RollupProvider | None" = None,
) -> pl.DataFrame:
    """Scores as of every week over `weeks` weeks ending on `end`, in one vectorised pass.

    `streaming=True` runs the raw-table roll-ups on the streaming engine (large books);
    `rollup_provider` runs them elsewhere (in the database: `health.pushdown`).

    `lean=True` leaves out the account columns the model does not read (name, owner,
    ...) and the per-signal weights and points lost (`derive` puts them back for the rows
    one shows): a 100k-account, two-year history is then a third smaller."""
    dates = weekly_dates(end, weeks)
    return score_lazy(tables, model, dates, signals, lean, streaming, rollup_provider).collect()


def default_as_of(tables: Mapping[str, Frame]) -> dt.date:
    """The latest day the data knows about: the max of the usage / tickets time columns.

    Scoring 'today' against data that stops last week would make every account look idle;
    the data's own latest day is the honest 'now' (the freshness check reports the lag).
    """
    from health.schema import TABLES

    latest: list[dt.date] = []
    for name in ("usage", "tickets", "surveys", "touchpoints"):
        frame = tables.get(name)
        tcol = TABLES[name].time_column
        if frame is None or tcol is None:
            continue
        value = pl.LazyFrame(frame) if isinstance(frame, pl.DataFrame) else frame
        got = value.select(pl.col(tcol).max().cast(pl.Date)).collect().item()
        if got is not None:
            latest.append(got)
    return max(latest) if latest else dt.date.today()
