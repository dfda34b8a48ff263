"""A folder of export files (CSV / Parquet, .xlsx when `fastexcel` is installed), one per
canonical table — the "files" source kind.

```yaml
sources:
  my_export:
    kind: files
    path: exports/2026-11          # the folder, relative to the project root
    tables:                        # optional: default is <table>.csv / <table>.parquet
      accounts:
        file: customers.csv
        columns: {"Customer ID": account_id, "Account Name": name, "CSM": owner}
        date_formats: {renewal_date: "%d/%m/%Y"}
        decimal: ","               # optional: the decimal mark of every number column
        delimiter: ";"             # optional: default is sniffed from the header line
        encoding: utf-8            # optional: default utf-8, falling back to cp1252/latin-1
```

Reading never fails the whole source for one bad file: an unreadable file, a mapped column
that is not in the file, ... are Problems, and the other tables still load.
"""

from __future__ import annotations

import codecs
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from health.contract import TableFormat, did_you_mean, validate
from health.loading import LoadResult, Problem
from health.schema import TABLES
from sources.base import SourceConfigError
from sources.readers import (
    CSV_SUFFIXES,
    DATA_SUFFIXES,
    EXCEL_SUFFIXES,
    PARQUET_SUFFIXES,
    ReadError,
    read_any,
)
from sources.registry import register

CONFIG_FILE = "config/sources.yaml"
_DELIMITER_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


class TableSettings(BaseModel):
    """How one canonical table is found and read inside the folder."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = None
    columns: dict[str, str] = {}
    """The file's column name -> the canonical column name."""
    date_formats: dict[str, str] = {}
    decimal: Literal[".", ","] | None = None
    delimiter: str | None = None
    encoding: str | None = None
    sheet: str | None = None

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = _DELIMITER_WORDS.get(v.lower(), v)
        if len(v) != 1:
            raise ValueError("must be one character such as ',', ';', '|' or 'tab'")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                codecs.lookup(v)
            except LookupError:
                raise ValueError(f"{v!r} is not a known text encoding (try utf-8, cp1252 or latin-1)") from None
        return v

    @field_validator("date_formats")
    @classmethod
    def _formats(cls, v: dict[str, str]) -> dict[str, str]:
        for col, fmt in v.items():
            if "%" not in fmt:
                raise ValueError(f"{col}: {fmt!r} is not a strftime format (like \"%d/%m/%Y\")")
        return v


class FilesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    tables: dict[str, TableSettings] = {}


def _config_error(source: str, message: str, loc: tuple[Any, ...] = ()) -> SourceConfigError:
    err = SourceConfigError(message)
    err.loc = loc  # type: ignore[attr-defined]  # where in the source's settings (for line numbers)
    return err


