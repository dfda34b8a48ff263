"""One account's story on one time axis: every event table unioned into one frame.

`account_timeline` turns tickets (opened / escalated / closed), invoices (issued / paid /
overdue), survey answers (with their comments), touchpoints (exec meetings, QBRs, calls
with their notes), milestones and the account's tier changes (read off the weekly score
history) into rows of the same shape:

    at (datetime) | source | event | title | detail | ref | tone

`tone` is "bad", "good" or "info": whether the event is bad news for the account (an
escalation, an overdue invoice, a detractor NPS, a champion leaving, a fall into a worse
tier), good news (a ticket closed, an invoice paid, a promoter, a go-live), or neither.

`source` is the canonical table the record came from ("health" for tier changes), so a
page can draw one lane per source and filter the list by source. A table that is absent,
or has no rows for the account, simply contributes no rows. Optional columns (subject,
sentiment, comment, notes, ...) are used when present and skipped when not.

Point in time: only what was known by `until` is shown (a ticket closed after `until`
is still open on the timeline), so the timeline agrees with the score as of that date.
"""

from __future__ import annotations

import datetime as dt
from typing import Mapping

import polars as pl

from health.features import AS_OF

Frame = pl.DataFrame | pl.LazyFrame

SOURCE_LABELS: dict[str, str] = {
    "tickets": "Support tickets",
    "invoices": "Billing",
    "surveys": "Surveys",
    "touchpoints": "Meetings & calls",
    "milestones": "Milestones",
    "health": "Health tier",
    "alerts": "Alerts",
    "actions": "Actions & decisions",
}
"""Lane names, in the order lanes are drawn (top to bottom). "actions" holds what the team
did about the account — actions logged (and their approval / sync) and plays dismissed
with a reason — from `health.actions.ActionStore.account_events`, merged in with
`with_events`. "alerts" holds the alerts the daily run fired on the account and their
acknowledgements (`health.alerts.alert_timeline`), merged the same way."""

SCHEMA: dict[str, pl.DataType] = {
    "at": pl.Datetime("us"),
    "source": pl.String(),
    "event": pl.String(),
    "title": pl.String(),
    "detail": pl.String(),
    "ref": pl.String(),
    "tone": pl.String(),
}

BAD_MILESTONES = ("champion_left", "budget_cut", "churned", "exec_sponsor_changed", "acquisition_announced", "downgraded")
GOOD_MILESTONES = ("go_live", "feature_adopted", "new_champion", "renewal_signed", "expanded")
_TIER_RANK = {"at_risk": 0, "watch": 1, "healthy": 2}

TIER_WORDS: dict[str, str] = {
    "at_risk": "at risk",
    "watch": "watch",
    "healthy": "healthy",
    "insufficient_data": "insufficient data",
}

_TOUCHPOINT_WORDS = {"exec_meeting": "Executive meeting", "qbr": "QBR", "call": "Call", "onboarding": "Onboarding session"}


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def _for_account(tables: Mapping[str, Frame], name: str, account_id: str) -> pl.DataFrame | None:
    frame = tables.get(name)
    if frame is None:
        return None
    lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    if "account_id" not in lf.collect_schema().names():
        return None
    return lf.filter(pl.col("account_id") == account_id).collect()


def _text(df: pl.DataFrame, column: str) -> pl.Expr:
    """The column as text ('' when the source lacks it or the value is null)."""
    if column not in df.columns:
        return pl.lit("")
    return pl.col(column).cast(pl.String).fill_null("")


def _money(expr: pl.Expr) -> pl.Expr:
    """$12,345 (whole dollars, thousands separated)."""
    whole = expr.round(0).cast(pl.Int64).cast(pl.String)
    with_commas = whole.str.reverse().str.replace_all(r"(\d{3})", "$1,").str.reverse().str.strip_chars_start(",")
    return pl.lit("$") + with_commas


def _rows(
    df: pl.DataFrame,
    at: pl.Expr,
    source: str,
    event: pl.Expr | str,
    title: pl.Expr,
    detail: pl.Expr,
    ref: pl.Expr,
    tone: pl.Expr | str = "info",
) -> pl.DataFrame:
    return df.select(
        at.cast(pl.Datetime("us")).alias("at"),
        pl.lit(source).alias("source"),
        (pl.lit(event) if isinstance(event, str) else event).alias("event"),
        title.alias("title"),
        detail.str.strip_chars(" ;").alias("detail"),
        ref.cast(pl.String).alias("ref"),
        (pl.lit(tone) if isinstance(tone, str) else tone).alias("tone"),
    )


def _join(parts: list[pl.Expr], sep: str = "; ") -> pl.Expr:
    """Join the non-empty parts with `sep`."""
    return pl.concat_list(parts).list.eval(pl.element().filter(pl.element() != "")).list.join(sep)


