"""`python -m health sources check`: load a source, validate it, report per table.

The report is plain text: for each canonical table, the rows kept and rejected, the date
range of its time column and how fresh the latest record is, then every problem with its
message and example rows; the last line is "OK" or "N errors, M warnings".
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from health.loading import LoadResult, Problem
from health.schema import TABLES
from sources.config import build_active_source

INDENT = "    "


def _n(x: int) -> str:
    return f"{x:,}"


def _as_date(v: Any) -> dt.date | None:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return None


def _time_span(df: pl.DataFrame, column: str | None, today: dt.date) -> str:
    if column is None:
        return "no time column (a snapshot of today)"
    if column not in df.columns:
        return f"time column {column!r} missing"
    lo, hi = df.select(pl.col(column).min().alias("lo"), pl.col(column).max().alias("hi")).row(0)
    if hi is None:
        return f"{column}: no dates"
    latest = _as_date(hi)
    age = (today - latest).days if latest else None
    if age is None:
        fresh = ""
    elif age > 0:
        fresh = f" ({age} day{'s' if age != 1 else ''} before today)"
    elif age == 0:
        fresh = " (today)"
    else:
        fresh = f" ({-age} day{'s' if age != -1 else ''} after today)"
    return f"{column} {lo} .. {hi}; latest {hi}{fresh}"


def _example_line(ex: dict[str, Any]) -> str:
    line = ex.get("_line")
    rest = ", ".join(f"{k}={v!r}" for k, v in ex.items() if k not in ("_line", "_first_line"))
    return f"line {line}: {rest}" if line is not None else rest


def _problem_lines(p: Problem) -> list[str]:
    out = [f"{INDENT}[{p.severity}] {p.kind}: {p.message}"]
    for ex in p.examples:
        out.append(f"{INDENT}{INDENT}{_example_line(ex)}")
    return out


def format_report(source_line: str, result: LoadResult, today: dt.date | None = None) -> str:
    """The per-table report for a validated load."""
    today = today or dt.date.today()
    lines = [source_line, f"checked {result.loaded_at:%Y-%m-%d %H:%M} UTC", ""]
    by_table: dict[str, list[Problem]] = {}
    for p in result.problems:
        by_table.setdefault(p.table if p.table in TABLES else "", []).append(p)
    for name, spec in TABLES.items():
        probs = by_table.get(name, [])
        if name in result.tables:
            kept = result.tables[name].height
            rej = result.rejected.get(name)
            n_rej = rej.height if rej is not None else 0
            lines.append(f"{name}: {_n(kept)} row{'s' if kept != 1 else ''} kept, {_n(n_rej)} rejected")
            lines.append(f"{INDENT}{_time_span(result.tables[name], spec.time_column, today)}")
        elif probs:
            lines.append(f"{name}: not loaded")
        else:
            lines.append(f"{name}: not provided" + (" (required)" if spec.required else " (optional)"))
        for p in probs:
            lines.extend(_problem_lines(p))
    other = by_table.get("", [])
    if other:
        lines.append("other:")
        for p in other:
            lines.extend(_problem_lines(p))
    n_err = sum(p.severity == "error" for p in result.problems)
    n_warn = sum(p.severity == "warning" for p in result.problems)
    lines.append("")
    if n_err == 0 and n_warn == 0:
        lines.append("OK")
    else:
        lines.append(
            f"{n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''}"
        )
    return "\n".join(lines)


def run_check(
    config_path: Path, source_name: str | None = None, *, today: dt.date | None = None
) -> tuple[str, int]:
    """Load the active (or named) source and report on it: (report, exit code).

    Exit code 1 when there are errors, 0 otherwise. A SourceConfigError propagates (the
    CLI prints it as one paragraph, exit 2).
    """
    source = build_active_source(Path(config_path), source_name)
    result = source.load()
    report = format_report(f"source {source.name!r}: {source.describe()}", result, today)
    return report, (1 if result.errors else 0)
