"""Reading messy export files into frames the contract can validate.

CSV files are read with every column as a string, so that `health.contract.validate`
owns the typing (and can report a bad value with its line instead of failing the read).
What this module handles: a UTF-8 byte-order mark, CRLF line ends, the delimiter
(`,` `;` tab or `|`, sniffed from the header line unless given), quoted fields (also
with line breaks inside), Windows-1252 / latin-1 files (with a warning), blank lines,
and a `_line` column with each row's line number in the file (header = line 1).
"""

from __future__ import annotations

import csv
import importlib.util
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

LINE = "_line"
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
EXCEL_SUFFIXES = (".xlsx",)
DATA_SUFFIXES = PARQUET_SUFFIXES + CSV_SUFFIXES + EXCEL_SUFFIXES


class ReadError(Exception):
    """The file cannot be read at all; the message says why and what would fix it."""


@dataclass
class ReadOutcome:
    frame: pl.DataFrame
    notes: list[str] = field(default_factory=list)
    """Warnings worth showing (encoding fallback, ...)."""
    delimiter: str | None = None
    encoding: str | None = None


def sniff_delimiter(header_line: str) -> str:
    """The delimiter that occurs most often outside quotes in the header line."""
    counts = dict.fromkeys(DELIMITERS, 0)
    in_quotes = False
    for ch in header_line:
        if ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _decode(data: bytes, encoding: str | None, path: Path) -> tuple[str, str, list[str]]:
    notes: list[str] = []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if encoding:
        try:
            return data.decode(encoding), encoding, notes
        except (UnicodeDecodeError, LookupError) as exc:
            raise ReadError(
                f"{path} cannot be decoded as {encoding!r} ({exc}). Fix `encoding:` for this table "
                f"in config/sources.yaml (utf-8, cp1252 and latin-1 are common), or re-export the "
                f"file as UTF-8."
            ) from None
    try:
        return data.decode("utf-8"), "utf-8", notes
    except UnicodeDecodeError as exc:
        bad_at = exc.start
    for fallback in ("cp1252", "latin-1"):
        try:
            text = data.decode(fallback)
        except UnicodeDecodeError:
            continue
        line = data[:bad_at].count(b"\n") + 1
        notes.append(
            f"{path.name} is not valid UTF-8 (first bad byte on line {line}); it was read as "
            f"{fallback}. If accented letters look wrong, set `encoding:` for this table in "
            f"config/sources.yaml or re-export the file as UTF-8."
        )
        return text, fallback, notes
    raise ReadError(f"{path} cannot be decoded as text.")  # pragma: no cover - latin-1 never fails


def _ragged_lines(text: str, delimiter: str, limit: int = 3) -> tuple[int, list[int]]:
    """(header field count, first lines with a different number of fields)."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    width = 0
    bad: list[int] = []
    start = 1
    for i, row in enumerate(reader):
        if i == 0:
            width = len(row)
        elif row and len(row) > width:
            bad.append(start)
            if len(bad) >= limit:
                break
        start = reader.line_num + 1
    return width, bad


def read_csv_strings(path: Path, *, delimiter: str | None = None, encoding: str | None = None) -> ReadOutcome:
    """Read a delimited text file with every column as String, plus `_line`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReadError(f"{path} cannot be opened ({exc.strerror or exc}).") from None
    text, used_encoding, notes = _decode(data, encoding, path)
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise ReadError(f"{path} is empty: it needs at least a header line naming the columns.")
    header = text.split("\n", 1)[0].rstrip("\r")
    sep = delimiter or sniff_delimiter(header)
    try:
        df = pl.read_csv(
            io.BytesIO(text.encode("utf-8")),
            separator=sep,
            infer_schema=False,
            has_header=True,
            quote_char='"',
            raise_if_empty=True,
        )
    except pl.exceptions.PolarsError as exc:
        msg = str(exc).splitlines()[0]
        if "more fields" in msg:
            width, lines = _ragged_lines(text, sep)
            where = f" (e.g. line {', '.join(map(str, lines))})" if lines else ""
            raise ReadError(
                f"{path} has lines with more fields than its header's {width}{where}. Usually a value "
                f"contains the {DELIMITER_NAMES.get(sep, repr(sep))} delimiter without quotes (like "
                f"1,200 in a comma-separated file): quote such values, or export with another "
                f"delimiter and set `delimiter:` in config/sources.yaml."
            ) from None
        raise ReadError(f"{path} cannot be read as CSV ({msg}).") from None
    df = df.rename({c: c.strip().lstrip("\ufeff").strip() for c in df.columns})
    # line numbers: header is line 1; a quoted value with line breaks spans several lines
    if '"' in text and df.height and df.width:
        span = pl.sum_horizontal(
            [pl.col(c).str.count_matches("\n", literal=True).fill_null(0) for c in df.columns]
        ) + 1
        df = df.with_columns((span.cum_sum() - span + 2).cast(pl.Int64).alias(LINE))
    else:
        df = df.with_columns(pl.int_range(2, pl.len() + 2, dtype=pl.Int64).alias(LINE))
    if df.width > 1:  # blank lines come back as all-null rows
        data_cols = [c for c in df.columns if c != LINE]
        df = df.filter(~pl.all_horizontal([pl.col(c).is_null() for c in data_cols]))
    return ReadOutcome(df, notes, delimiter=sep, encoding=used_encoding)


def read_parquet(path: Path) -> ReadOutcome:
    try:
        return ReadOutcome(pl.read_parquet(path))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ReadError(
            f"{path} cannot be read as Parquet ({str(exc).splitlines()[0]}). Re-export it, or "
            f"export the table as CSV instead."
        ) from None


def read_excel_strings(path: Path, sheet: str | None = None) -> ReadOutcome:
    if importlib.util.find_spec("fastexcel") is None:
        raise ReadError(
            f"{path} is an Excel file, and reading Excel needs the `fastexcel` package, which is "
            f"not installed. Install it (pip install fastexcel) or save the sheet as CSV."
        )
    try:  # pragma: no cover - fastexcel is optional
        df = pl.read_excel(path, sheet_name=sheet, infer_schema_length=0)
    except Exception as exc:  # pragma: no cover
        raise ReadError(f"{path} cannot be read as Excel ({str(exc).splitlines()[0]}).") from None
    df = df.rename({c: str(c).strip() for c in df.columns})  # pragma: no cover
    df = df.with_columns(pl.all().cast(pl.String))  # pragma: no cover
    return ReadOutcome(df.with_columns(pl.int_range(2, pl.len() + 2, dtype=pl.Int64).alias(LINE)))  # pragma: no cover


def read_any(path: Path, *, delimiter: str | None = None, encoding: str | None = None,
             sheet: str | None = None) -> ReadOutcome:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return read_parquet(path)
    if suffix in EXCEL_SUFFIXES:
        return read_excel_strings(path, sheet)
    if suffix == ".tsv" and delimiter is None:
        delimiter = "\t"
    return read_csv_strings(path, delimiter=delimiter, encoding=encoding)
