"""Validation of loaded tables against the data contract (see `health.schema`).

`validate(raw, source, formats)` takes the tables a source read — typed (Parquet, the
sample generator) or all-strings (CSV) — and returns a `LoadResult`: the rows that pass,
cast to the canonical types; the rows that do not, as they were read, with `_line` and
`_reason`; and every problem found, all at once, each with the table, column, count, a
few example rows and what would fix it.

Everything is vectorised Polars: a typed table whose columns already have the canonical
dtypes costs a few passes (nulls, duplicate keys, account references), no casting.

Conventions that cannot be guessed safely (dd/mm vs mm/dd dates, decimal commas vs
thousands separators) are decided per column only when the values leave a single
reading; otherwise the column is reported as `ambiguous_format` with the setting that
fixes it (`date_formats:` / `decimal:` in config/sources.yaml), and the rows whose value
would read differently are rejected rather than guessed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from health.loading import LoadResult, Problem, Severity
from health.schema import ACCOUNT_KEY, TABLES, Column, TableSpec

__all__ = ["TableFormat", "validate", "did_you_mean", "NULL_TOKENS", "STRING_NULL_TOKENS"]

LINE = "_line"
REASON = "_reason"
CONFIG_FILE = "config/sources.yaml"

NULL_TOKENS: tuple[str, ...] = ("", "null", "na", "n/a", "#n/a", "-", "nan", "none")
"""Cell values (compared lower-cased, after stripping) that mean "no value" in a
number, date or true/false column."""
STRING_NULL_TOKENS: tuple[str, ...] = ("", "null", "n/a", "#n/a", "-")
"""The same for id columns and optional string columns. "NA" is not one of them: it is
a real value there (region "NA" = North America). Other required string columns only
treat the empty string as missing (a segment called "N/A" is kept as written)."""

NON_NEGATIVE: dict[str, tuple[str, ...]] = {
    "accounts": ("arr", "seats", "contract_months"),
    "invoices": ("amount",),
    "outcomes": ("arr_before", "arr_after"),
}
RANGES: dict[str, dict[str, tuple[float, float]]] = {"tickets": {"sentiment": (-1.0, 1.0)}}
ORDERED: dict[str, tuple[tuple[str, str], ...]] = {
    "tickets": (("opened_at", "closed_at"),),
}
"""(earlier, later) column pairs: a later value before the earlier one is a warning."""

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")

# Numbers: US "1,234.56" (comma thousands, dot decimal) vs EU "1.234,56".
_US_RE = r"^[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"
_EU_RE = r"^[+-]?(?:(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d*)?|,\d+)$"
_SPACE_GROUPED_RE = r"^[+-]?\d{1,3}(?:[ \u00a0\u202f']\d{3})+(?:[.,]\d+)?$"
_CURRENCY_RE = r"^([+-]?)\s*[$€£¥]\s*"
_CURRENCY_SUFFIX_RE = r"\s*[$€£¥]$"

# Dates: day-first / month-first with a 4-digit year, optional time part.
_DMY_RE = r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})(.*)$"
_MIN_YEAR, _MAX_YEAR = 1900, 2200


@dataclass(frozen=True)
class TableFormat:
    """How one table's values are written, when the values alone cannot tell.

    `date_formats` maps a column to a strftime pattern ("%d/%m/%Y"); `decimal` is the
    decimal mark for every number column ("," for "1.234,50"); `label` says where the
    rows came from ("customers.csv") and is used in messages.
    """

    date_formats: Mapping[str, str] = field(default_factory=dict)
    decimal: str | None = None
    label: str | None = None


# --------------------------------------------------------------------------- helpers


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate closest to `word` (case and punctuation-insensitive first), if any."""
    cands = [c for c in candidates if isinstance(c, str)]
    if not cands or not isinstance(word, str):
        return None

    def norm(s: str) -> str:
        return re.sub(r"[^0-9a-z]", "", s.lower())

    for c in cands:
        if c != word and norm(c) == norm(word) and norm(word):
            return c
    close = difflib.get_close_matches(word, cands, n=1, cutoff=0.6)
    if close and close[0] != word:
        return close[0]
    lowered = {c.lower(): c for c in cands}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    if close and lowered[close[0]] != word:
        return lowered[close[0]]
    return None


def _suggest(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    guess = did_you_mean(word, candidates)
    return f" Did you mean {guess!r}?" if guess else ""


def _fmt_value(v: Any) -> str:
    if v is None:
        return "(empty)"
    return repr(v) if isinstance(v, str) else str(v)


def _lines(examples: list[dict[str, Any]]) -> str:
    lines = [str(e.get(LINE)) for e in examples if e.get(LINE) is not None]
    if not lines:
        return ""
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(lines)


def _ex_values(examples: list[dict[str, Any]], column: str) -> str:
    parts = [f"line {e.get(LINE)}: {_fmt_value(e.get(column))}" for e in examples]
    return "; ".join(parts)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _is_string(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))


def _is_id(column: str, spec: TableSpec) -> bool:
    return column in spec.key or column == ACCOUNT_KEY or column.endswith("_id")


def _clean_str(expr: pl.Expr, tokens: tuple[str, ...]) -> pl.Expr:
    """Strip, then turn empty strings and the given null tokens into nulls."""
    s = expr.cast(pl.String).str.strip_chars()
    if tokens == ("",):
        return pl.when(s == "").then(None).otherwise(s)
    return pl.when(s.str.to_lowercase().is_in(tokens)).then(None).otherwise(s)


# --------------------------------------------------------------------------- checks


