"""Any database SQLAlchemy can reach (PostgreSQL, DuckDB, SQLite, SQL Server, Snowflake,
Databricks, ...) — the "sql" source kind.

```yaml
sources:
  warehouse:
    kind: sql
    url_env: CHI_PG_URL            # the SQLAlchemy URL comes from this environment variable,
    # connection: warehouse        # ... or from [connections.warehouse] in .streamlit/secrets.toml
    schema: analytics              # optional: the schema of the tables below
    since: 730d                    # optional: event tables from this date on (a date or "730d")
    tables:                        # optional: default is a table named like the canonical one
      accounts:
        table: crm.customers       # a table (schema.table) ...
        columns: {customer_id: account_id, csm: owner, tier: segment}
      usage:
        query: "SELECT * FROM events.daily_usage WHERE env = 'prod'"   # ... or a query
        columns: {day: date, metric_name: metric, metric_value: value}
        keep: [plan_code]          # extra columns to read (usable in `where`)
```

What is read: for `accounts`, every column (it is small, and extra columns are usable in
segment and rule conditions); for the event tables, only the canonical columns (mapped or
already named so, matched case-insensitively: Snowflake says ACCOUNT_ID) and `keep:`. The
date range is applied in the database, on the table's time column, with bound parameters;
a ticket or invoice still open at `since` is read too (it is open at the first dates scored).

A table that cannot be read (missing, no permission, a mapped column the table lacks) is
reported with the source, the table and the fix, and the other tables still load. A
database that cannot be reached is one problem naming the source, the host (never the
password) and what to check. Results go through `health.contract.validate` like any source.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from health.contract import TableFormat, did_you_mean, validate
from health.loading import LoadResult, Problem
from health.model import parse_days
from health.schema import TABLES
from sources.base import SourceConfigError
from sources.registry import register

CONFIG_FILE = "config/sources.yaml"
SECRETS_FILE = ".streamlit/secrets.toml"
OPEN_END = {"tickets": "closed_at", "invoices": "paid_at"}
"""A record of these tables stays relevant after its time column while it is open."""
SOURCE_PROBLEM = "(source)"


class SqlTableSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: str | None = None
    query: str | None = None
    columns: dict[str, str] = {}
    """The database's column name -> the canonical column name."""
    keep: list[str] = []
    """Extra (non-canonical) columns to read from an event table, by the database's name."""
    date_formats: dict[str, str] = {}
    """For dates stored as text in a non-ISO format (SQLite, CSV-loaded staging tables)."""

    @model_validator(mode="after")
    def _one_of(self) -> "SqlTableSettings":
        if self.table and self.query:
            raise ValueError("give either `table:` or `query:`, not both")
        if self.query is not None and not re.match(r"^\s*(select|with)\b", self.query, re.I):
            raise ValueError("`query:` must be a SELECT (or WITH ... SELECT) statement")
        return self


class SqlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url_env: str | None = None
    connection: str | None = None
    secrets_file: str = SECRETS_FILE
    schema_: str | None = None
    since: str | dt.date | None = None
    until: dt.date | None = None
    tables: dict[str, SqlTableSettings] = {}
    pushdown: Literal["auto", "on", "off"] = "auto"
    """Roll the usage table up in the database (`auto`: where the dialect is supported)."""

    @field_validator("since")
    @classmethod
    def _since(cls, v: str | dt.date | None) -> str | dt.date | None:
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v)
            except ValueError:
                parse_days(v)
        return v

    @model_validator(mode="after")
    def _where_from(self) -> "SqlSettings":
        if bool(self.url_env) == bool(self.connection):
            raise ValueError(
                "say where the database URL comes from: `url_env: <ENV VAR>` or "
                "`connection: <name>` ([connections.<name>] in .streamlit/secrets.toml), one of them"
            )
        return self

    def since_date(self, today: dt.date | None = None) -> dt.date | None:
        if self.since is None or isinstance(self.since, dt.date):
            return self.since
        return (today or dt.date.today()) - dt.timedelta(days=parse_days(self.since))