def _days_open(days: pl.Expr) -> pl.Expr:
    return (
        pl.when(days <= 0)
        .then(pl.lit("closed the same day"))
        .when(days == 1)
        .then(pl.lit("open 1 day"))
        .otherwise(pl.lit("open ") + days.cast(pl.String) + pl.lit(" days"))
    )


def _tickets(df: pl.DataFrame) -> list[pl.DataFrame]:
    subject = _text(df, "subject")
    label = pl.col("priority").cast(pl.String).fill_null("?") + pl.lit(" ticket")
    about = pl.when(subject != "").then(pl.lit(": ") + subject).otherwise(pl.lit(""))
    escalated = pl.col("escalated").fill_null(False) if "escalated" in df.columns else pl.lit(False)
    sentiment = (
        pl.when(pl.col("sentiment").is_not_null())
        .then(pl.lit("sentiment ") + pl.col("sentiment").round(2).cast(pl.String))
        .otherwise(pl.lit(""))
        if "sentiment" in df.columns
        else pl.lit("")
    )
    ticket = pl.col("ticket_id").cast(pl.String)
    opened = _rows(
        df,
        pl.col("opened_at"),
        "tickets",
        pl.when(escalated).then(pl.lit("escalated")).otherwise(pl.lit("opened")),
        label + pl.when(escalated).then(pl.lit(" opened, escalated")).otherwise(pl.lit(" opened")) + about,
        _join([ticket, sentiment, pl.when(escalated).then(pl.lit("escalated")).otherwise(pl.lit(""))]),
        ticket,
        pl.when(escalated | pl.col("priority").cast(pl.String).is_in(["P1", "P2"])).then(pl.lit("bad")).otherwise(pl.lit("info")),
    )
    out = [opened]
    if "closed_at" in df.columns:
        closed = df.filter(pl.col("closed_at").is_not_null())
        days = (pl.col("closed_at") - pl.col("opened_at")).dt.total_days()
        out.append(
            _rows(
                closed,
                pl.col("closed_at"),
                "tickets",
                "closed",
                label + pl.lit(" closed") + about,
                _join([ticket, _days_open(days)]),
                ticket,
                "good",
            )
        )
    return out


def _invoices(df: pl.DataFrame, until: dt.date) -> list[pl.DataFrame]:
    inv = pl.col("invoice_id").cast(pl.String)
    amount = _money(pl.col("amount"))
    paid_at = pl.col("paid_at") if "paid_at" in df.columns else pl.lit(None, pl.Date)
    issued = _rows(
        df,
        pl.col("issued_at"),
        "invoices",
        "issued",
        pl.lit("Invoice issued: ") + amount,
        _join([inv, pl.lit("due ") + pl.col("due_date").cast(pl.String)]),
        inv,
        "info",
    )
    late = (paid_at - pl.col("due_date")).dt.total_days()
    paid = df.filter(paid_at.is_not_null())
    paid_rows = _rows(
        paid,
        paid_at,
        "invoices",
        "paid",
        pl.lit("Invoice paid: ") + amount,
        _join(
            [
                inv,
                pl.when(late > 0)
                .then(late.cast(pl.String) + pl.lit(" days late"))
                .otherwise(pl.lit("on time")),
            ]
        ),
        inv,
        pl.when(late > 0).then(pl.lit("info")).otherwise(pl.lit("good")),
    )
    # Overdue from the day after the due date, if it was not paid by then.
    overdue_day = pl.col("due_date") + pl.duration(days=1)
    overdue = df.filter((paid_at.is_null() | (paid_at > pl.col("due_date"))) & (overdue_day <= pl.lit(until)))
    overdue_rows = _rows(
        overdue,
        overdue_day,
        "invoices",
        "overdue",
        pl.lit("Invoice overdue: ") + amount,
        _join(
            [
                inv,
                pl.when(paid_at.is_null() | (paid_at > pl.lit(until)))
                .then(pl.lit("unpaid as of ") + pl.lit(until.isoformat()))
                .otherwise(pl.lit("paid ") + late.cast(pl.String) + pl.lit(" days late")),
            ]
        ),
        inv,
        "bad",
    )
    return [issued, paid_rows, overdue_rows]


def _survey_tone(kind: pl.Expr, score: pl.Expr) -> pl.Expr:
    """NPS detractors (0-6) and CSAT 1-2 are bad news; promoters (9-10) and CSAT 4-5 good."""
    return (
        pl.when(score.is_null())
        .then(pl.lit("info"))
        .when(kind == "nps")
        .then(pl.when(score <= 6).then(pl.lit("bad")).when(score >= 9).then(pl.lit("good")).otherwise(pl.lit("info")))
        .when(kind == "csat")
        .then(pl.when(score <= 2).then(pl.lit("bad")).when(score >= 4).then(pl.lit("good")).otherwise(pl.lit("info")))
        .otherwise(pl.lit("info"))
    )