@dataclass
class _Check:
    """One thing that can be wrong with a row (or, for warnings, worth flagging)."""

    kind: str
    column: str | None
    mask: pl.Expr
    """True where the row has the problem."""
    reason: pl.Expr
    """The `_reason` text for a rejected row (a String expression)."""
    message: Callable[[int, list[dict[str, Any]]], str]
    """(count, examples) -> the full sentence."""
    severity: Severity = "error"
    reject: bool = True
    example_columns: tuple[str, ...] = ()


@dataclass
class _ColumnPlan:
    """What it takes to turn one raw column into its canonical form."""

    parsed: pl.Expr
    checks: list[_Check] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lookup: pl.DataFrame | None = None
    """For string columns: distinct cleaned value -> parsed value and status, joined back."""


class _TableCtx:
    def __init__(self, spec: TableSpec, where: str, fmt: TableFormat, columns: list[str]):
        self.spec = spec
        self.where = where
        self.fmt = fmt
        self.columns = columns

    def ex_cols(self, *extra: str) -> tuple[str, ...]:
        cols = [LINE]
        for c in (*self.spec.key, ACCOUNT_KEY, *extra):
            if c in self.columns and c not in cols:
                cols.append(c)
        return tuple(cols)


def _clean(col: str) -> str:
    return f"__s_{col}"


def _parsed(col: str) -> str:
    return f"__p_{col}"


def _reason_value(col: str) -> pl.Expr:
    """The raw value quoted for a `_reason` text."""
    return pl.concat_str([pl.lit("'"), pl.col(col).cast(pl.String), pl.lit("'")])


def _reason(col: str, text: str) -> pl.Expr:
    """`<col>: '<value>' <text>`."""
    return pl.concat_str([pl.lit(f"{col}: "), _reason_value(col), pl.lit(f" {text}")])


# ------------------------------------------------- string columns: parse distinct values
#
# A string column is parsed once per distinct value (a small frame `u` with the value in
# column K), then joined back: dates and amounts repeat a lot, so this stays fast on
# millions of CSV rows. The lookup gives, per value, the parsed value (V) and a status
# (ST): null when fine, otherwise a code that one of the column's checks reports.

K, V, ST = "__k", "__v", "__st"


def _status(col: str) -> str:
    return f"__st_{col}"


def _status_check(
    ctx: _TableCtx, name: str, code: str, kind: str, reason: str,
    message: Callable[[int, list[dict[str, Any]]], str],
) -> _Check:
    return _Check(
        kind, name, (pl.col(_status(name)) == code).fill_null(False), _reason(name, reason), message,
        example_columns=ctx.ex_cols(name),
    )


def _lookup_plan(name: str, u: pl.DataFrame, value: pl.Expr, status: pl.Expr, checks: list[_Check]) -> _ColumnPlan:
    lookup = u.select(
        pl.col(K).alias(_clean(name)), value.alias(_parsed(name)), status.cast(pl.String).alias(_status(name))
    )
    return _ColumnPlan(pl.col(_parsed(name)), checks, lookup=lookup)


