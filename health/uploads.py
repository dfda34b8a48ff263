"""Files a user uploads for one canonical table (the exec touchpoint spreadsheet, a
one-off invoice export, ...), checked by the data contract before they count.

The life of an upload (no Streamlit here; app_pages/sources.py drives it):

1. `stage(data, filename, table, mapping, ...)` reads the bytes with the files-source
   reader (CSV / TSV / Excel / Parquet), renames their columns to canonical ones with the
   user's mapping, and validates them with `health.contract.validate` against the loaded
   accounts. It returns a `Staged` preview: the mapped rows, the rows that pass, the rows
   that do not (with `_line` and `_reason`) and every problem. Nothing is stored.
2. `accept(staged, who, folder)` stores the rows that passed under
   `<folder>/<table>/<id>.parquet` with a `<id>.json` manifest (who, when, the original
   file name, the mapping, date formats, row counts), so it survives restarts.
3. `list_uploads`, `remove`, and `accept(..., replaces=<id>)` manage what is stored.
4. `merge(load_result, uploads)` appends the accepted rows to the source's tables: rows
   whose key is already in the source (or an earlier upload) and rows for accounts the
   source does not have are rejected with the reason and reported as problems.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from health.contract import CONFIG_FILE, TableFormat, did_you_mean, validate
from health.loading import LoadResult, Problem
from health.schema import ACCOUNT_KEY, TABLES

__all__ = [
    "Staged",
    "Upload",
    "UploadError",
    "accept",
    "apply_mapping",
    "fingerprint",
    "guess_mapping",
    "list_uploads",
    "merge",
    "remove",
    "stage",
]

LINE = "_line"
REASON = "_reason"
UPLOAD_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".parquet", ".pq")
_FIX_WHERE = "in the upload's mapping (column mapping, date formats, decimal mark)"


class UploadError(Exception):
    """An upload cannot be stored / removed; the message says why and what to do."""


@dataclass
class Staged:
    """A read-and-checked upload, not stored yet."""

    table: str
    filename: str
    mapping: dict[str, str]
    date_formats: dict[str, str]
    decimal: str | None
    file_columns: list[str] = field(default_factory=list)
    mapped: pl.DataFrame | None = None
    """The file's rows with the mapping applied (as read), with `_line`."""
    valid: pl.DataFrame | None = None
    """The rows that pass, cast to the canonical types."""
    rejected: pl.DataFrame | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def rows_read(self) -> int:
        return 0 if self.mapped is None else self.mapped.height

    @property
    def rows_valid(self) -> int:
        return 0 if self.valid is None else self.valid.height

    @property
    def rows_rejected(self) -> int:
        return 0 if self.rejected is None else self.rejected.height

    @property
    def can_accept(self) -> bool:
        return self.rows_valid > 0


@dataclass(frozen=True)
class Upload:
    """An accepted upload, as stored."""

    id: str
    table: str
    manifest: dict[str, Any]
    parquet: Path

    @property
    def filename(self) -> str:
        return str(self.manifest.get("original_file", ""))


# ------------------------------------------------------------------------------ staging


Reader = Callable[..., Any]
"""`sources.readers.read_any`: (path, delimiter=, encoding=, sheet=) -> an outcome with
`.frame` and `.notes`, raising on an unreadable file. Passed in by the caller, because
`health/` never imports `sources/` (tests/test_layering.py)."""