def _config_error(message: str, loc: tuple[Any, ...] = ()) -> SourceConfigError:
    err = SourceConfigError(message)
    err.loc = loc  # type: ignore[attr-defined]
    return err


def parse_settings(name: str, settings: dict[str, Any]) -> SqlSettings:
    raw = dict(settings)
    if "schema" in raw:
        raw["schema_"] = raw.pop("schema")
    try:
        parsed = SqlSettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple("schema" if p == "schema_" else p for p in first["loc"])
        where = ".".join(str(p) for p in loc) or "(settings)"
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            nested = len(loc) >= 3 and loc[0] == "tables"
            allowed = list(SqlTableSettings.model_fields) if nested else [
                "schema" if f == "schema_" else f for f in SqlSettings.model_fields
            ]
            msg = f"unknown setting {loc[-1]!r} (allowed: {', '.join(allowed)})"
            guess = did_you_mean(str(loc[-1]), allowed)
            if guess:
                msg += f"; did you mean {guess!r}?"
        raise _config_error(
            f"Source {name!r} (kind sql) in {CONFIG_FILE} has an invalid setting {where}: {msg}. "
            f"Fix it in {CONFIG_FILE}.",
            loc,
        ) from None
    for table in parsed.tables:
        if table not in TABLES:
            guess = did_you_mean(table, list(TABLES))
            raise _config_error(
                f"Source {name!r} in {CONFIG_FILE} configures a table {table!r}, which is not a "
                f"canonical table" + (f" — did you mean {guess!r}?" if guess else ".")
                + f" The tables are: {', '.join(TABLES)}.",
                ("tables", table),
            )
    return parsed


def secrets_url(secrets: dict[str, Any], connection: str) -> Any:
    """A SQLAlchemy URL from `[connections.<name>]`, following Streamlit's SQLConnection:
    either `url = "dialect+driver://..."`, or dialect / driver / username / password /
    host / port / database / query."""
    import sqlalchemy as sa

    sec = (secrets.get("connections") or {}).get(connection)
    if not isinstance(sec, dict):
        raise KeyError(connection)
    if sec.get("url"):
        return sa.make_url(sec["url"])
    if not sec.get("dialect"):
        raise ValueError("needs `url = ...` or at least `dialect = ...`")
    driver = f"{sec['dialect']}+{sec['driver']}" if sec.get("driver") else sec["dialect"]
    return sa.URL.create(
        driver,
        username=sec.get("username"),
        password=sec.get("password"),
        host=sec.get("host"),
        port=int(sec["port"]) if sec.get("port") else None,
        database=sec.get("database"),
        query=sec.get("query") or {},
    )


def safe_url(url: Any) -> str:
    """The URL for messages: never the password."""
    return url.render_as_string(hide_password=True)


def _scrub(text: str, url: Any) -> str:
    pw = getattr(url, "password", None)
    if pw:
        text = text.replace(str(pw), "***")
    return text


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    return lines[0] if lines else type(orig).__name__


