"""Databricks SQL (a SQL warehouse or cluster) through `databricks-sql-connector` — the
"databricks" source kind.

```yaml
sources:
  lakehouse:
    kind: databricks
    connection: databricks         # [connections.databricks] in .streamlit/secrets.toml:
                                   #   server_hostname, http_path, access_token, catalog, schema
    since: 730d                    # optional: event tables from this date on
    tables:                        # like kind: sql — table (catalog.schema.table) or query
      usage: {table: main.cs.daily_usage, columns: {usage_date: date, metric_name: metric}}
```

Statements are generated with sqlglot in the Databricks dialect; the date range goes as
a native named parameter (`:since`), never pasted. Results come back as Arrow. The same
column choice and per-table failures as kind `sql`; the push-down runs here too
(`rollup_provider` / `state_provider`).
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
from sources.sql import (
    CONFIG_FILE,
    OPEN_END,
    SECRETS_FILE,
    SOURCE_PROBLEM,
    ConnectError,
    SqlTableSettings,
    _plain_types,
    choose_columns,
)

DIALECT = "databricks"


class DatabricksSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection: str
    secrets_file: str = SECRETS_FILE
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

    def since_date(self, today: dt.date | None = None) -> dt.date | None:
        if self.since is None or isinstance(self.since, dt.date):
            return self.since
        return (today or dt.date.today()) - dt.timedelta(days=parse_days(self.since))


def parse_settings(name: str, settings: dict[str, Any]) -> DatabricksSettings:
    try:
        parsed = DatabricksSettings.model_validate(settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            allowed = list(SqlTableSettings.model_fields if len(loc) >= 3 else DatabricksSettings.model_fields)
            guess = did_you_mean(str(loc[-1]), allowed)
            msg = f"unknown setting {loc[-1]!r} (allowed: {', '.join(allowed)})" + (
                f"; did you mean {guess!r}?" if guess else "")
        elif first["type"] == "missing" and loc == ("connection",):
            msg = "add `connection: <name>` ([connections.<name>] in .streamlit/secrets.toml)"
        err = SourceConfigError(
            f"Source {name!r} (kind databricks) in {CONFIG_FILE} has an invalid setting "
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


class DatabricksSource:
    """The canonical tables read from Databricks SQL."""

    def __init__(self, name: str, settings: DatabricksSettings, *, base_dir: str | Path = ".",
                 secrets: dict[str, Any] | None = None, connect_args: dict[str, Any] | None = None,
                 today: dt.date | None = None):
        self.name = name
        self.settings = settings
        self.base_dir = Path(base_dir)
        self.today = today
        self.connect_args = dict(connect_args or {})
        self.conf = self._conf(secrets)

    def _conf(self, secrets: dict[str, Any] | None) -> dict[str, Any]:
        if secrets is None:
            path = Path(self.settings.secrets_file)
            path = path if path.is_absolute() else self.base_dir / path
            try:
                secrets = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            except (tomllib.TOMLDecodeError, OSError) as exc:
                raise SourceConfigError(f"Source {self.name!r}: {path} is not readable TOML ({type(exc).__name__}).") from None
        conf = (secrets.get("connections") or {}).get(self.settings.connection)
        if not isinstance(conf, dict):
            err = SourceConfigError(
                f"Source {self.name!r} (kind databricks) uses `connection: {self.settings.connection}`, but "
                f"{self.settings.secrets_file} has no [connections.{self.settings.connection}] section. Add one "
                f"with server_hostname, http_path and access_token (and catalog, schema)."
            )
            err.loc = ("connection",)  # type: ignore[attr-defined]
            raise err
        missing = [k for k in ("server_hostname", "http_path", "access_token") if not conf.get(k)]
        if missing:
            err = SourceConfigError(
                f"Source {self.name!r}: [connections.{self.settings.connection}] in {self.settings.secrets_file} "
                f"needs {', '.join(missing)} (from the SQL warehouse's Connection details)."
            )
            err.loc = ("connection",)  # type: ignore[attr-defined]
            raise err
        return conf

    def describe(self) -> str:
        where = ".".join(p for p in (self.conf.get("catalog"), self.conf.get("schema")) if p)
        return f"Databricks SQL {self.conf['server_hostname']}{self.conf['http_path']}" + (f" ({where})" if where else "")

    def connect(self) -> Any:
        try:
            from databricks import sql
        except ImportError:
            raise ConnectError(
                f"Source {self.name!r} (kind databricks) needs databricks-sql-connector, which is not "
                f"installed: pip install 'databricks-sql-connector[pyarrow]' (see docs/warehouses.md)."
            ) from None
        args = {k: self.conf[k] for k in ("catalog", "schema") if self.conf.get(k)}
        try:
            return sql.connect(server_hostname=self.conf["server_hostname"], http_path=self.conf["http_path"],
                               access_token=self.conf["access_token"], enable_telemetry=False,
                               **args, **self.connect_args)
        except Exception as exc:  # noqa: BLE001 - the connector's errors vary (RequestError, ...)
            detail = (str(exc).splitlines() or [type(exc).__name__])[0].strip() or type(exc).__name__
            detail = detail.replace(str(self.conf["access_token"]), "***")
            raise ConnectError(
                f"Source {self.name!r} cannot connect to Databricks SQL at {self.conf['server_hostname']}"
                f"{self.conf['http_path']}: {detail}. To fix it, check the access token (is it valid and not "
                f"expired?), server_hostname and http_path in [connections.{self.settings.connection}] of "
                f"{self.settings.secrets_file}, and that the warehouse is running."
            ) from None

    # --------------------------------------------------------------------- reading

    def _from(self, table: str, ts: SqlTableSettings) -> tuple[Any, str]:
        import sqlglot
        from sqlglot import exp

        if ts.query:
            return exp.Subquery(this=sqlglot.parse_one(ts.query, read=DIALECT),
                                alias=exp.TableAlias(this=exp.to_identifier("src"))), f"query for {table}"
        name = ts.table or table
        return exp.to_table(name, dialect=DIALECT), name

    def _statement(self, table: str, chosen: dict[str, str], from_: Any) -> tuple[str, dict[str, Any]]:
        from sqlglot import exp

        cols = [exp.alias_(exp.column(exp.to_identifier(th, quoted=True)), ours, quoted=True)
                for th, ours in chosen.items()]
        query = exp.select(*cols).from_(from_.copy())
        params: dict[str, Any] = {}
        theirs = {v: k for k, v in chosen.items()}
        tcol = TABLES[table].time_column
        since, until = self.settings.since_date(self.today), self.settings.until
        if table not in ("accounts", "outcomes") and tcol in theirs:
            c = exp.column(exp.to_identifier(theirs[tcol], quoted=True))
            if since is not None:
                params["since"] = since
                cond: exp.Expression = exp.GTE(this=c, expression=exp.Placeholder(this="since"))
                end = OPEN_END.get(table)
                if end in theirs:
                    e = exp.column(exp.to_identifier(theirs[end], quoted=True))
                    cond = exp.or_(cond, exp.Is(this=e.copy(), expression=exp.Null()),
                                   exp.GTE(this=e, expression=exp.Placeholder(this="since")))
                query = query.where(cond)
            if until is not None:
                params["until"] = until + dt.timedelta(days=1)
                query = query.where(exp.LT(this=c.copy(), expression=exp.Placeholder(this="until")))
        return query.sql(dialect=DIALECT), params

    def read(self, skip: tuple[str, ...] = ()) -> tuple[dict[str, pl.DataFrame], dict[str, TableFormat], list[Problem]]:
        from sqlglot import exp

        raw: dict[str, pl.DataFrame] = {}
        formats: dict[str, TableFormat] = {}
        problems: list[Problem] = []
        try:
            conn = self.connect()
        except ConnectError as exc:
            return raw, formats, [Problem(SOURCE_PROBLEM, None, "unreachable", str(exc))]
        listed = set(self.settings.tables)
        try:
            with conn.cursor() as cur:
                for table in TABLES:
                    if table in skip:
                        continue
                    ts = self.settings.tables.get(table) or SqlTableSettings()
                    from_, label = self._from(table, ts)
                    try:
                        cur.execute(exp.select("*").from_(from_.copy()).limit(0).sql(dialect=DIALECT))
                        present = [d[0] for d in cur.description]
                        cur.fetchall_arrow()
                    except Exception as exc:  # noqa: BLE001 - ServerOperationError, DatabaseError
                        if table not in listed and not TABLES[table].required:
                            continue
                        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
                        problems.append(Problem(
                            table, None, "missing_table",
                            f"Table {table!r} of source {self.name!r} reads {label}, which cannot be read "
                            f"({detail}). Set `table:` for {table!r} in {CONFIG_FILE} (catalog.schema.table), "
                            f"or grant the user SELECT on it.",
                        ))
                        continue
                    chosen, map_problems = choose_columns(self.name, table, present, ts, label)
                    problems.extend(map_problems)
                    text, params = self._statement(table, chosen, from_)
                    try:
                        cur.execute(text, params or None)
                        df = pl.from_arrow(cur.fetchall_arrow())
                    except Exception as exc:  # noqa: BLE001
                        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
                        problems.append(Problem(table, None, "unreadable_table",
                                                f"Table {table!r} of source {self.name!r} ({label}) cannot be read: {detail}."))
                        continue
                    raw[table] = _plain_types(df)  # type: ignore[arg-type]
                    formats[table] = TableFormat(date_formats=dict(ts.date_formats), label=label)
        finally:
            conn.close()
        return raw, formats, problems

    def load(self, skip: tuple[str, ...] = ()) -> LoadResult:
        raw, formats, read_problems = self.read(skip)
        if any(p.kind == "unreachable" for p in read_problems):
            return LoadResult(source=self.name, tables={}, problems=read_problems)
        result = validate(raw, self.name, formats)
        result.problems[:0] = read_problems
        return result

    # ------------------------------------------------------------------ push-down

    def sql_tables(self, conn: Any, tables: tuple[str, ...] = ("usage", "tickets", "invoices", "surveys",
                                                                  "touchpoints", "milestones")) -> dict[str, Any]:
        from sqlglot import exp

        from health.pushdown import SqlTable

        out: dict[str, Any] = {}
        with conn.cursor() as cur:
            for table in tables:
                ts = self.settings.tables.get(table) or SqlTableSettings()
                from_, label = self._from(table, ts)
                try:
                    cur.execute(exp.select("*").from_(from_.copy()).limit(0).sql(dialect=DIALECT))
                    present = [d[0] for d in cur.description]
                    cur.fetchall_arrow()
                except Exception:  # noqa: BLE001 - a table this source does not have
                    continue
                chosen, _ = choose_columns(self.name, table, present, ts, label)
                out[table] = SqlTable(query=exp.select("*").from_(from_.copy()).sql(dialect=DIALECT),
                                      dialect=DIALECT, columns=chosen, quote=True)
        return out

    def rollup_provider(self, conn: Any, tables: tuple[str, ...] | None = None) -> Any:
        from health.pushdown import provider

        return provider(databricks_runner(conn), self.sql_tables(conn), tables)

    def state_provider(self, conn: Any, tables: tuple[str, ...] | None = None) -> Any:
        from health.pushdown import state_provider

        return state_provider(databricks_runner(conn), self.sql_tables(conn), tables)


def databricks_runner(conn: Any) -> Any:
    """Run compiled roll-ups on a databricks-sql-connector connection (native `:name`
    parameters, Arrow results)."""

    def run(r: Any) -> pl.DataFrame:
        text, params = r.sql(DIALECT, "named")
        with conn.cursor() as cur:
            cur.execute(text, params)
            df = pl.from_arrow(cur.fetchall_arrow())
        return df if df.height else r.empty()  # type: ignore[union-attr]

    return run


@register("databricks")
def build_databricks_source(name: str, settings: dict[str, Any], *, base_dir: str = ".") -> DatabricksSource:
    return DatabricksSource(name, parse_settings(name, settings), base_dir=base_dir)