def _number_candidates(s: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """(us_ok, us_value, eu_ok, eu_value) for a cleaned string expression."""
    c = s.str.replace(_CURRENCY_RE, "${1}").str.replace(_CURRENCY_SUFFIX_RE, "")
    c = pl.when(c.str.contains(_SPACE_GROUPED_RE)).then(c.str.replace_all(r"[ \u00a0\u202f']", "")).otherwise(c)
    us_ok = c.str.contains(_US_RE)
    eu_ok = c.str.contains(_EU_RE)
    us_val = c.str.replace_all(",", "", literal=True).cast(pl.Float64, strict=False)
    eu_val = (
        c.str.replace_all(".", "", literal=True)
        .str.replace(",", ".", literal=True)
        .cast(pl.Float64, strict=False)
    )
    return us_ok, us_val, eu_ok & eu_val.is_not_null(), eu_val


def _plan_number_from_string(ctx: _TableCtx, col: Column, u: pl.DataFrame) -> _ColumnPlan:
    name = col.name
    us_ok, us_val, eu_ok, eu_val = _number_candidates(pl.col(K))
    u = u.with_columns(
        us_ok.fill_null(False).alias("us_ok"), us_val.alias("us_v"),
        eu_ok.fill_null(False).alias("eu_ok"), eu_val.alias("eu_v"),
    )
    us_ok, us_val, eu_ok, eu_val = pl.col("us_ok"), pl.col("us_v"), pl.col("eu_ok"), pl.col("eu_v")
    disagree = us_ok & eu_ok & (us_val != eu_val)
    decimal = ctx.fmt.decimal
    checks: list[_Check] = []
    if decimal in (".", ","):
        convention: str | None = "us" if decimal == "." else "eu"
    else:
        st = u.select(us_ok.sum().alias("us"), eu_ok.sum().alias("eu"), disagree.sum().alias("dis")).row(0, named=True)
        n_us, n_eu, n_dis = (st[k] or 0 for k in ("us", "eu", "dis"))
        if n_dis == 0:
            convention = "us" if n_us >= n_eu else "eu"
        elif n_us != n_eu:
            convention = "us" if n_us > n_eu else "eu"
        else:
            convention = None  # some values read differently under both, nothing settles it

    if convention == "us":
        ok, value = us_ok, us_val
        hint = "numbers are read with '.' as the decimal mark (1,234.50)"
    elif convention == "eu":
        ok, value = eu_ok, eu_val
        hint = "numbers are read with ',' as the decimal mark (1.234,50)"
    else:
        ok = (us_ok & ~eu_ok) | (eu_ok & ~us_ok) | (us_ok & eu_ok & ~disagree)
        value = pl.when(us_ok).then(us_val).when(eu_ok).then(eu_val)
        hint = ""

        def amb_msg(count: int, ex: list[dict[str, Any]]) -> str:
            return (
                f"{ctx.where}, column '{name}': the number format is ambiguous — "
                f"{_plural(count, 'value')} read differently with ',' or '.' as the decimal mark "
                f"({_ex_values(ex, name)}), and no value settles which one the source uses. "
                f"These rows were rejected rather than guessed. Fix: set `decimal: \".\"` "
                f"(1,234.50) or `decimal: \",\"` (1.234,50) for table '{ctx.spec.name}' in "
                f"{CONFIG_FILE}."
            )

        checks.append(
            _status_check(ctx, name, "amb", "ambiguous_format",
                          "could be read with ',' or '.' as the decimal mark; set `decimal:`", amb_msg)
        )
    is_int = col.dtype == pl.Int64
    finite = value.is_finite().fill_null(False)
    whole = (value == value.floor()) & (value.abs() <= 2**53)
    status = (
        pl.when(disagree if convention is None else pl.lit(False)).then(pl.lit("amb"))
        .when(~ok | ~finite).then(pl.lit("bad"))
        .when(pl.lit(is_int) & ~whole).then(pl.lit("frac"))
    )
    value = pl.when(status.is_null()).then(value)

    def bad_msg(count: int, ex: list[dict[str, Any]]) -> str:
        what = ("a whole number" if is_int else "a number") if count == 1 else (
            "whole numbers" if is_int else "numbers")
        fix = "Fix the values in the source"
        if hint:
            fix += f"; {hint} — if that is wrong, set `decimal:` for table '{ctx.spec.name}' in {CONFIG_FILE}"
        return (
            f"{ctx.where}, column '{name}': {_plural(count, 'value')} "
            f"{'is' if count == 1 else 'are'} not {what} ({_ex_values(ex, name)}); these rows were "
            f"rejected. {fix}."
        )

    checks.append(_status_check(ctx, name, "bad", "bad_type", "is not a number", bad_msg))
    if is_int:
        checks.append(_status_check(ctx, name, "frac", "bad_type", "is not a whole number", _whole_msg(ctx, name)))
    return _lookup_plan(name, u, value.cast(col.dtype), status, checks)


def _whole_msg(ctx: _TableCtx, name: str) -> Callable[[int, list[dict[str, Any]]], str]:
    def msg(count: int, ex: list[dict[str, Any]]) -> str:
        return (
            f"{ctx.where}, column '{name}': {_plural(count, 'value')} "
            f"{'is not a whole number' if count == 1 else 'are not whole numbers'} "
            f"({_ex_values(ex, name)}); these rows were rejected. Fix the values in the source."
        )

    return msg


# ------------------------------------------------------------------- date parsing


def _iso_datetime(s: pl.Expr) -> pl.Expr:
    """ISO date / datetime strings -> naive Datetime("us") (offsets converted to UTC)."""
    t = s.str.replace(r"^(\d{4}-\d{1,2}-\d{1,2})[T ]\s*", "${1} ").str.replace(r"[zZ]$", "+00:00")
    kw: dict[str, Any] = {"strict": False, "time_unit": "us"}
    return pl.coalesce(
        t.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
        t.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", **kw),
        t.str.to_datetime("%Y-%m-%d %H:%M", **kw),
        t.str.to_datetime("%Y-%m-%d %H:%M:%S%.f%#z", **kw)
        .dt.convert_time_zone("UTC")
        .dt.replace_time_zone(None),
        t.str.to_datetime("%Y-%m-%d %H:%M%#z", **kw).dt.convert_time_zone("UTC").dt.replace_time_zone(None),
        t.str.to_date("%Y/%m/%d", strict=False).cast(pl.Datetime("us")),
    )


def _dmy_mdy(s: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(day-first reading, month-first reading) of d/m/yyyy-shaped values, else null."""
    shaped = s.str.contains(_DMY_RE)
    a = s.str.replace(_DMY_RE, "${1}")
    b = s.str.replace(_DMY_RE, "${2}")
    y = s.str.replace(_DMY_RE, "${3}")
    rest = s.str.replace(_DMY_RE, "${4}")
    dmy = pl.when(shaped).then(_iso_datetime(pl.concat_str([y, pl.lit("-"), b, pl.lit("-"), a, rest])))
    mdy = pl.when(shaped).then(_iso_datetime(pl.concat_str([y, pl.lit("-"), a, pl.lit("-"), b, rest])))
    return dmy, mdy


def _with_format(s: pl.Expr, fmt: str) -> pl.Expr:
    kw: dict[str, Any] = {"strict": False}
    has_time = any(d in fmt for d in ("%H", "%I", "%M", "%S", "%T", "%R", "%c", "%s"))
    if "%z" in fmt or "%:z" in fmt or "%#z" in fmt:
        return (
            s.str.to_datetime(fmt, time_unit="us", **kw).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        )
    if has_time:
        return s.str.to_datetime(fmt, time_unit="us", **kw)
    return s.str.to_date(fmt, **kw).cast(pl.Datetime("us"))


def _plan_date_from_string(ctx: _TableCtx, col: Column, u: pl.DataFrame) -> _ColumnPlan:
    name = col.name
    k = pl.col(K)
    fmt = ctx.fmt.date_formats.get(name)
    checks: list[_Check] = []
    kind_label = "dates" if col.dtype == pl.Date else "dates/times"
    amb = pl.lit(False)
    if fmt:
        u = u.with_columns(_with_format(k, fmt).alias("v"))
        hint = f"the column is read with the format {fmt!r} set in {CONFIG_FILE}; fix the values or the format"
    else:
        u = u.with_columns(_iso_datetime(k).alias("iso"))
        hint = (
            "dates are read as ISO (2025-03-04, 2025-03-04 10:22:00) or as day/month/year or "
            "month/day/year when the values leave one reading; to use another format set "
            f"`date_formats: {{{name}: \"%d/%m/%Y\"}}` for table '{ctx.spec.name}' in {CONFIG_FILE}"
        )
        rest = u.filter(pl.col("iso").is_null())
        if rest.height == 0:
            u = u.with_columns(pl.col("iso").alias("v"))
        else:
            dmy, mdy = _dmy_mdy(k)
            u = u.with_columns(
                pl.when(pl.col("iso").is_null()).then(dmy).alias("dmy"),
                pl.when(pl.col("iso").is_null()).then(mdy).alias("mdy"),
            )
            d, m = pl.col("dmy"), pl.col("mdy")
            disagree = d.is_not_null() & m.is_not_null() & (d != m)
            st = u.select(
                d.is_not_null().sum().alias("d"), m.is_not_null().sum().alias("m"), disagree.sum().alias("dis")
            ).row(0, named=True)
            n_dmy, n_mdy, n_dis = st["d"] or 0, st["m"] or 0, st["dis"] or 0
            if n_dmy == 0 and n_mdy == 0:
                u = u.with_columns(pl.col("iso").alias("v"))
            elif n_dis == 0 or n_dmy != n_mdy:
                reading = "day/month/year" if n_dmy >= n_mdy else "month/day/year"
                u = u.with_columns(pl.coalesce("iso", d if n_dmy >= n_mdy else m).alias("v"))
                hint = (
                    f"the column was read as {reading} (the only reading that fits its values); "
                    f"to force a format set `date_formats: {{{name}: \"%d/%m/%Y\"}}` for table "
                    f"'{ctx.spec.name}' in {CONFIG_FILE}"
                )
            else:
                u = u.with_columns(pl.coalesce("iso", d, m).alias("v"))
                amb = disagree

                def amb_msg(count: int, ex: list[dict[str, Any]]) -> str:
                    return (
                        f"{ctx.where}, column '{name}': the date format is ambiguous — the values "
                        f"read both as day/month/year and as month/day/year, and "
                        f"{_plural(count, 'value')} would give different dates "
                        f"({_ex_values(ex, name)}). These rows were rejected rather than guessed. "
                        f"Fix: set `date_formats: {{{name}: \"%d/%m/%Y\"}}` (or \"%m/%d/%Y\") for "
                        f"table '{ctx.spec.name}' in {CONFIG_FILE}."
                    )

                checks.append(
                    _status_check(ctx, name, "amb", "ambiguous_format",
                                  "could be day/month or month/day; set `date_formats:`", amb_msg)
                )
    v = pl.col("v")
    year = v.dt.year()
    sane = v.is_not_null() & (year >= _MIN_YEAR) & (year <= _MAX_YEAR)
    status = pl.when(amb).then(pl.lit("amb")).when(~sane).then(pl.lit("bad"))
    value = pl.when(status.is_null()).then(v)
    if col.dtype == pl.Date:
        value = value.dt.date()

    def msg(count: int, ex: list[dict[str, Any]]) -> str:
        return (
            f"{ctx.where}, column '{name}': {_plural(count, 'value')} could not be read as "
            f"{kind_label} ({_ex_values(ex, name)}); these rows were rejected. Note: {hint}."
        )

    checks.append(_status_check(ctx, name, "bad", "bad_date", "is not a valid date", msg))
    return _lookup_plan(name, u, value.cast(col.dtype), status, checks)


# ----------------------------------------------------------------- typed columns


def _plan_typed(ctx: _TableCtx, col: Column, dtype: pl.DataType) -> _ColumnPlan:
    """A raw column that is not a string: cast when needed; what cannot be cast is bad."""
    name, target = col.name, col.dtype
    src = pl.col(name)
    if dtype == target:
        return _ColumnPlan(src)
    if dtype == pl.Null:
        return _ColumnPlan(src.cast(target))
    if target == pl.Int64 and dtype.is_float():
        f = src.cast(pl.Float64)
        frac = f.is_not_null() & ~((f == f.floor()) & (f.abs() <= 2**53)).fill_null(False)
        check = _Check("bad_type", name, frac, _reason(name, "is not a whole number"), _whole_msg(ctx, name),
                       example_columns=ctx.ex_cols(name))
        return _ColumnPlan(pl.when(~frac).then(f).cast(pl.Int64), [check])
    if target == pl.Datetime("us") and isinstance(dtype, pl.Datetime) and dtype.time_zone:
        value = src.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(target)
    elif target == pl.Date and isinstance(dtype, pl.Datetime):
        value = src.dt.date()
    elif target == pl.Boolean and dtype.is_integer():
        value = pl.when(src == 1).then(True).when(src == 0).then(False)
    elif target in (pl.Float64, pl.Int64) and not (dtype.is_numeric() or dtype == pl.Boolean):
        value = pl.lit(None, dtype=target)
    elif target in (pl.Date, pl.Datetime("us")) and not dtype.is_temporal():
        value = pl.lit(None, dtype=target)
    else:
        value = src.cast(target, strict=False)
    if target == pl.String:
        return _ColumnPlan(value)
    bad = src.is_not_null() & value.is_null()

    def msg(count: int, ex: list[dict[str, Any]]) -> str:
        return (
            f"{ctx.where}, column '{name}': {_plural(count, 'value')} of type {dtype} cannot be "
            f"converted to {target} ({_ex_values(ex, name)}); these rows were rejected. "
            f"Fix the column's type in the source."
        )

    checks = [
        _Check("bad_type", name, bad, _reason(name, f"cannot be converted to {target}"), msg,
               example_columns=ctx.ex_cols(name))
    ]
    return _ColumnPlan(pl.when(~bad).then(value), checks)


def _plan_bool_from_string(ctx: _TableCtx, col: Column) -> _ColumnPlan:
    name, s = col.name, pl.col(_clean(col.name))
    low = s.str.to_lowercase()
    value = pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False)
    bad = s.is_not_null() & ~low.is_in((*_TRUE, *_FALSE))

    def msg(count: int, ex: list[dict[str, Any]]) -> str:
        return (
            f"{ctx.where}, column '{name}': {_plural(count, 'value')} "
            f"{'is' if count == 1 else 'are'} not true/false ({_ex_values(ex, name)}); these rows "
            f"were rejected. Use true/false, yes/no, y/n, t/f or 1/0."
        )

    checks = [_Check("bad_type", name, bad, _reason(name, "is not true/false"), msg, example_columns=ctx.ex_cols(name))]
    return _ColumnPlan(value.cast(pl.Boolean), checks)


# ------------------------------------------------------------------ the table pass


def _missing_columns(
    spec: TableSpec, columns: list[str], where: str, n_rows: int
) -> list[Problem]:
    found = [c for c in columns if c != LINE]
    problems = []
    for name in spec.required_columns:
        if name in columns:
            continue
        guess = did_you_mean(name, found)
        hint = (
            f" Did you mean {guess!r}? Map it with `columns: {{{guess!r}: {name}}}` for table "
            f"'{spec.name}' in {CONFIG_FILE}."
            if guess
            else f" Add the column, or map the source's column onto it with `columns:` for table "
            f"'{spec.name}' in {CONFIG_FILE}."
        )
        problems.append(
            Problem(
                table=spec.name,
                column=name,
                kind="missing_column",
                message=(
                    f"{where} has no required column '{name}' (columns found: "
                    f"{', '.join(found) or 'none'}), so the table was not loaded.{hint}"
                ),
                count=n_rows,
            )
        )
    return problems


def _validate_table(
    spec: TableSpec,
    df: pl.DataFrame,
    fmt: TableFormat,
    account_ids: tuple[pl.Series, pl.Series] | None,
) -> tuple[pl.DataFrame | None, pl.DataFrame | None, list[Problem]]:
    where = f"table '{spec.name}'" + (f" ({fmt.label})" if fmt.label else "")
    if LINE not in df.columns:
        df = df.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINE))
    elif df.schema[LINE] != pl.Int64:
        df = df.with_columns(pl.col(LINE).cast(pl.Int64, strict=False))
    raw_columns = [c for c in df.columns if c != LINE]
    problems = _missing_columns(spec, df.columns, where, df.height)
    if problems:
        return None, None, problems

    ctx = _TableCtx(spec, where, fmt, df.columns)
    present = [c for c in spec.columns if c.name in df.columns]
    schema = df.schema

    for col_name in fmt.date_formats:
        c = spec.column(col_name)
        if c is None or c.dtype not in (pl.Date, pl.Datetime("us")):
            dates = [x.name for x in spec.columns if x.dtype in (pl.Date, pl.Datetime("us"))]
            problems.append(
                Problem(
                    spec.name, col_name, "bad_config",
                    f"{where}: `date_formats` names '{col_name}', which is not a date column of "
                    f"'{spec.name}' (date columns: {', '.join(dates) or 'none'}); the format was "
                    f"ignored.{_suggest(col_name, dates)} Fix `date_formats:` in {CONFIG_FILE}.",
                    severity="warning",
                )
            )

    # 1. cleaned strings for string-typed raw columns
    #    (worked out per distinct value: a clean typed column costs one `unique`)
    same_exprs = []
    for c in present:
        if not _is_string(schema[c.name]):
            continue
        if c.dtype != pl.String:
            tokens = NULL_TOKENS
        elif c.required and not _is_id(c.name, spec):
            tokens = ("",)
        else:
            tokens = STRING_NULL_TOKENS
        raw_str = pl.col(c.name).cast(pl.String)
        u = df.select(raw_str.unique().alias(K)).with_columns(_clean_str(pl.col(K), tokens).alias(V))
        if u.filter(pl.col(K).ne_missing(pl.col(V))).height == 0:
            same_exprs.append(raw_str.alias(_clean(c.name)))
        else:
            lookup = u.filter(pl.col(K).is_not_null()).rename({K: _clean(c.name) + "__key", V: _clean(c.name)})
            df = df.with_columns(raw_str.alias(_clean(c.name) + "__key")).join(
                lookup, on=_clean(c.name) + "__key", how="left", maintain_order="left"
            ).drop(_clean(c.name) + "__key")
    if same_exprs:
        df = df.with_columns(same_exprs)

    # 2. parse plans (string columns: per distinct value, joined back)
    plans: dict[str, _ColumnPlan] = {}
    for c in present:
        dtype = schema[c.name]
        if not _is_string(dtype):
            plans[c.name] = _plan_typed(ctx, c, dtype)
        elif c.dtype == pl.String:
            s = pl.col(_clean(c.name))
            if c.name in spec.allowed_values:
                s = s.str.to_lowercase()
            plans[c.name] = _ColumnPlan(s)
        elif c.dtype == pl.Boolean:
            plans[c.name] = _plan_bool_from_string(ctx, c)
        else:
            u = df.select(pl.col(_clean(c.name)).drop_nulls().unique().alias(K))
            if c.dtype in (pl.Float64, pl.Int64):
                plans[c.name] = _plan_number_from_string(ctx, c, u)
            elif c.dtype in (pl.Date, pl.Datetime("us")):
                plans[c.name] = _plan_date_from_string(ctx, c, u)
            else:  # pragma: no cover - no other canonical dtypes today
                plans[c.name] = _plan_typed(ctx, c, dtype)
    for name, p in plans.items():
        if p.lookup is not None:
            df = df.join(p.lookup, on=_clean(name), how="left", maintain_order="left")
    df = df.with_columns([p.parsed.alias(_parsed(name)) for name, p in plans.items() if p.lookup is None])
    checks: list[_Check] = [ch for p in plans.values() for ch in p.checks]
    for p in plans.values():
        problems.extend(p.problems)

    # 4. required values present
    for c in present:
        if not c.required:
            continue
        src = pl.col(_clean(c.name)) if _is_string(schema[c.name]) else pl.col(c.name)
        kind = "null_id" if _is_id(c.name, spec) else "null_value"

        def null_msg(count: int, ex: list[dict[str, Any]], name=c.name, kind=kind) -> str:
            what = "an id" if kind == "null_id" else "a value"
            return (
                f"{where}, column '{name}': {_plural(count, 'row')} {'has' if count == 1 else 'have'} "
                f"no {name} ({_ex_values(ex, name)}), but every row needs {what} there; these rows were "
                f"rejected. Fill in '{name}' in the source."
            )

        raw_text = pl.col(c.name).cast(pl.String).str.strip_chars()
        null_reason = (
            pl.when(raw_text.is_null() | (raw_text == ""))
            .then(pl.lit(f"{c.name}: missing"))
            .otherwise(_reason(c.name, "means no value, but it is required"))
        )
        checks.append(
            _Check(kind, c.name, src.is_null(), null_reason, null_msg, example_columns=ctx.ex_cols(c.name))
        )

    # 5. light value checks
    for name in NON_NEGATIVE.get(spec.name, ()):
        if name not in plans:
            continue
        v = pl.col(_parsed(name))

        def neg_msg(count: int, ex: list[dict[str, Any]], name=name) -> str:
            return (
                f"{where}, column '{name}': {_plural(count, 'value')} "
                f"{'is' if count == 1 else 'are'} negative ({_ex_values(ex, name)}); these rows "
                f"were rejected. Fix the values in the source."
            )

        checks.append(
            _Check("bad_value", name, (v < 0).fill_null(False), _reason(name, "is negative"), neg_msg,
                   example_columns=ctx.ex_cols(name))
        )
    for name, (lo, hi) in RANGES.get(spec.name, {}).items():
        if name not in plans:
            continue
        v = pl.col(_parsed(name))

        def range_msg(count: int, ex: list[dict[str, Any]], name=name, lo=lo, hi=hi) -> str:
            return (
                f"{where}, column '{name}': {_plural(count, 'value')} "
                f"{'is' if count == 1 else 'are'} outside {lo:g}..{hi:g} ({_ex_values(ex, name)}); "
                f"these rows were rejected. Fix the values, or rescale the column to {lo:g}..{hi:g}."
            )

        checks.append(
            _Check("bad_value", name, ((v < lo) | (v > hi)).fill_null(False),
                   _reason(name, f"is outside {lo:g}..{hi:g}"), range_msg, example_columns=ctx.ex_cols(name))
        )
    for name, allowed in spec.allowed_values.items():
        if name not in plans:
            continue
        v = pl.col(_parsed(name))

        def allowed_msg(count: int, ex: list[dict[str, Any]], name=name, allowed=allowed) -> str:
            hints = []
            for e in ex:
                raw_value = e.get(name)
                guess = did_you_mean(str(raw_value).strip().lower(), allowed) if raw_value is not None else None
                if guess:
                    hints.append(f"{raw_value!r} -> {guess!r}?")
            dym = f" Did you mean: {', '.join(hints)}" if hints else ""
            return (
                f"{where}, column '{name}': {_plural(count, 'value')} "
                f"{'is' if count == 1 else 'are'} not one of {', '.join(allowed)} "
                f"({_ex_values(ex, name)}); these rows were rejected.{dym} Fix the values in the "
                f"source (case does not matter)."
            )

        checks.append(
            _Check("bad_value", name, (v.is_not_null() & ~v.is_in(allowed)),
                   _reason(name, f"is not one of {'/'.join(allowed)}"), allowed_msg,
                   example_columns=ctx.ex_cols(name))
        )
    for early, late in ORDERED.get(spec.name, ()):
        if early not in plans or late not in plans:
            continue
        mask = (pl.col(_parsed(late)) < pl.col(_parsed(early))).fill_null(False)

        def order_msg(count: int, ex: list[dict[str, Any]], early=early, late=late) -> str:
            shown = "; ".join(f"line {e.get(LINE)}: {late} {_fmt_value(e.get(late))} < {early} {_fmt_value(e.get(early))}" for e in ex)
            return (
                f"{where}: {_plural(count, 'row')} {'has' if count == 1 else 'have'} {late} before "
                f"{early} ({shown}); the rows were kept. Check the source's timestamps."
            )

        checks.append(
            _Check("bad_order", late, mask, pl.lit(""), order_msg, severity="warning", reject=False,
                   example_columns=ctx.ex_cols(early, late))
        )

    # 6. account references
    if spec.references_accounts and ACCOUNT_KEY in plans and account_ids is not None:
        valid_ids, all_ids = account_ids
        a = pl.col(_parsed(ACCOUNT_KEY))
        unknown = a.is_not_null() & ~a.is_in(all_ids.implode()).fill_null(False)
        dropped = a.is_not_null() & a.is_in(all_ids.implode()).fill_null(False) & ~a.is_in(valid_ids.implode()).fill_null(False)

        def unknown_msg(count: int, ex: list[dict[str, Any]]) -> str:
            ids = sorted({str(e.get(ACCOUNT_KEY)) for e in ex})
            return (
                f"{where}, column 'account_id': {_plural(count, 'row')} {'names' if count == 1 else 'name'} an account that is not in "
                f"'accounts' (e.g. {', '.join(repr(i) for i in ids)}; {_lines(ex)}); these rows were "
                f"rejected. Add the accounts to the accounts table, or fix the ids (check the column "
                f"mapping and leading zeros/case)."
            )

        def dropped_msg(count: int, ex: list[dict[str, Any]]) -> str:
            ids = sorted({str(e.get(ACCOUNT_KEY)) for e in ex})
            return (
                f"{where}, column 'account_id': {_plural(count, 'row')} {'belongs' if count == 1 else 'belong'} to accounts whose own "
                f"row in 'accounts' was rejected (e.g. {', '.join(repr(i) for i in ids)}; {_lines(ex)}); "
                f"these rows were rejected too. Fix the accounts problems above and they will load."
            )

        checks.append(
            _Check("unknown_account", ACCOUNT_KEY, unknown, _reason(ACCOUNT_KEY, "is not in accounts"),
                   unknown_msg, example_columns=ctx.ex_cols())
        )
        checks.append(
            _Check("rejected_account", ACCOUNT_KEY, dropped,
                   _reason(ACCOUNT_KEY, "is an account whose accounts row was rejected"),
                   dropped_msg, example_columns=ctx.ex_cols())
        )

    # 7. evaluate the masks; duplicates among the rows that are otherwise fine
    mask_names = [f"__m{i}" for i in range(len(checks))]
    reject_names = [m for m, ch in zip(mask_names, checks) if ch.reject]
    df = df.with_columns([ch.mask.fill_null(False).alias(m) for m, ch in zip(mask_names, checks)])
    pre_bad = pl.any_horizontal(*[pl.col(m) for m in reject_names]) if reject_names else pl.lit(False)
    df = df.with_columns(pre_bad.alias("__bad_pre"))
    if spec.key and all(k in plans for k in spec.key) and _may_have_duplicates(df, spec.key):
        key_cols = [pl.col(_parsed(k)) for k in spec.key]
        dup = ~pl.col("__bad_pre") & ~pl.struct(pl.col("__bad_pre"), *key_cols).is_first_distinct()
        key_desc = " + ".join(spec.key)

        def dup_msg(count: int, ex: list[dict[str, Any]]) -> str:
            return (
                f"{where}: {_plural(count, 'row')} {'repeats' if count == 1 else 'repeat'} a "
                f"{key_desc} already seen "
                f"({_dup_examples(ex, spec.key)}); the first occurrence was kept and the later ones "
                f"rejected. Remove the duplicates or fix the ids in the source."
            )

        dup_check = _Check(
            "duplicate_id", spec.key[0] if len(spec.key) == 1 else None, dup,
            pl.concat_str([pl.lit(f"duplicate {key_desc}: ")] + [_reason_value(k) for k in spec.key], separator=""),
            dup_msg, example_columns=ctx.ex_cols(),
        )
        checks.append(dup_check)
        mask_names.append(f"__m{len(checks) - 1}")
        reject_names.append(mask_names[-1])
        df = df.with_columns(dup.alias(mask_names[-1]))
    bad = pl.any_horizontal(*[pl.col(m) for m in reject_names]) if reject_names else pl.lit(False)
    df = df.with_columns(bad.alias("__bad"))

    # 8. counts, examples and messages
    counts = df.select([pl.col(m).sum().alias(m) for m in mask_names]).row(0, named=True) if mask_names else {}
    for m, ch in zip(mask_names, checks):
        n = int(counts.get(m) or 0)
        if n == 0:
            continue
        cols = [c for c in (ch.example_columns or (LINE,)) if c in df.columns]
        examples = df.filter(pl.col(m)).head(3).select(cols).to_dicts()
        if ch.kind == "duplicate_id":
            examples = _first_lines(df, spec.key, examples)
        problems.append(
            Problem(
                table=spec.name,
                column=ch.column,
                kind=ch.kind,
                message=ch.message(n, examples),
                count=n,
                severity=ch.severity,
                examples=examples,
            )
        )

    # 9. outputs
    canonical = [c.name for c in present]
    extras = [c for c in raw_columns if c not in canonical]
    valid = df.filter(~pl.col("__bad")).select(
        [pl.col(_parsed(c)).alias(c) for c in canonical] + [pl.col(c) for c in extras]
    )
    bad_rows = df.filter(pl.col("__bad"))
    if bad_rows.height:
        reasons = [
            pl.when(pl.col(m)).then(ch.reason)
            for m, ch in zip(mask_names, checks)
            if ch.reject
        ]
        rejected = bad_rows.select(
            [pl.col(c) for c in raw_columns]
            + [pl.col(LINE), pl.concat_str(reasons, separator="; ", ignore_nulls=True).alias(REASON)]
        )
    else:
        rejected = df.head(0).select([pl.col(c) for c in raw_columns] + [pl.col(LINE)]).with_columns(
            pl.lit(None, dtype=pl.String).alias(REASON)
        )
    return valid, rejected, problems


def _may_have_duplicates(df: pl.DataFrame, key: tuple[str, ...]) -> bool:
    """False when no two rows share a key: no two rows even share the key's hash."""
    cols = [pl.col(_parsed(k)) for k in key]
    h = pl.struct(*cols).hash() if len(cols) > 1 else cols[0].hash()
    return bool(df.select(h.is_duplicated().any()).item())


def _dup_examples(ex: list[dict[str, Any]], key: tuple[str, ...]) -> str:
    parts = []
    for e in ex:
        k = ", ".join(f"{c} {_fmt_value(e.get(c))}" for c in key)
        first = e.get("_first_line")
        parts.append(f"{k} on line {e.get(LINE)}" + (f" (first on line {first})" if first is not None else ""))
    return "; ".join(parts)


def _first_lines(df: pl.DataFrame, key: tuple[str, ...], examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add, to each duplicate example, the line of the row that was kept."""
    out = []
    kept = df.filter(~pl.col("__bad"))
    for e in examples:
        cond = pl.lit(True)
        for k in key:
            v = e.get(k)
            cond = cond & (pl.col(k).cast(pl.String).str.strip_chars() == (str(v).strip() if v is not None else None))
        hit = kept.filter(cond).head(1)
        e = dict(e)
        if hit.height:
            e["_first_line"] = hit[LINE][0]
        out.append(e)
    return out


# ------------------------------------------------------------------------ entry


def validate(
    raw: dict[str, pl.DataFrame],
    source: str,
    formats: dict[str, TableFormat] | None = None,
) -> LoadResult:
    """Check `raw` tables against the contract; keep the good rows, report every problem.

    `raw` maps canonical table names to frames as read (typed or all-strings), each
    optionally with an Int64 `_line` column (the file line of the row; otherwise 1-based
    row numbers are used). `formats` gives, per table, date formats / decimal mark / a
    label for messages. Unknown table names are reported as warnings and ignored.

    Order of judgement, per row: value checks first (types, dates, required values,
    ranges, vocabularies, account references); duplicate keys are then looked for among
    the rows that passed, so a broken first copy of an id does not cost the good second
    one. Account references are checked against the accounts rows that were *kept*, so
    the tables returned are consistent with each other (`rejected_account` says when a
    row fell only because its account's own row was rejected).
    """
    formats = formats or {}
    problems: list[Problem] = []
    tables: dict[str, pl.DataFrame] = {}
    rejected: dict[str, pl.DataFrame] = {}

    for name in raw:
        if name not in TABLES:
            problems.append(
                Problem(
                    name, None, "unknown_table",
                    f"Table '{name}' is not one of the canonical tables ({', '.join(TABLES)}) and "
                    f"was ignored.{_suggest(name, list(TABLES))} Rename it or map it to a canonical "
                    f"table in {CONFIG_FILE}.",
                    count=raw[name].height, severity="warning",
                )
            )

    account_ids: tuple[pl.Series, pl.Series] | None = None
    accounts_note: str | None = None
    for spec in TABLES.values():
        if spec.name not in raw:
            if spec.required:
                problems.append(
                    Problem(
                        spec.name, None, "missing_table",
                        f"Source '{source}' has no '{spec.name}' table, which every source needs "
                        f"(one row per account: {', '.join(spec.required_columns)}). Without it no "
                        f"other table can be checked for account references. Add it, or point "
                        f"`tables: {{{spec.name}: {{file: ...}}}}` at it in {CONFIG_FILE}.",
                    )
                )
                accounts_note = "the accounts table is missing"
            continue
        fmt = formats.get(spec.name) or TableFormat()
        df = raw[spec.name]
        if isinstance(df, pl.LazyFrame):
            df = df.collect()
        valid, rej, probs = _validate_table(
            spec, df, fmt, account_ids if spec.references_accounts else None
        )
        problems.extend(probs)
        if valid is not None:
            tables[spec.name] = valid
            if rej is not None and rej.height:
                rejected[spec.name] = rej
        if spec.name == "accounts":
            if valid is None:
                accounts_note = "the accounts table could not be loaded"
            else:
                ids_raw = df[ACCOUNT_KEY]
                all_ids = (
                    ids_raw.cast(pl.String).str.strip_chars()
                    if _is_string(ids_raw.dtype)
                    else ids_raw.cast(pl.String)
                ).drop_nulls()
                account_ids = (valid[ACCOUNT_KEY], all_ids)

    if accounts_note is not None:
        unchecked = [s.name for s in TABLES.values() if s.references_accounts and s.name in raw]
        if unchecked:
            problems.append(
                Problem(
                    "accounts", ACCOUNT_KEY, "references_unchecked",
                    f"Because {accounts_note}, the account_id of {', '.join(unchecked)} could not "
                    f"be checked against accounts; those rows were loaded unchecked. Fix the "
                    f"accounts table first.",
                    severity="warning",
                )
            )
    return LoadResult(source=source, tables=tables, rejected=rejected, problems=problems)