def _read(data: bytes, filename: str, reader: Reader, *, delimiter: str | None, encoding: str | None,
          sheet: str | None) -> tuple[pl.DataFrame, list[str]]:
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise ValueError(
            f"{filename}: files ending in {suffix or '(no extension)'} cannot be read. Upload a "
            f"CSV (.csv, .tsv, .txt), an Excel sheet (.xlsx) or a Parquet file (.parquet)."
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(filename).name
        path.write_bytes(data)
        try:
            out = reader(path, delimiter=delimiter, encoding=encoding, sheet=sheet)
        except Exception as exc:  # noqa: BLE001 - the reader's ReadError: name the user's file, not the temp path
            msg = str(exc).replace(str(path), filename).replace(f" for this table in {CONFIG_FILE}", "")
            raise ValueError(msg.replace(f" in {CONFIG_FILE}", "")) from None
    return out.frame, list(out.notes)


def _for_upload(msg: str) -> str:
    """Contract messages point at config/sources.yaml; an upload is fixed in its mapping."""
    return msg.replace(f"in {CONFIG_FILE}", _FIX_WHERE)


def apply_mapping(df: pl.DataFrame, mapping: dict[str, str], table: str, filename: str) -> tuple[pl.DataFrame, list[Problem]]:
    """Rename the file's columns to canonical ones (unmapped columns keep their names). A
    mapped column the file lacks is an error; a file column already named like a target
    of the mapping is kept aside as `<name>_original` (a warning)."""
    problems: list[Problem] = []
    found = [c for c in df.columns if c != LINE]
    rename: dict[str, str] = {}
    for theirs, ours in mapping.items():
        if theirs in df.columns:
            rename[theirs] = ours
            continue
        guess = did_you_mean(theirs, found)
        problems.append(Problem(
            table, ours, "missing_column",
            f"{filename}: the mapping sends column {theirs!r} to {ours!r}, but the file has no column "
            f"{theirs!r} (columns found: {', '.join(found) or 'none'})."
            + (f" Did you mean {guess!r}?" if guess else "") + " Fix the mapping.",
        ))
    taken = set(rename.values())
    for col in df.columns:
        if col in taken and col not in rename:
            aside = f"{col}_original"
            while aside in df.columns:
                aside += "_"
            rename[col] = aside
            problems.append(Problem(
                table, col, "column_clash",
                f"{filename}: the file has a column {col!r} and the mapping also sends another column to "
                f"{col!r}; the mapped one is used and the file's own is kept as {aside!r}.",
                severity="warning",
            ))
    return (df.rename(rename) if rename else df), problems


def stage(
    data: bytes,
    filename: str,
    table: str,
    mapping: dict[str, str] | None = None,
    *,
    date_formats: dict[str, str] | None = None,
    decimal: str | None = None,
    accounts: pl.DataFrame | None = None,
    existing: pl.DataFrame | None = None,
    reader: Reader,
    delimiter: str | None = None,
    encoding: str | None = None,
    sheet: str | None = None,
) -> Staged:
    """Read `data` (the bytes of `filename`) as `table`, map and validate it. Never raises for
    bad input: every problem (unreadable file, unknown column, bad values, unknown accounts)
    is in `Staged.problems`, naming the file, the column and the lines. `existing`: the
    table's rows already loaded; uploaded rows with a key among them are rejected here, as
    `merge` would."""
    mapping = {k: v for k, v in (mapping or {}).items() if k and v}
    date_formats = {k: v for k, v in (date_formats or {}).items() if k and v}
    staged = Staged(table, filename, dict(mapping), dict(date_formats), decimal)
    if table not in TABLES:
        staged.problems.append(
            Problem(table, None, "unknown_table",
                    f"{filename}: {table!r} is not a canonical table; pick one of {', '.join(TABLES)}.")
        )
        return staged
    spec = TABLES[table]
    try:
        frame, notes = _read(data, filename, reader, delimiter=delimiter, encoding=encoding, sheet=sheet)
    except ValueError as exc:
        staged.problems.append(Problem(table, None, "unreadable_file", str(exc)))
        return staged
    staged.problems += [Problem(table, None, "encoding", n, severity="warning") for n in notes]
    staged.file_columns = [c for c in frame.columns if c != LINE]
    unknown_targets = sorted({v for v in mapping.values() if spec.column(v) is None})
    for target in unknown_targets:
        staged.problems.append(
            Problem(table, target, "bad_mapping",
                    f"{filename}: the mapping sends a column to {target!r}, which is not a column of "
                    f"{table} (its columns: {', '.join(c.name for c in spec.columns)}). The column "
                    f"is kept as an extra column; pick a canonical column if it should be one.",
                    severity="warning")
        )
    mapped, map_problems = apply_mapping(frame, mapping, table, filename)
    staged.problems += map_problems
    staged.mapped = mapped
    raw: dict[str, pl.DataFrame] = {table: mapped}
    if table != "accounts":
        if accounts is None:
            staged.problems.append(
                Problem(table, ACCOUNT_KEY, "references_unchecked",
                        f"{filename}: no accounts are loaded, so the account_id of these rows cannot be "
                        f"checked. Fix the data source first (the rows cannot be accepted).")
            )
            return staged
        raw["accounts"] = accounts
    fmt = TableFormat(date_formats=date_formats, decimal=decimal, label=filename)
    result = validate(raw, f"upload {filename}", {table: fmt})
    for p in result.problems:
        if p.table != table:
            continue
        p.message = _for_upload(p.message)
        staged.problems.append(p)
    staged.valid = result.tables.get(table)
    staged.rejected = result.rejected.get(table)
    if staged.valid is None:  # the table as a whole failed (missing required columns)
        staged.rejected = None
    elif existing is not None and spec.key and all(k in existing.columns for k in spec.key):
        _reject_known_keys(staged, existing)
    return staged


def _reject_known_keys(staged: Staged, existing: pl.DataFrame) -> None:
    spec = TABLES[staged.table]
    key = list(spec.key)
    assert staged.valid is not None
    try:
        known = _key_frame(existing, spec.key).with_columns(pl.lit(True).alias("__dup"))
        marked = staged.valid.join(known, on=key, how="left", nulls_equal=True)
    except pl.exceptions.PolarsError:
        return
    is_dup = pl.col("__dup").fill_null(False)
    dups = marked.filter(is_dup).drop("__dup")
    if not dups.height:
        return
    staged.valid = marked.filter(~is_dup).drop("__dup")
    reason = pl.lit(f"{'/'.join(key)} already in {staged.table}").alias(REASON)
    rej = _raw_rows_of(staged.mapped, dups, key)
    if rej is None:  # keys that cannot be matched to the file's text (dates): the rows as parsed
        rej = dups.select(pl.all().cast(pl.String))
    rej = rej.with_columns(reason)
    where = f" ({_lines_text(rej)})" if LINE in rej.columns and rej.height else ""
    keys = ", ".join(repr(r[0]) if len(r) == 1 else repr(r) for r in dups.select(key).head(5).rows())
    staged.problems.append(Problem(
        staged.table, ",".join(key), "duplicate_id",
        f"{staged.filename}: {dups.height} row(s) have a {'/'.join(key)} already in {staged.table}{where}: "
        f"{keys}. They were left out (the rows already loaded are kept). Remove them from the file, or "
        f"replace the earlier upload that has them.",
        count=dups.height, examples=rej.head(3).to_dicts(),
    ))
    if staged.rejected is None or not staged.rejected.height:
        staged.rejected = rej
    else:
        both = pl.concat([f.select(pl.all().cast(pl.String)) for f in (staged.rejected, rej)], how="diagonal_relaxed")
        staged.rejected = both.with_columns(pl.col(LINE).cast(pl.Int64, strict=False)) if LINE in both.columns else both


def _raw_rows_of(raw: pl.DataFrame | None, dups: pl.DataFrame, key: list[str]) -> pl.DataFrame | None:
    """The file's rows (as read, with `_line`) whose key is in `dups`, when the key columns are
    text in both (ids); None otherwise."""
    if raw is None or not all(k in raw.columns for k in key):
        return None
    if not all(raw.schema[k] == pl.String and dups.schema[k] == pl.String for k in key):
        return None
    probe = raw.with_columns([pl.col(k).str.strip_chars().alias(f"__k_{k}") for k in key])
    wanted = dups.select([pl.col(k).alias(f"__k_{k}") for k in key]).unique()
    hit = probe.join(wanted, on=[f"__k_{k}" for k in key], how="semi")
    return hit.drop([f"__k_{k}" for k in key])


def _lines_text(df: pl.DataFrame) -> str:
    lines = df[LINE].head(5).to_list()
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(map(str, lines)) + ("…" if df.height > 5 else "")


def guess_mapping(file_columns: list[str], table: str) -> dict[str, str]:
    """A first mapping to edit: file columns whose name matches a canonical column closely."""
    spec = TABLES[table]
    names = [c.name for c in spec.columns]
    out: dict[str, str] = {}
    for col in file_columns:
        if col == LINE or col in names:
            continue
        guess = did_you_mean(col, names)
        if guess and guess not in out.values() and guess not in file_columns:
            out[col] = guess
    return out


# ------------------------------------------------------------------------------ storage


def _table_dir(folder: Path, table: str) -> Path:
    if table not in TABLES:
        raise UploadError(f"{table!r} is not a canonical table ({', '.join(TABLES)}).")
    return Path(folder) / table


def accept(staged: Staged, who: str | None, folder: str | Path, *, replaces: str | None = None,
           now: dt.datetime | None = None) -> Upload:
    """Store the rows of `staged` that passed; with `replaces`, remove that upload after."""
    if not staged.can_accept:
        why = "; ".join(p.message for p in staged.errors[:3]) or "the file has no rows"
        raise UploadError(f"{staged.filename} has no rows that pass the checks, so nothing was stored ({why}).")
    folder = Path(folder)
    tdir = _table_dir(folder, staged.table)
    if replaces is not None and not (tdir / f"{replaces}.json").exists():
        raise UploadError(f"There is no {staged.table} upload {replaces!r} to replace (it may have been removed).")
    tdir.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.UTC)
    uid = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    pq = tdir / f"{uid}.parquet"
    assert staged.valid is not None
    staged.valid.drop([c for c in (LINE, REASON) if c in staged.valid.columns]).write_parquet(pq)
    manifest = {
        "id": uid,
        "table": staged.table,
        "uploaded_by": who or "unknown",
        "uploaded_at": now.isoformat(),
        "original_file": staged.filename,
        "mapping": staged.mapping,
        "date_formats": staged.date_formats,
        "decimal": staged.decimal,
        "rows_read": staged.rows_read,
        "rows_accepted": staged.rows_valid,
        "rows_rejected": staged.rows_rejected,
        "replaces": replaces,
    }
    tmp = tdir / f".{uid}.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    tmp.replace(tdir / f"{uid}.json")  # the manifest last: a half-written upload is never listed
    if replaces is not None:
        remove(folder, staged.table, replaces)
    return Upload(uid, staged.table, manifest, pq)


