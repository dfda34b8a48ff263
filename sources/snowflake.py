"""Snowflake through Snowpark — the "snowflake" source kind.

```yaml
sources:
  snowflake:
    kind: snowflake
    connection: snowflake          # [connections.snowflake] in .streamlit/secrets.toml
    database: ANALYTICS            # optional: default from the connection
    schema: CS_MART                # optional: default from the connection
    since: 730d                    # optional: event tables from this date on
    tables:                        # like kind: sql — table (no query: Snowpark reads tables)
      accounts: {table: ACCOUNTS_CURRENT, columns: {CUSTOMER_ID: account_id, CSM: owner}}
      usage: {table: DAILY_USAGE, columns: {USAGE_DATE: date, METRIC_NAME: metric, METRIC_VALUE: value}}
```

The session: inside Streamlit in Snowflake, the app's active session (no credentials at
all); elsewhere one built from `[connections.<name>]` — the keys Streamlit's
`st.connection(type="snowflake")` and the Snowflake connector take (account, user,
password or authenticator / private_key_file, role, warehouse, database, schema).

Reading uses Snowpark DataFrames, never SQL text: `session.table(...)`, the date range as
a column filter (`col(...) >= lit(date)`), then only the mapped / canonical columns —
the same column choice as kind `sql` (names matched case-insensitively, so ACCOUNT_ID is
account_id). Every table goes through the data contract; a table that cannot be read is a
problem naming the source, the table and the fix, and the others still load.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from health.contract import TableFormat, did_you_mean, validate
from health.loading import LoadResult, Problem
from health.model import parse_days
from health.schema import TABLES
from sources.base import SourceConfigError
from sources.registry import register
from sources.sql import CONFIG_FILE, OPEN_END, SECRETS_FILE, SOURCE_PROBLEM, SqlTableSettings, choose_columns

SESSION_KEYS = ("account", "user", "password", "authenticator", "private_key_file", "private_key_file_pwd",
                "role", "warehouse", "database", "schema", "host", "port", "protocol", "token")


class SnowflakeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection: str | None = None
    secrets_file: str = SECRETS_FILE
    database: str | None = None
    schema_: str | None = None
    since: str | dt.date | None = None
    until: dt.date | None = None
    tables: dict[str, SqlTableSettings] = {}

    @field_validator("since")
    @classmethod
    def _since(cls, v: str | dt.date | None) -> str | dt.date | None:
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v)
            except ValueError:
                parse_days(v)
        return v

    @field_validator("tables")
    @classmethod
    def _no_queries(cls, v: dict[str, SqlTableSettings]) -> dict[str, SqlTableSettings]:
        for table, ts in v.items():
            if ts.query:
                raise ValueError(f"{table}: Snowpark reads tables or views; create a view for the query "
                                 f"and name it with `table:`")
        return v

    def since_date(self, today: dt.date | None = None) -> dt.date | None:
        if self.since is None or isinstance(self.since, dt.date):
            return self.since
        return (today or dt.date.today()) - dt.timedelta(days=parse_days(self.since))


def parse_settings(name: str, settings: dict[str, Any]) -> SnowflakeSettings:
    raw = dict(settings)
    if "schema" in raw:
        raw["schema_"] = raw.pop("schema")
    try:
        parsed = SnowflakeSettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple("schema" if p == "schema_" else p for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            allowed = ["schema" if f == "schema_" else f for f in SnowflakeSettings.model_fields]
            if len(loc) >= 3 and loc[0] == "tables":
                allowed = list(SqlTableSettings.model_fields)
            guess = did_you_mean(str(loc[-1]), allowed)
            msg = f"unknown setting {loc[-1]!r} (allowed: {', '.join(allowed)})" + (
                f"; did you mean {guess!r}?" if guess else "")
        err = SourceConfigError(
            f"Source {name!r} (kind snowflake) in {CONFIG_FILE} has an invalid setting "
            f"{'.'.join(map(str, loc)) or '(settings)'}: {msg}. Fix it in {CONFIG_FILE}."
        )
        err.loc = loc  # type: ignore[attr-defined]
        raise err from None
    for table in parsed.tables:
        if table not in TABLES:
            guess = did_you_mean(table, list(TABLES))
            err = SourceConfigError(
                f"Source {name!r} in {CONFIG_FILE} configures a table {table!r}, which is not a canonical "
                f"table" + (f" — did you mean {guess!r}?" if guess else ".") + f" The tables are: {', '.join(TABLES)}."
            )
            err.loc = ("tables", table)  # type: ignore[attr-defined]
            raise err
    return parsed


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if len(name) >= 2 and name[0] == name[-1] == '"' else name


def _ident(name: str) -> str:
    """A Snowflake identifier for a column name as reported by Snowpark."""
    if name.isupper() and name.replace("_", "").isalnum() and not name[0].isdigit():
        return name
    return '"' + name.replace('"', '""') + '"'


class SnowflakeSource:
    """The canonical tables read with Snowpark."""

    def __init__(self, name: str, settings: SnowflakeSettings, *, base_dir: str | Path = ".",
                 session: Any = None, today: dt.date | None = None):
        self.name = name
        self.settings = settings
        self.base_dir = Path(base_dir)
        self.today = today
        self._session = session

    def describe(self) -> str:
        where = ".".join(p for p in (self.settings.database, self.settings.schema_) if p)
        how = f"[connections.{self.settings.connection}]" if self.settings.connection else "the active session"
        return f"Snowflake {where or '(default database)'} via {how}"

    # ------------------------------------------------------------------ session

    def session(self) -> Any:
        """The Snowpark session: given, else the active one (Streamlit in Snowflake), else
        one built from [connections.<name>]. Raises RuntimeError with the fix."""
        if self._session is not None:
            return self._session
        try:
            from snowflake.snowpark import Session
        except ImportError:
            raise RuntimeError(
                f"Source {self.name!r} (kind snowflake) needs Snowpark, which is not installed: "
                f"pip install snowflake-snowpark-python (see docs/warehouses.md)."
            ) from None
        try:
            from snowflake.snowpark.context import get_active_session

            self._session = get_active_session()
            return self._session
        except Exception:  # noqa: BLE001 - not inside Snowflake: build one
            pass
        if not self.settings.connection:
            raise RuntimeError(
                f"Source {self.name!r} (kind snowflake) has no active Snowflake session (it is not "
                f"running in Streamlit in Snowflake) and no `connection:`. Add `connection: <name>` and "
                f"[connections.<name>] (account, user, password, warehouse, ...) to {SECRETS_FILE}."
            )
        path = Path(self.settings.secrets_file)
        path = path if path.is_absolute() else self.base_dir / path
        try:
            secrets = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise RuntimeError(f"Source {self.name!r}: {path} is not readable TOML ({type(exc).__name__}).") from None
        conf = (secrets.get("connections") or {}).get(self.settings.connection)
        if not isinstance(conf, dict):
            raise RuntimeError(
                f"Source {self.name!r} (kind snowflake) uses `connection: {self.settings.connection}`, but "
                f"{path} has no [connections.{self.settings.connection}] section."
            )
        params = {k: v for k, v in conf.items() if k in SESSION_KEYS}
        if self.settings.database:
            params["database"] = self.settings.database
        if self.settings.schema_:
            params["schema"] = self.settings.schema_
        try:
            self._session = Session.builder.configs(params).create()
        except Exception as exc:  # noqa: BLE001 - the connector's errors vary
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if conf.get("password"):
                detail = detail.replace(str(conf["password"]), "***")
            raise RuntimeError(
                f"Source {self.name!r} cannot open a Snowflake session for account "
                f"{conf.get('account', '?')!r} as {conf.get('user', '?')!r}: {detail}. Check the account, "
                f"user, password / authenticator, role and warehouse in [connections."
                f"{self.settings.connection}] of {self.settings.secrets_file}."
            ) from None
        return self._session

    # --------------------------------------------------------------------- reading

    def _table_name(self, table: str, ts: SqlTableSettings) -> str:
        name = ts.table or table.upper()
        if "." in name:
            return name
        prefix = [p for p in (self.settings.database, self.settings.schema_) if p]
        return ".".join([*prefix, name]) if prefix else name

    def _query(self, session: Any, table: str, chosen: dict[str, str], name: str) -> Any:
        from snowflake.snowpark.functions import col, lit

        df = session.table(name)
        theirs = {v: k for k, v in chosen.items()}
        tcol = TABLES[table].time_column
        since, until = self.settings.since_date(self.today), self.settings.until
        if table not in ("accounts", "outcomes") and tcol in theirs:
            from snowflake.snowpark.types import TimestampType

            stamps = {_unquote(f.name) for f in df.schema.fields if isinstance(f.datatype, TimestampType)}

            def day(name: str, d: dt.date) -> Any:  # a literal of the column's own type
                return lit(dt.datetime.combine(d, dt.time()) if name in stamps else d)

            c = col(_ident(theirs[tcol]))
            if since is not None:
                cond = c >= day(theirs[tcol], since)
                end = OPEN_END.get(table)
                if end in theirs:
                    e = col(_ident(theirs[end]))
                    cond = cond | e.is_null() | (e >= day(theirs[end], since))
                df = df.filter(cond)
            if until is not None:
                df = df.filter(c < day(theirs[tcol], until + dt.timedelta(days=1)))
        # Snowflake's unquoted names are upper case; ours (and the model's) are lower case.
        return df.select([col(_ident(th)).alias('"' + (ours.lower() if ours.isupper() else ours) + '"')
                          for th, ours in chosen.items()])

    def read(self, skip: tuple[str, ...] = ()) -> tuple[dict[str, pl.DataFrame], dict[str, TableFormat], list[Problem]]:
        raw: dict[str, pl.DataFrame] = {}
        formats: dict[str, TableFormat] = {}
        problems: list[Problem] = []
        try:
            session = self.session()
        except RuntimeError as exc:
            return raw, formats, [Problem(SOURCE_PROBLEM, None, "unreachable", str(exc))]
        listed = set(self.settings.tables)
        for table in TABLES:
            if table in skip:
                continue
            ts = self.settings.tables.get(table) or SqlTableSettings()
            name = self._table_name(table, ts)
            try:
                present = [_unquote(c) for c in session.table(name).columns]
            except Exception as exc:  # noqa: BLE001 - SnowparkSQLException and the local-testing one
                if table not in listed and not TABLES[table].required:
                    continue
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                problems.append(Problem(
                    table, None, "missing_table",
                    f"Table {table!r} of source {self.name!r} reads {name}, which cannot be read ({detail}). "
                    f"Set `table:` for {table!r} in {CONFIG_FILE}, or grant the role SELECT on it.",
                ))
                continue
            chosen, map_problems = choose_columns(self.name, table, present, ts, name)
            problems.extend(map_problems)
            try:
                pdf = self._query(session, table, chosen, name).to_pandas()
            except Exception as exc:  # noqa: BLE001
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                problems.append(Problem(table, None, "unreadable_table",
                                        f"Table {table!r} of source {self.name!r} ({name}) cannot be read: {detail}."))
                continue
            raw[table] = _frame(pdf, table)
            formats[table] = TableFormat(date_formats=dict(ts.date_formats), label=name)
        return raw, formats, problems

    def load(self, skip: tuple[str, ...] = ()) -> LoadResult:
        raw, formats, read_problems = self.read(skip)
        if any(p.kind == "unreachable" for p in read_problems):
            return LoadResult(source=self.name, tables={}, problems=read_problems)
        result = validate(raw, self.name, formats)
        result.problems[:0] = read_problems
        return result


def _frame(pdf: Any, table: str) -> pl.DataFrame:
    """A pandas result as Polars: NaT / NaN as nulls, Python objects typed where they can
    be, a canonical date column given as a timestamp cut to its date, an all-empty column
    given its canonical type."""
    import pandas as pd

    spec = TABLES[table]
    cols = {}
    for c in pdf.columns:
        try:
            s = pl.from_pandas(pdf[c])
        except Exception:  # noqa: BLE001 - mixed objects: rebuild from plain values
            s = None
        if s is None or s.dtype == pl.Object:
            values = [None if (v is None or (not isinstance(v, str) and pd.isna(v))) else
                      (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v) for v in pdf[c].tolist()]
            s = pl.Series(str(c), values, strict=False)
        s = s.alias(str(c))
        canon = spec.column(str(c))
        if canon is not None and s.dtype == pl.Null:
            s = s.cast(canon.dtype)
        elif canon is not None and canon.dtype == pl.Date and isinstance(s.dtype, pl.Datetime):
            s = s.dt.date()
        elif isinstance(s.dtype, pl.Decimal):
            s = s.cast(pl.Float64)
        cols[str(c)] = s
    return pl.DataFrame(cols)


@register("snowflake")
def build_snowflake_source(name: str, settings: dict[str, Any], *, base_dir: str = ".") -> SnowflakeSource:
    return SnowflakeSource(name, parse_settings(name, settings), base_dir=base_dir)