def parse_settings(name: str, settings: dict[str, Any]) -> FilesSettings:
    """Validate a `files` source's settings; every mistake is a one-paragraph SourceConfigError."""
    try:
        parsed = FilesSettings.model_validate(settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        where = ".".join(str(p) for p in loc) or "(settings)"
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            allowed = (
                list(TableSettings.model_fields) if len(loc) >= 3 and loc[0] == "tables" else list(FilesSettings.model_fields)
            )
            msg = f"unknown setting {loc[-1]!r} (allowed: {', '.join(allowed)})"
            guess = did_you_mean(str(loc[-1]), allowed)
            if guess:
                msg += f"; did you mean {guess!r}?"
        elif first["type"] == "missing" and loc == ("path",):
            msg = "the folder is missing: add `path: <folder with the export files>`"
        more = f" ({len(exc.errors()) - 1} more problem(s) after this one.)" if len(exc.errors()) > 1 else ""
        raise _config_error(
            name,
            f"Source {name!r} (kind files) in {CONFIG_FILE} has an invalid setting {where}: {msg}. "
            f"Fix it in {CONFIG_FILE}.{more}",
            loc,
        ) from None
    for table, ts in parsed.tables.items():
        if table not in TABLES:
            guess = did_you_mean(table, list(TABLES))
            raise _config_error(
                name,
                f"Source {name!r} in {CONFIG_FILE} configures a table {table!r}, which is not a "
                f"canonical table" + (f" — did you mean {guess!r}?" if guess else ".")
                + f" The tables are: {', '.join(TABLES)}.",
                ("tables", table),
            )
        spec = TABLES[table]
        targets = Counter(ts.columns.values())
        twice = [t for t, n in targets.items() if n > 1]
        if twice:
            sources_of = [k for k, v in ts.columns.items() if v == twice[0]]
            raise _config_error(
                name,
                f"Source {name!r}, table {table!r}: `columns:` maps {', '.join(repr(s) for s in sources_of)} "
                f"all onto {twice[0]!r}; each column can come from one file column only. Keep one of "
                f"them in {CONFIG_FILE}.",
                ("tables", table, "columns"),
            )
        dates = [c.name for c in spec.columns if c.dtype in (pl.Date, pl.Datetime("us"))]
        for col in ts.date_formats:
            if col not in dates:
                guess = did_you_mean(col, dates)
                raise _config_error(
                    name,
                    f"Source {name!r}, table {table!r}: `date_formats` names {col!r}, which is not "
                    f"a date column of {table} (use the canonical name; the date columns are "
                    f"{', '.join(dates) or 'none'})" + (f". Did you mean {guess!r}?" if guess else "."),
                    ("tables", table, "date_formats", col),
                )
    return parsed


def _resolve(base_dir: str | Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


class FileSource:
    """The canonical tables read from a folder of files."""

    def __init__(self, name: str, settings: FilesSettings, *, base_dir: str | Path = "."):
        self.name = name
        self.settings = settings
        self.base_dir = Path(base_dir)
        self.folder = _resolve(base_dir, settings.path)
        self._check_folder()

    def _check_folder(self) -> None:
        if not self.folder.is_dir():
            what = "is a file, not a folder" if self.folder.exists() else "does not exist"
            raise SourceConfigError(
                f"Source {self.name!r} (kind files) reads the folder {self.settings.path!r}, which "
                f"resolves to {self.folder.resolve()} — that {what}. Set `path:` for {self.name!r} "
                f"in {CONFIG_FILE} to the folder holding the export files (a relative path is read "
                f"from the project root {self.base_dir.resolve()}), or create the folder and put "
                f"the files (accounts.csv, usage.csv, ...) in it."
            )

    def describe(self) -> str:
        return f"CSV/Parquet folder {self.settings.path}"

    # ----------------------------------------------------------------- locating files

    def _data_files(self) -> list[Path]:
        return sorted(
            p for p in self.folder.iterdir()
            if p.is_file() and not p.name.startswith((".", "~$")) and p.suffix.lower() in DATA_SUFFIXES
        )

    def locate(self) -> tuple[dict[str, Path], list[Problem]]:
        """The file backing each table present, and problems finding them."""
        problems: list[Problem] = []
        files = self._data_files()
        by_table: dict[str, Path] = {}
        configured: set[Path] = set()
        for table, ts in self.settings.tables.items():
            if not ts.file:
                continue
            path = _resolve(self.folder, ts.file)
            configured.add(path)
            if path.is_file():
                by_table[table] = path
                continue
            names = [p.name for p in files]
            guess = did_you_mean(Path(ts.file).name, names)
            problems.append(
                Problem(
                    table, None, "missing_file",
                    f"Table {table!r} of source {self.name!r} is set to read {ts.file!r}, but "
                    f"{path} does not exist (files in the folder: {', '.join(names) or 'none'})."
                    + (f" Did you mean {guess!r}?" if guess else "")
                    + f" Fix `file:` for {table!r} in {CONFIG_FILE}.",
                )
            )
        rank = {s: i for i, s in enumerate(PARQUET_SUFFIXES + CSV_SUFFIXES + EXCEL_SUFFIXES)}
        for table in TABLES:
            if table in by_table or (table in self.settings.tables and self.settings.tables[table].file):
                continue
            matches = sorted((p for p in files if p.stem.lower() == table), key=lambda p: rank[p.suffix.lower()])
            if not matches:
                continue
            by_table[table] = matches[0]
            if len(matches) > 1:
                problems.append(
                    Problem(
                        table, None, "several_files",
                        f"The folder has several files for {table!r} ({', '.join(p.name for p in matches)}); "
                        f"{matches[0].name} was read. Remove the others, or set `file:` for {table!r} "
                        f"in {CONFIG_FILE}.",
                        severity="warning",
                    )
                )
        used = set(by_table.values()) | configured
        for p in files:
            if p in used or any(p.stem.lower() == t for t in TABLES):
                continue
            guess = did_you_mean(p.stem, list(TABLES))
            problems.append(
                Problem(
                    "(folder)", None, "unused_file",
                    f"{p.name} in {self.settings.path} is not read: its name is not a canonical table"
                    + (f" (did you mean {guess!r}?)" if guess else "")
                    + f". Rename it to <table>{p.suffix}, or point a table at it with "
                    f"`tables: {{<table>: {{file: {p.name}}}}}` in {CONFIG_FILE}.",
                    severity="warning",
                )
            )
        return by_table, problems

    # --------------------------------------------------------------------- reading

    def _label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.base_dir))
        except ValueError:
            return str(path)

    def read(self) -> tuple[dict[str, pl.DataFrame], dict[str, TableFormat], list[Problem]]:
        """Raw frames (CSV as strings, Parquet typed), renamed to canonical names."""
        self._check_folder()
        located, problems = self.locate()
        raw: dict[str, pl.DataFrame] = {}
        formats: dict[str, TableFormat] = {}
        for table, path in located.items():
            ts = self.settings.tables.get(table) or TableSettings()
            label = self._label(path)
            try:
                outcome = read_any(path, delimiter=ts.delimiter, encoding=ts.encoding, sheet=ts.sheet)
            except ReadError as exc:
                problems.append(Problem(table, None, "unreadable_file", f"Table {table!r}: {exc}"))
                continue
            for note in outcome.notes:
                problems.append(Problem(table, None, "encoding", f"Table {table!r}: {note}", severity="warning"))
            df, map_problems = apply_mapping(outcome.frame, ts.columns, table, label)
            problems.extend(map_problems)
            raw[table] = df
            formats[table] = TableFormat(date_formats=dict(ts.date_formats), decimal=ts.decimal, label=label)
        return raw, formats, problems

    def load(self) -> LoadResult:
        raw, formats, read_problems = self.read()
        result = validate(raw, self.name, formats)
        result.problems[:0] = read_problems
        return result