def _surveys(df: pl.DataFrame) -> list[pl.DataFrame]:
    kind = pl.col("kind").cast(pl.String).fill_null("survey")
    scale = pl.when(kind.str.to_lowercase() == "nps").then(pl.lit("/10")).when(kind.str.to_lowercase() == "csat").then(pl.lit("/5")).otherwise(pl.lit(""))
    score = pl.col("score").round(0).cast(pl.Int64).cast(pl.String)
    comment = _text(df, "comment")
    quoted = pl.when(comment != "").then(pl.lit("\u201c") + comment + pl.lit("\u201d")).otherwise(pl.lit(""))
    return [
        _rows(
            df,
            pl.col("responded_at"),
            "surveys",
            kind.str.to_lowercase(),
            kind.str.to_uppercase() + pl.lit(" ") + score + scale,
            _join([quoted, _text(df, "respondent")], " \u2014 "),
            pl.col("response_id"),
            _survey_tone(kind.str.to_lowercase(), pl.col("score")),
        )
    ]


def _touchpoints(df: pl.DataFrame) -> list[pl.DataFrame]:
    kind = pl.col("kind").cast(pl.String).fill_null("touchpoint")
    words = kind.replace_strict(_TOUCHPOINT_WORDS, default=kind.str.replace_all("_", " ").str.to_titlecase())
    notes = _text(df, "notes")
    # Notes often start with the kind already ("QBR: ..."): do not say it twice.
    title = (
        pl.when(notes == "")
        .then(words)
        .when(notes.str.to_lowercase().str.starts_with(words.str.to_lowercase()))
        .then(notes)
        .otherwise(words + pl.lit(": ") + notes)
    )
    return [
        _rows(
            df,
            pl.col("at"),
            "touchpoints",
            kind,
            title,
            _text(df, "participants"),
            pl.col("touchpoint_id"),
        )
    ]


def _milestones(df: pl.DataFrame) -> list[pl.DataFrame]:
    kind = pl.col("kind").cast(pl.String).fill_null("milestone")
    words = kind.str.replace_all("_", " ")
    words = words.str.slice(0, 1).str.to_uppercase() + words.str.slice(1)
    return [
        _rows(
            df,
            pl.col("at"),
            "milestones",
            kind,
            words,
            _text(df, "description"),
            pl.lit(""),
            pl.when(kind.is_in(BAD_MILESTONES))
            .then(pl.lit("bad"))
            .when(kind.is_in(GOOD_MILESTONES))
            .then(pl.lit("good"))
            .otherwise(pl.lit("info")),
        )
    ]


def tier_changes(history: pl.DataFrame) -> pl.DataFrame:
    """One row per week where the account's tier differs from the week before.

    `history` is one account's weekly score history (as_of, tier, score, rule ...).
    """
    if history.is_empty() or "tier" not in history.columns:
        return empty()
    rule = pl.col("rule").cast(pl.String).fill_null("") if "rule" in history.columns else pl.lit("")
    h = (
        history.sort(AS_OF)
        .with_columns(
            pl.col("tier").shift(1).alias("_prev_tier"),
            pl.col("score").shift(1).alias("_prev_score"),
            rule.alias("_rule"),
        )
        .filter(pl.col("_prev_tier").is_not_null() & (pl.col("tier") != pl.col("_prev_tier")))
    )
    words = lambda c: pl.col(c).replace_strict(TIER_WORDS, default=pl.col(c))  # noqa: E731
    rank = lambda c: pl.col(c).replace_strict(_TIER_RANK, default=None, return_dtype=pl.Int64)  # noqa: E731
    score_text = pl.when(pl.col("score").is_not_null()).then(
        pl.lit("score ") + pl.col("score").round(0).cast(pl.Int64).cast(pl.String)
    ).otherwise(pl.lit("no score"))
    was = pl.when(pl.col("_prev_score").is_not_null()).then(
        pl.lit("was ") + pl.col("_prev_score").round(0).cast(pl.Int64).cast(pl.String)
    ).otherwise(pl.lit(""))
    return _rows(
        h,
        pl.col(AS_OF),
        "health",
        pl.when(pl.col("tier") == "at_risk").then(pl.lit("moved into at risk")).otherwise(pl.lit("tier changed")),
        pl.lit("Tier: ") + words("_prev_tier") + pl.lit(" \u2192 ") + words("tier"),
        _join([score_text, was, pl.when(pl.col("_rule") != "").then(pl.lit("rule: ") + pl.col("_rule")).otherwise(pl.lit(""))]),
        pl.lit(""),
        pl.when(rank("tier") < rank("_prev_tier"))
        .then(pl.lit("bad"))
        .when(rank("tier") > rank("_prev_tier"))
        .then(pl.lit("good"))
        .otherwise(pl.lit("info")),
    )