def list_uploads(folder: str | Path, table: str | None = None) -> list[Upload]:
    """The accepted uploads (oldest first), per table in canonical order."""
    folder = Path(folder)
    out: list[Upload] = []
    for t in TABLES:
        if table is not None and t != table:
            continue
        tdir = folder / t
        if not tdir.is_dir():
            continue
        for mf in sorted(tdir.glob("*.json")):
            pq = mf.with_suffix(".parquet")
            try:
                manifest = json.loads(mf.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if pq.exists():
                out.append(Upload(mf.stem, t, manifest, pq))
    return out


def remove(folder: str | Path, table: str, upload_id: str) -> None:
    tdir = _table_dir(Path(folder), table)
    mf = tdir / f"{upload_id}.json"
    if not mf.exists():
        raise UploadError(f"There is no {table} upload {upload_id!r} (it may already have been removed).")
    mf.unlink()
    (tdir / f"{upload_id}.parquet").unlink(missing_ok=True)


def fingerprint(folder: str | Path) -> str:
    """Changes whenever an upload is accepted, replaced or removed (for cache keys)."""
    h = hashlib.sha1()
    for u in list_uploads(folder):
        h.update(f"{u.table}/{u.id}/{u.parquet.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------ merging


def _key_frame(df: pl.DataFrame, key: tuple[str, ...]) -> pl.DataFrame:
    return df.select([pl.col(k) for k in key]).unique()


def merge(result: LoadResult, uploads: list[Upload]) -> LoadResult:
    """`result` with the accepted uploads' rows appended (a new LoadResult; `result` is not
    changed). Uploaded rows are rejected, with the reason, when their key is already in the
    table (the source's row is kept) or their account is not in the accounts table."""
    if not uploads:
        return result
    tables = dict(result.tables)
    rejected = dict(result.rejected)
    problems = list(result.problems)
    order = {t: i for i, t in enumerate(TABLES)}
    for up in sorted(uploads, key=lambda u: (order.get(u.table, 99), u.id)):  # accounts first
        spec = TABLES.get(up.table)
        label = f"uploaded file {up.filename!r} ({up.table}, upload {up.id})"
        if spec is None:
            continue
        try:
            rows = pl.read_parquet(up.parquet)
        except Exception as exc:  # noqa: BLE001 - a damaged file must not break the book
            problems.append(Problem(up.table, None, "unreadable_file",
                                    f"The {label} cannot be read ({str(exc).splitlines()[0]}); remove it and upload it again."))
            continue
        rows = rows.with_row_index(LINE, offset=1).with_columns(pl.col(LINE).cast(pl.Int64))
        bad: list[pl.DataFrame] = []
        accounts = tables.get("accounts")
        if spec.references_accounts and accounts is not None and ACCOUNT_KEY in rows.columns:
            known = accounts[ACCOUNT_KEY].implode()
            unknown = rows.filter(~pl.col(ACCOUNT_KEY).is_in(known))
            if unknown.height:
                ids = ", ".join(repr(v) for v in unknown[ACCOUNT_KEY].unique(maintain_order=True).head(5).to_list())
                problems.append(Problem(
                    up.table, ACCOUNT_KEY, "unknown_account",
                    f"The {label}: {unknown.height} row(s) name accounts the source does not have ({ids}); "
                    f"they were left out. Add the accounts to the source (or fix the ids) and upload again.",
                    count=unknown.height, examples=unknown.head(3).to_dicts()))
                bad.append(unknown.with_columns(pl.format("account_id: '{}' is not in accounts", pl.col(ACCOUNT_KEY)).alias(REASON)))
                rows = rows.filter(pl.col(ACCOUNT_KEY).is_in(known))
        current = tables.get(up.table)
        if spec.key and current is not None and all(k in current.columns for k in spec.key):
            try:
                existing = _key_frame(current, spec.key).with_columns(pl.lit(True).alias("__dup"))
                marked = rows.join(existing, on=list(spec.key), how="left", nulls_equal=True)
            except pl.exceptions.PolarsError:
                marked = rows.with_columns(pl.lit(None, pl.Boolean).alias("__dup"))
            dups = marked.filter(pl.col("__dup").fill_null(False)).drop("__dup")
            if dups.height:
                keys = ", ".join(str(tuple(r.values()) if len(r) > 1 else next(iter(r.values())))
                                 for r in dups.select(spec.key).head(5).to_dicts())
                problems.append(Problem(
                    up.table, ",".join(spec.key), "duplicate_id",
                    f"The {label}: {dups.height} row(s) have a {'/'.join(spec.key)} already in {up.table} "
                    f"({keys}); the existing rows were kept and the uploaded ones left out. Remove them "
                    f"from the file, or remove the earlier upload that has them.",
                    count=dups.height, examples=dups.head(3).to_dicts()))
                bad.append(dups.with_columns(pl.lit(f"{'/'.join(spec.key)} already in {up.table}").alias(REASON)))
                rows = marked.filter(~pl.col("__dup").fill_null(False)).drop("__dup")
        rows = rows.drop(LINE)
        if current is None:
            tables[up.table] = rows
        else:
            tables[up.table] = pl.concat([current, rows], how="diagonal_relaxed")
        if bad:
            frame = pl.concat([b.select(pl.all().cast(pl.String)) for b in bad], how="diagonal_relaxed")
            frame = frame.with_columns(pl.col(LINE).cast(pl.Int64), pl.lit(up.filename).alias("_upload"))
            prev = rejected.get(up.table)
            if prev is None:
                rejected[up.table] = frame
            else:
                try:
                    rejected[up.table] = pl.concat([prev.select(pl.all().cast(pl.String)).with_columns(
                        pl.col(LINE).cast(pl.Int64, strict=False)) if LINE in prev.columns else prev.select(pl.all().cast(pl.String)),
                        frame], how="diagonal_relaxed")
                except pl.exceptions.PolarsError:
                    rejected[f"{up.table} (uploads)"] = frame
    return LoadResult(source=result.source, tables=tables, rejected=rejected, problems=problems,
                      loaded_at=result.loaded_at)
