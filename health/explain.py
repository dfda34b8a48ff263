"""Plain words for scores, generated from the signal definitions.

Every signal's `format` and `explain` template ("Active users {value} vs the prior 4
weeks") turn its raw value into a phrase, so lists and pages can say *why* without code
per signal. Formatting is done with Polars expressions, so a whole book is explained in
one pass; templates may only use {value} and {label} (checked when the model loads).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import polars as pl

from health.model import HealthModel, Signal

MINUS = "\u2212"


def format_value(value: pl.Expr, fmt: str) -> pl.Expr:
    """A raw value as text, by the signal's `format`."""
    if fmt == "percent":
        return (value * 100).round(0).cast(pl.Int64).cast(pl.String) + "%"
    if fmt == "signed_percent":
        pct = (value * 100).round(0).cast(pl.Int64)
        sign = pl.when(pct > 0).then(pl.lit("+")).when(pct < 0).then(pl.lit(MINUS)).otherwise(pl.lit(""))
        return sign + pct.abs().cast(pl.String) + "%"
    if fmt in ("integer", "days"):
        whole = value.round(0).cast(pl.Int64)
        text = whole.cast(pl.String)
        if fmt == "days":
            return text + pl.when(whole == 1).then(pl.lit(" day")).otherwise(pl.lit(" days"))
        return text
    if fmt == "currency":
        return "$" + value.round(0).cast(pl.Int64).cast(pl.String)
    return value.round(2).cast(pl.String)


def format_python(value: float | None, fmt: str) -> str:
    """The same formatting for one value (used for a single account's breakdown)."""
    if value is None:
        return "no data"
    return pl.select(format_value(pl.lit(float(value)), fmt)).item()


def _template(sig: Signal) -> str:
    return sig.explain or "{label}: {value}"


def phrase(name: str, sig: Signal) -> pl.Expr:
    """The signal's sentence for the row, e.g. 'Invoice 45 days overdue'."""
    parts: list[pl.Expr] = []
    for piece in re.split(r"(\{value\}|\{label\})", _template(sig)):
        if piece == "{value}":
            parts.append(format_value(pl.col(name), sig.format))
        elif piece == "{label}":
            parts.append(pl.lit(sig.label))
        elif piece:
            parts.append(pl.lit(piece.replace("{{", "{").replace("}}", "}")))
    return pl.when(pl.col(name).is_not_null()).then(pl.concat_str(parts))


def drivers(model: HealthModel, signals: Sequence[str] | None = None, n: int = 2, min_lost: float = 3.0) -> pl.Expr:
    """The `n` signals that cost the account most points, in words, joined by '; '."""
    names = [s for s in (signals or model.signals)]
    if not names:
        return pl.lit("", pl.String)
    items = [
        pl.struct(
            pl.col(f"{s}__lost").fill_null(0.0).alias("lost"),
            phrase(s, model.signals[s]).alias("text"),
        )
        for s in names
    ]
    ranked = (
        pl.concat_list(items)
        .list.sort(descending=True, nulls_last=True)
        .list.eval(
            pl.element()
            .filter((pl.element().struct.field("lost") >= min_lost) & pl.element().struct.field("text").is_not_null())
            .head(n)
            .struct.field("text")
        )
    )
    return ranked.list.join("; ")


def breakdown(row: dict[str, Any], model: HealthModel) -> pl.DataFrame:
    """One account's score, signal by signal: the table behind 'what drives the score'."""
    records = []
    for name, sig in model.signals.items():
        weight = row.get(f"{name}__weight") or 0.0
        raw = row.get(name)
        records.append(
            {
                "signal": name,
                "label": sig.label,
                "raw": raw,
                "value": format_python(raw, sig.format),
                "sub_score": row.get(f"{name}__score"),
                "weight": weight,
                "contribution": row.get(f"{name}__contribution") or 0.0,
                "points_lost": row.get(f"{name}__lost") or 0.0,
                "in_model": weight > 0,
            }
        )
    return pl.DataFrame(
        records,
        schema={
            "signal": pl.String,
            "label": pl.String,
            "raw": pl.Float64,
            "value": pl.String,
            "sub_score": pl.Float64,
            "weight": pl.Float64,
            "contribution": pl.Float64,
            "points_lost": pl.Float64,
            "in_model": pl.Boolean,
        },
    ).sort(["in_model", "points_lost"], descending=[True, True])