class SqlSource:
    """The canonical tables read from a database through SQLAlchemy."""

    def __init__(self, name: str, settings: SqlSettings, *, base_dir: str | Path = ".",
                 secrets: dict[str, Any] | None = None, today: dt.date | None = None):
        self.name = name
        self.settings = settings
        self.base_dir = Path(base_dir)
        self.today = today
        self.url = self._resolve_url(secrets)
        self._engine: Any = None

    # ------------------------------------------------------------------ connection

    def _origin(self) -> str:
        if self.settings.url_env:
            return f"${self.settings.url_env}"
        return f"[connections.{self.settings.connection}] in {self.settings.secrets_file}"

    def _resolve_url(self, secrets: dict[str, Any] | None) -> Any:
        import sqlalchemy as sa
        from sqlalchemy.exc import ArgumentError

        s = self.settings
        try:
            if s.url_env:
                text = os.environ.get(s.url_env)
                if not text:
                    raise _config_error(
                        f"Source {self.name!r} (kind sql) reads its database URL from the environment "
                        f"variable {s.url_env}, which is not set. Export it, e.g. "
                        f"{s.url_env}='postgresql+psycopg://user:password@host:5432/db', or use "
                        f"`connection: <name>` with [connections.<name>] in {SECRETS_FILE}.",
                        ("url_env",),
                    )
                return sa.make_url(text)
            if secrets is None:
                path = Path(s.secrets_file)
                path = path if path.is_absolute() else self.base_dir / path
                try:
                    secrets = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
                except (tomllib.TOMLDecodeError, OSError) as exc:
                    raise _config_error(
                        f"Source {self.name!r}: {path} is not readable TOML ({type(exc).__name__}); "
                        f"fix the file.", ("connection",)
                    ) from None
            try:
                return secrets_url(secrets, s.connection)  # type: ignore[arg-type]
            except KeyError:
                raise _config_error(
                    f"Source {self.name!r} (kind sql) uses `connection: {s.connection}`, but "
                    f"{s.secrets_file} has no [connections.{s.connection}] section. Add one with "
                    f"`url = \"dialect+driver://user:password@host/db\"` (or dialect, host, port, "
                    f"database, username, password).", ("connection",)
                ) from None
            except ValueError as exc:
                raise _config_error(
                    f"Source {self.name!r}: [connections.{s.connection}] in {s.secrets_file} {exc}.",
                    ("connection",),
                ) from None
        except ArgumentError:
            raise _config_error(
                f"Source {self.name!r} (kind sql): the database URL from {self._origin()} is not a "
                f"valid SQLAlchemy URL. Write it as dialect+driver://user:password@host:port/database "
                f"(e.g. postgresql+psycopg://..., duckdb:///path/file.duckdb, sqlite:///file.db).",
                ("url_env" if s.url_env else "connection",),
            ) from None

    def describe(self) -> str:
        return f"SQL database {safe_url(self.url)}"

    def engine(self) -> Any:
        """The SQLAlchemy engine (made on first use). Raises ConnectError with the fix."""
        if self._engine is None:
            import sqlalchemy as sa
            from sqlalchemy.exc import NoSuchModuleError

            try:
                self._engine = sa.create_engine(self.url)
            except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
                raise ConnectError(
                    f"Source {self.name!r}: no database driver for {self.url.drivername!r} "
                    f"({_first_line(exc)}). Install the warehouse extras "
                    f"(pip install -r requirements-warehouse.txt) or the driver for your database "
                    f"(see docs/warehouses.md)."
                ) from None
        return self._engine

    def connect(self) -> Any:
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        engine = self.engine()
        try:
            return engine.connect()
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            detail = _scrub(_first_line(exc), self.url)
            low = detail.lower()
            if "password" in low or "authentication" in low or "access denied" in low or "role" in low:
                fix = f"check the user name and password in {self._origin()}"
            elif "does not exist" in low and "database" in low:
                fix = f"check the database name in {self._origin()}"
            else:
                fix = (f"check that the server is running and reachable at "
                       f"{self.url.host or '(local)'}{':' + str(self.url.port) if self.url.port else ''}, "
                       f"and the host and port in {self._origin()}")
            raise ConnectError(
                f"Source {self.name!r} cannot connect to {safe_url(self.url)}: {detail}. To fix it, {fix}."
            ) from None

    # --------------------------------------------------------------------- reading

    def _from_clause(self, table: str, ts: SqlTableSettings) -> tuple[Any, str]:
        """The FROM for one table and a label for messages."""
        import sqlalchemy as sa

        if ts.query:
            return sa.text(ts.query).columns().subquery("src"), f"query for {table}"
        name = ts.table or table
        parts = name.split(".")
        schema = ".".join(parts[:-1]) or self.settings.schema_
        return sa.table(parts[-1], schema=schema), (f"{schema}.{parts[-1]}" if schema else parts[-1])

    def _present(self, conn: Any, from_: Any) -> list[str]:
        import sqlalchemy as sa

        res = conn.execute(sa.select(sa.text("*")).select_from(from_).where(sa.false()))
        cols = list(res.keys())
        res.close()
        return cols

    def select_for(self, table: str, present: list[str], ts: SqlTableSettings, label: str,
                   extra: set[str] | None = None) -> tuple[dict[str, str], list[Problem]]:
        """The database columns to read and their canonical names: {theirs: ours}."""
        return choose_columns(self.name, table, present, ts, label, extra)

    def _date_filter(self, table: str, chosen: dict[str, str]) -> Any:
        import sqlalchemy as sa

        since, until = self.settings.since_date(self.today), self.settings.until
        tcol = TABLES[table].time_column
        if table in ("accounts", "outcomes") or tcol is None or (since is None and until is None):
            return None
        theirs = {v: k for k, v in chosen.items()}
        if tcol not in theirs:
            return None
        col = _col(theirs[tcol])
        conds = []
        if since is not None:
            lo = col >= sa.bindparam("since", since, type_=sa.Date)
            end = OPEN_END.get(table)
            if end and end in theirs:
                end_col = _col(theirs[end])
                lo = sa.or_(lo, end_col.is_(None), end_col >= sa.bindparam("since_open", since, type_=sa.Date))
            conds.append(lo)
        if until is not None:
            conds.append(col < sa.bindparam("until", until + dt.timedelta(days=1), type_=sa.Date))
        return sa.and_(*conds)

    def query_for(self, table: str, chosen: dict[str, str], from_: Any) -> Any:
        """The SELECT for one table: the chosen columns, renamed, and the date range
        (bound parameters)."""
        import sqlalchemy as sa

        stmt = sa.select(*[_col(theirs).label(_q(ours)) for theirs, ours in chosen.items()]).select_from(from_)
        cond = self._date_filter(table, chosen)
        return stmt if cond is None else stmt.where(cond)

    def read(self, extra_columns: dict[str, set[str]] | None = None, skip: tuple[str, ...] = ()
             ) -> tuple[dict[str, pl.DataFrame], dict[str, TableFormat], list[Problem]]:
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        problems: list[Problem] = []
        raw: dict[str, pl.DataFrame] = {}
        formats: dict[str, TableFormat] = {}
        try:
            conn = self.connect()
        except ConnectError as exc:
            return raw, formats, [Problem(SOURCE_PROBLEM, None, "unreachable", str(exc))]
        with conn:
            listed = set(self.settings.tables)
            for table in TABLES:
                if table in skip:
                    continue
                ts = self.settings.tables.get(table) or SqlTableSettings()
                from_, label = self._from_clause(table, ts)
                try:
                    present = self._present(conn, from_)
                except (DBAPIError, SQLAlchemyError) as exc:
                    conn.rollback()
                    if table not in listed and not TABLES[table].required and _is_missing(exc):
                        continue  # an optional table the database simply does not have
                    problems.append(self._table_problem(conn, table, label, exc))
                    continue
                chosen, map_problems = self.select_for(table, present, ts, label, (extra_columns or {}).get(table))
                problems.extend(map_problems)
                try:
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=".*extra copy.*")
                        df = pl.read_database(self.query_for(table, chosen, from_), connection=conn,
                                              infer_schema_length=None)
                except (DBAPIError, SQLAlchemyError) as exc:
                    conn.rollback()
                    problems.append(self._table_problem(conn, table, label, exc))
                    continue
                raw[table] = _plain_types(df)
                formats[table] = TableFormat(date_formats=dict(ts.date_formats), label=label)
        return raw, formats, problems

    # ------------------------------------------------------------------ push-down

    def dialect(self) -> str:
        """The sqlglot dialect of this database."""
        from health.pushdown import SQLALCHEMY_DIALECTS

        backend = self.url.get_backend_name()
        return SQLALCHEMY_DIALECTS.get(backend, backend)

    def sql_tables(self, conn: Any, tables: tuple[str, ...] = ("usage", "tickets", "invoices", "surveys",
                                                                  "touchpoints", "milestones")) -> dict[str, Any]:
        """Where each event table lives, for `health.pushdown`: the same FROM and column
        mapping this source reads with (names as the database reports them, quoted)."""
        import sqlalchemy as sa
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        from health.pushdown import SqlTable

        out: dict[str, Any] = {}
        for table in tables:
            ts = self.settings.tables.get(table) or SqlTableSettings()
            from_, label = self._from_clause(table, ts)
            try:
                present = self._present(conn, from_)
            except (DBAPIError, SQLAlchemyError):
                conn.rollback()
                continue
            chosen, _ = self.select_for(table, present, ts, label)
            text = str(sa.select(sa.text("*")).select_from(from_).compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            out[table] = SqlTable(query=text, dialect=self.dialect(), columns=chosen, quote=True)
        return out

    def rollup_provider(self, conn: Any, tables: tuple[str, ...] | None = None) -> Any:
        """A `rollup_provider` for `health.features.compute_features`: the windowed roll-ups
        of `tables` (default: every event table) run in this database over `conn`."""
        from health.pushdown import provider, sqlalchemy_runner

        self._check_pushdown()
        return provider(sqlalchemy_runner(conn, self.dialect()), self.sql_tables(conn), tables)

    def pushes_down(self) -> bool:
        """Whether scoring should roll usage up in this database (setting `pushdown`)."""
        from health.pushdown import DIALECTS

        mode = self.settings.pushdown
        if mode == "off":
            return False
        if mode == "on":
            self._check_pushdown()
            return True
        return self.dialect() in DIALECTS

    def _check_pushdown(self) -> None:
        from health.pushdown import DIALECTS, PushdownError

        if self.dialect() not in DIALECTS:
            raise PushdownError(
                f"Source {self.name!r} is a {self.dialect()} database; the roll-ups are pushed down to "
                f"{', '.join(DIALECTS)} only. Compute the features in Polars for this source (load it "
                f"without `skip=` and call compute_features without providers)."
            )

    def state_provider(self, conn: Any, tables: tuple[str, ...] | None = None) -> Any:
        """A `state_provider` for `compute_features`: latest / days_since / open_count /
        open_max_age / max_days_overdue computed in this database over `conn`."""
        from health.pushdown import sqlalchemy_runner, state_provider

        self._check_pushdown()
        return state_provider(sqlalchemy_runner(conn, self.dialect()), self.sql_tables(conn), tables)

    def _table_problem(self, conn: Any, table: str, label: str, exc: BaseException) -> Problem:
        detail = _scrub(_first_line(exc), self.url)
        if _is_missing(exc):
            names: list[str] = []
            try:
                import sqlalchemy as sa

                names = sa.inspect(conn).get_table_names(schema=self.settings.schema_)
            except Exception:  # noqa: BLE001 - the listing is only a hint
                pass
            guess = did_you_mean(label.split(".")[-1], names)
            return Problem(
                table, None, "missing_table",
                f"Table {table!r} of source {self.name!r} reads {label}, which the database does not "
                f"have or this user cannot see ({detail})."
                + (f" Did you mean {guess!r}?" if guess else "")
                + (f" Tables found: {', '.join(sorted(names)[:20])}." if names else "")
                + f" Set `table:` for {table!r} in {CONFIG_FILE}, or grant the user SELECT on it.",
            )
        return Problem(
            table, None, "unreadable_table",
            f"Table {table!r} of source {self.name!r} ({label}) cannot be read: {detail}. Check the "
            f"table, its `query:` and the user's permissions in {CONFIG_FILE}.",
        )

    def load(self, extra_columns: dict[str, set[str]] | None = None, skip: tuple[str, ...] = ()) -> LoadResult:
        """Read and validate every table but `skip` (e.g. `("usage",)` when its roll-ups
        run in the database: see `rollup_provider`)."""
        raw, formats, read_problems = self.read(extra_columns, skip)
        if any(p.kind == "unreachable" for p in read_problems):
            return LoadResult(source=self.name, tables={}, problems=read_problems)
        result = validate(raw, self.name, formats)
        result.problems[:0] = read_problems
        return result


def choose_columns(source: str, table: str, present: list[str], ts: SqlTableSettings, label: str,
                   extra: set[str] | None = None) -> tuple[dict[str, str], list[Problem]]:
    """The database columns to read and their canonical names ({theirs: ours}): the
    mapped ones, the canonical ones (matched case-insensitively), every column of
    `accounts`, and `keep:`; a mapped or kept column the table lacks is a Problem."""
    spec = TABLES[table]
    problems: list[Problem] = []
    by_lower = {c.lower(): c for c in present}
    chosen: dict[str, str] = {}
    for theirs, ours in ts.columns.items():
        found = theirs if theirs in present else by_lower.get(theirs.lower())
        if found is None:
            guess = did_you_mean(theirs, present)
            problems.append(Problem(
                table, ours, "missing_column",
                f"Table {table!r} ({label}) of source {source!r}: `columns:` maps {theirs!r} to "
                f"{ours!r}, but there is no column {theirs!r} (columns: {', '.join(present) or 'none'})."
                + (f" Did you mean {guess!r}?" if guess else "") + f" Fix the mapping in {CONFIG_FILE}.",
            ))
            continue
        chosen[found] = ours
    mapped = set(chosen.values())
    wanted: list[str] = [c.name for c in spec.columns]
    if table == "accounts":
        wanted += [c for c in present if c.lower() not in {w.lower() for w in wanted}]
    wanted += list(ts.keep) + sorted(extra or ())
    for w in wanted:
        found = w if w in present else by_lower.get(w.lower())
        if found is None or found in chosen or w.lower() in {m.lower() for m in mapped}:
            if found is None and w in ts.keep:
                problems.append(Problem(
                    table, w, "missing_column",
                    f"Table {table!r} ({label}) of source {source!r}: `keep:` names {w!r}, which "
                    f"is not a column (columns: {', '.join(present)}). Fix `keep:` in {CONFIG_FILE}.",
                ))
            continue
        canon = spec.column(w.lower()) if spec.column(w) is None else spec.column(w)
        chosen[found] = canon.name if canon is not None else found
    return chosen, problems


def _q(name: str) -> Any:
    """An identifier quoted as written: the name the database reported (or ours)."""
    from sqlalchemy.sql import quoted_name

    return quoted_name(name, quote=True)


def _col(name: str) -> Any:
    import sqlalchemy as sa

    return sa.column(_q(name))


class ConnectError(RuntimeError):
    """The database cannot be reached; the message names the source and the fix."""


_MISSING = re.compile(r"does not exist|no such table|not found|doesn't exist|invalid object name|"
                      r"unknown table|catalog error", re.I)


def _is_missing(exc: BaseException) -> bool:
    return bool(_MISSING.search(str(getattr(exc, "orig", None) or exc)))


def _plain_types(df: pl.DataFrame) -> pl.DataFrame:
    """Database types the contract does not know: decimals as floats, tz-aware
    timestamps as UTC wall time."""
    fixes = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Decimal):
            fixes.append(pl.col(name).cast(pl.Float64))
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            fixes.append(pl.col(name).dt.convert_time_zone("UTC").dt.replace_time_zone(None))
        elif isinstance(dtype, pl.Object):
            fixes.append(pl.col(name).map_elements(lambda v: None if v is None else str(v), return_dtype=pl.String))
    return df.with_columns(fixes) if fixes else df


@register("sql")
def build_sql_source(name: str, settings: dict[str, Any], *, base_dir: str = ".") -> SqlSource:
    return SqlSource(name, parse_settings(name, settings), base_dir=base_dir)