def account_timeline(
    tables: Mapping[str, Frame],
    account_id: str,
    *,
    history: pl.DataFrame | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> pl.DataFrame:
    """Every event of one account, newest first (see the module docstring).

    `history` (the account's rows of the weekly score history, or the whole history)
    adds tier changes. Events after `until` are left out and timestamps are kept as
    they are; `since` drops older events.
    """
    until = until or dt.date.today()
    parts: list[pl.DataFrame] = []
    builders = {
        "tickets": _tickets,
        "invoices": lambda df: _invoices(df, until),
        "surveys": _surveys,
        "touchpoints": _touchpoints,
        "milestones": _milestones,
    }
    for name, build in builders.items():
        df = _for_account(tables, name, account_id)
        if df is None or df.is_empty():
            continue
        # Only what was known by `until`: a ticket closed later is still open here.
        if name == "tickets" and "closed_at" in df.columns:
            df = df.with_columns(
                pl.when(pl.col("closed_at").cast(pl.Date) <= until).then(pl.col("closed_at")).alias("closed_at")
            )
        if name == "invoices" and "paid_at" in df.columns:
            df = df.with_columns(pl.when(pl.col("paid_at") <= until).then(pl.col("paid_at")).alias("paid_at"))
        parts.extend(build(df))
    if history is not None and not history.is_empty():
        mine = history.filter(pl.col("account_id") == account_id) if "account_id" in history.columns else history
        parts.append(tier_changes(mine))
    if not parts:
        return empty()
    out = pl.concat([p.cast(SCHEMA) for p in parts if not p.is_empty()] or [empty()], how="vertical")
    end = dt.datetime.combine(until, dt.time.max)
    out = out.filter(pl.col("at") <= end)
    if since is not None:
        out = out.filter(pl.col("at") >= dt.datetime.combine(since, dt.time.min))
    order = {s: i for i, s in enumerate(SOURCE_LABELS)}
    return (
        out.with_columns(pl.col("source").replace_strict(order, default=len(order)).alias("_o"))
        .sort(["at", "_o"], descending=[True, False])
        .drop("_o")
    )


def with_events(timeline: pl.DataFrame, *extra: pl.DataFrame | None, since: dt.date | None = None) -> pl.DataFrame:
    """The timeline with more rows of the same shape (e.g. the account's actions and
    decisions from `ActionStore.account_events`), newest first, lanes in SOURCE_LABELS
    order for equal times. `since` drops older extra rows.

    No `until` here on purpose: actions and decisions are what the team did, recorded
    when they did it (UTC) — typically after the data's latest day — and are shown as
    they are rather than cut off at the score's as-of date."""
    parts = [timeline.cast(SCHEMA)]
    for frame in extra:
        if frame is None or frame.is_empty():
            continue
        add = frame.select(list(SCHEMA)).cast(SCHEMA)
        if since is not None:
            add = add.filter(pl.col("at") >= dt.datetime.combine(since, dt.time.min))
        parts.append(add)
    if len(parts) == 1:
        return parts[0]
    order = {s: i for i, s in enumerate(SOURCE_LABELS)}
    return (
        pl.concat(parts, how="vertical")
        .with_columns(pl.col("source").replace_strict(order, default=len(order)).alias("_o"))
        .sort(["at", "_o"], descending=[True, False], maintain_order=True)
        .drop("_o")
    )


def usage_series(
    tables: Mapping[str, Frame],
    account_id: str,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    metrics: list[str] | None = None,
    smooth_days: int | None = None,
) -> pl.DataFrame:
    """One account's usage, one row per date x metric (date, metric, value), oldest first.

    With `smooth_days`, `value` is the mean over the trailing `smooth_days` days (calendar
    days, so gaps count as gaps, not as zeros), which makes a small account's weekday /
    weekend saw-tooth readable. The window reaches back before `since` so the first
    values are full averages."""
    df = _for_account(tables, "usage", account_id)
    if df is None or df.is_empty():
        return pl.DataFrame(schema={"date": pl.Date(), "metric": pl.String(), "value": pl.Float64()})
    if until is not None:
        df = df.filter(pl.col("date") <= until)
    if metrics is not None:
        df = df.filter(pl.col("metric").is_in(metrics))
    df = df.select("date", "metric", pl.col("value").cast(pl.Float64)).sort(["metric", "date"])
    if smooth_days:
        df = df.with_columns(
            pl.col("value").rolling_mean_by("date", window_size=f"{smooth_days}d").over("metric").alias("value")
        )
    if since is not None:
        df = df.filter(pl.col("date") >= since)
    return df