def apply_mapping(
    df: pl.DataFrame, mapping: dict[str, str], table: str, label: str
) -> tuple[pl.DataFrame, list[Problem]]:
    """Rename the file's columns to canonical ones; unmapped columns keep their names."""
    problems: list[Problem] = []
    found = [c for c in df.columns if c != "_line"]
    rename: dict[str, str] = {}
    for theirs, ours in mapping.items():
        key = theirs.strip()
        if key in df.columns:
            rename[key] = ours
            continue
        guess = did_you_mean(key, found)
        problems.append(
            Problem(
                table, ours, "missing_column",
                f"Table {table!r} ({label}): `columns:` maps {theirs!r} to {ours!r}, but the file has "
                f"no column {theirs!r} (columns found: {', '.join(found) or 'none'})."
                + (f" Did you mean {guess!r}?" if guess else "")
                + f" Fix the mapping in {CONFIG_FILE}.",
            )
        )
    # a file column already named like a mapping target: the mapping wins, the other is kept aside
    taken = set(rename.values())
    for col in df.columns:
        if col in taken and col not in rename:
            aside = f"{col}_original"
            while aside in df.columns:
                aside += "_"
            rename[col] = aside
            problems.append(
                Problem(
                    table, col, "column_clash",
                    f"Table {table!r} ({label}): the file has a column {col!r} and `columns:` also maps "
                    f"another column onto {col!r}; the mapped one is used and the file's own {col!r} is "
                    f"kept as {aside!r}. Remove one of them from the mapping or the file if that is wrong.",
                    severity="warning",
                )
            )
    return (df.rename(rename) if rename else df), problems


@register("files")
def build_files_source(name: str, settings: dict[str, Any], *, base_dir: str = ".") -> FileSource:
    return FileSource(name, parse_settings(name, settings), base_dir=base_dir)


def write_tables_csv(
    tables: dict[str, pl.DataFrame],
    folder: str | Path,
    rename: dict[str, dict[str, str]] | None = None,
    *,
    separator: str = ",",
) -> dict[str, Path]:
    """Write each table to `<folder>/<table>.csv`, renaming columns per table
    (`rename[table]` maps canonical name -> the file's name). Returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for table, df in tables.items():
        mapping = (rename or {}).get(table, {})
        path = folder / f"{table}.csv"
        df.rename({k: v for k, v in mapping.items() if k in df.columns}).write_csv(path, separator=separator)
        out[table] = path
    return out
