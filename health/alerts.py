"""Alerts (`config/alerts.yaml`): who is told what, when, over which channel.

A **rule** is one of five kinds, each turned into an SQL condition over the scored summary
row (the columns `health.trajectory.summarize` gives, the account columns and
`days_to_renewal` — the same columns a play's `when` may use, see health/playbooks.py):

    tier_entered: at_risk                     tier = 'at_risk' AND tier 4 weeks ago was not
    score_drop: { points: 10, weeks: 4 }      change_4w <= -10   (weeks: 1, 4 or 12)
    falling: true                             the trajectory flag (weights.yaml `trajectory`)
    condition: "days_overdue > 60"            any SQL condition (a signal crossing a threshold)
    renewal_within: { days: 90, tiers: [at_risk, watch] }

plus an optional `when:` (SQL, ANDed: e.g. only enterprise accounts). Conditions are parsed
by Polars (`pl.sql_expr`), checked against the summary's columns when the file is loaded
(every problem at once, file:line, "did you mean") and never evaluated as Python.

Per rule: `persistence` (the condition must hold on K consecutive stored runs before the
alert fires), `cooldown_days` (per account: no second alert of the rule within that many
days of the last one), `severity`, `notify` (routing: `owner` — accounts.owner mapped
through config/roles.yaml, else accounts.owner_email —, `manager` — the owner's manager
in roles.yaml —, `segment` — the channel named for the account's health segment under
`segment_channels` —, or a channel name) and `digest` (the recipients get the day's alerts
in one message instead of one message per alert; a recipient may ask for that too under
`recipients:`).

The state lives in SQLite next to the actions (data/state.db, or $CHI_STATE_DB):
`runs` (one per as-of day), `score_snapshots` (account, as_of, score, tier, segment, model
hash), `alert_hits` (which rule held for which account on which run: persistence is
counted over these), `alerts` (what fired, with the message content frozen at fire time,
acknowledgements) and `alert_deliveries` (one per alert x channel x recipient: pending,
sending, delivered, failed — with the error —, expired, or skipped by a `--no-send` run). Everything is keyed so that a
second run for the same day writes nothing twice and sends nothing twice; a delivery that
failed is retried by the next run (for `delivery.max_age_days`, then marked expired).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import polars as pl
from pydantic import Field, ValidationError, model_validator

from health.model import HealthModel, Strict
from health.model_loader import check_condition
from health.notify import (
    SEVERITIES,
    AlertItem,
    Notice,
    Notifier,
    account_link,
    alert_notice,
    digest_notice,
)
from health.state_db import SqliteStore
from health.yaml_config import EMAIL, did_you_mean, parse_yaml, plain, read_text

UTC = dt.timezone.utc
ROUTES: tuple[str, ...] = ("owner", "manager", "segment")
PEOPLE_ROUTES = ("owner", "manager")
TIERS: tuple[str, ...] = ("at_risk", "watch", "healthy", "insufficient_data")
KINDS: tuple[str, ...] = ("tier_entered", "score_drop", "falling", "condition", "renewal_within")
BASE_URL_ENV = "CHI_BASE_URL"

# ------------------------------------------------------------------------------ schema


class ScoreDrop(Strict):
    points: float = Field(gt=0, le=100)
    weeks: Literal[1, 4, 12] = 4


class RenewalWithin(Strict):
    days: int = Field(ge=1, le=730)
    tiers: list[Literal["at_risk", "watch", "healthy", "insufficient_data"]] = Field(
        default_factory=lambda: ["at_risk", "watch"]
    )


class ChannelDef(Strict):
    kind: Literal["slack", "teams", "email"]
    label: str | None = None
    secret: str | None = None
    """The key under [alert_webhooks] in .streamlit/secrets.toml (default: the channel name)."""
    env: str | None = None
    """The environment variable holding the webhook URL (default CHI_WEBHOOK_<NAME>)."""
    timeout_seconds: float = Field(default=10, gt=0, le=120)

    def secret_key(self, name: str) -> str:
        return self.secret or name

    def env_name(self, name: str) -> str:
        return self.env or "CHI_WEBHOOK_" + "".join(c if c.isalnum() else "_" for c in name).upper()


class RecipientPref(Strict):
    digest: bool = False


class DeliveryPolicy(Strict):
    max_age_days: int = Field(default=7, ge=1, le=90)
    """A delivery still failing (or waiting for an unconfigured channel) after this many
    days is marked `expired` instead of being sent late."""


class RuleDef(Strict):
    title: str | None = None
    description: str | None = None
    enabled: bool = True
    tier_entered: Literal["at_risk", "watch", "healthy", "insufficient_data"] | None = None
    score_drop: ScoreDrop | None = None
    falling: Literal[True] | None = None
    condition: str | None = None
    renewal_within: RenewalWithin | None = None
    when: str | None = None
    persistence: int = Field(default=1, ge=1, le=30)
    cooldown_days: int = Field(default=14, ge=0, le=365)
    severity: Literal["info", "warning", "critical"] = "warning"
    notify: list[str] = Field(default_factory=lambda: ["owner"])
    digest: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> "RuleDef":
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a rule needs exactly one of {', '.join(KINDS)}"
                + (f" (it has {', '.join(kinds)})" if kinds else "")
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)


class AlertsFile(Strict):
    version: int | str | None = None
    description: str | None = None
    base_url: str = "http://localhost:8501"
    people_channel: str | None = "email"
    channels: dict[str, ChannelDef] = Field(default_factory=dict)
    segment_channels: dict[str, str] = Field(default_factory=dict)
    recipients: dict[str, RecipientPref] = Field(default_factory=dict)
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    rules: dict[str, RuleDef] = Field(default_factory=dict)


# ----------------------------------------------------------------------- conditions


def _q(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def rule_sql(rule: RuleDef) -> str:
    """The rule as one SQL condition over the summary row."""
    if rule.tier_entered is not None:
        t = _q(rule.tier_entered)
        sql = f"tier = {t} AND coalesce(tier_4w_ago, '') <> {t}"
    elif rule.score_drop is not None:
        sql = f"change_{rule.score_drop.weeks}w <= -{rule.score_drop.points:g}"
    elif rule.falling is not None:
        sql = "falling"
    elif rule.renewal_within is not None:
        tiers = ", ".join(_q(t) for t in rule.renewal_within.tiers)
        sql = f"days_to_renewal >= 0 AND days_to_renewal <= {rule.renewal_within.days} AND tier IN ({tiers})"
    else:
        sql = str(rule.condition)
    return f"({sql}) AND ({rule.when})" if rule.when else sql


def _tier_words(col: str) -> pl.Expr:
    words = {"at_risk": "at risk", "watch": "watch", "healthy": "healthy", "insufficient_data": "insufficient data"}
    return pl.col(col).replace(words).fill_null("unknown")


def reason_expr(rule: RuleDef, title: str, schema: Mapping[str, pl.DataType] | None = None) -> pl.Expr:
    """Why the rule fired for this account, in words (frozen into the alert). `schema`:
    the frame's, so a threshold rule's numbers are rounded."""
    if rule.tier_entered is not None:
        return pl.when(pl.col("tier_4w_ago").is_null()).then(
            pl.format("Now {} (not scored 4 weeks ago: a new account)", _tier_words("tier"))
        ).otherwise(pl.format("Now {} (4 weeks ago: {})", _tier_words("tier"), _tier_words("tier_4w_ago")))
    if rule.score_drop is not None:
        w = rule.score_drop.weeks
        return pl.format("Score fell {} points in {} week{}", (-pl.col(f"change_{w}w")).round(0).cast(pl.Int64),
                         pl.lit(w), pl.lit("s" if w != 1 else ""))
    if rule.falling is not None:
        return pl.col("falling_reason").fill_null("Falling trajectory")
    if rule.renewal_within is not None:
        return pl.format("Renewal in {} days while {}", pl.col("days_to_renewal"), _tier_words("tier"))
    # a threshold rule: say the values it read, e.g. "Invoice 60+ days overdue (days_overdue = 114)"
    cols = list(dict.fromkeys(pl.sql_expr(str(rule.condition)).meta.root_names()))[:4]
    head = rule.description or title
    if not cols:
        return pl.lit(head)
    def shown(c: str) -> pl.Expr:
        dtype = (schema or {}).get(c)
        if dtype is not None and dtype.is_float():
            return pl.col(c).round(2).cast(pl.String).str.strip_suffix(".0")
        return pl.col(c).cast(pl.String)

    values = [pl.concat_str(pl.lit(f"{c} = "), shown(c), ignore_nulls=False).fill_null(f"{c} = n/a") for c in cols]
    return pl.format("{} ({})", pl.lit(head), pl.concat_str(values, separator=", "))


@dataclass(frozen=True)
class LoadedAlerts:
    spec: AlertsFile
    path: str = "config/alerts.yaml"
    text: str = ""
    warnings: tuple[Any, ...] = ()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    @property
    def rules(self) -> dict[str, RuleDef]:
        return {k: r for k, r in self.spec.rules.items() if r.enabled}

    def title(self, key: str) -> str:
        r = self.spec.rules[key]
        return r.title or key.replace("_", " ").capitalize()

    def base_url(self, environ: Mapping[str, str] | None = None) -> str:
        import os

        env = os.environ if environ is None else environ
        return (env.get(BASE_URL_ENV) or self.spec.base_url).rstrip("/")


def condition_schema(model: HealthModel) -> dict[str, pl.DataType]:
    from health.playbooks import summary_schema

    return summary_schema(model)


def parse_alerts(text: str, model: HealthModel, file: str = "config/alerts.yaml") -> LoadedAlerts:
    """Validate alerts.yaml text against `model`; raise `ConfigError` listing every problem."""
    what = "the alert rules"
    doc, col = parse_yaml(text, file, what)
    data = plain(doc) if doc is not None else {}
    if not col.top_level(data, AlertsFile, ()):
        col.raise_if_errors()
    channels = col.each(("channels",), data.get("channels"), ChannelDef)
    rules = col.each(("rules",), data.get("rules"), RuleDef)
    recipients = col.each(("recipients",), data.get("recipients"), RecipientPref)
    delivery = col.one(("delivery",), data.get("delivery") or {}, DeliveryPolicy)
    scalars: dict[str, Any] = {}
    for key in ("version", "description", "base_url", "people_channel", "segment_channels"):
        if key in data:
            try:
                AlertsFile.model_validate({key: data[key]})
                scalars[key] = data[key]
            except ValidationError as exc:
                col.pydantic((), exc, AlertsFile)
    raw_channels = data.get("channels") if isinstance(data.get("channels"), dict) else {}
    names = [str(n) for n in raw_channels]
    base_url = str(scalars.get("base_url", AlertsFile().base_url))
    if not base_url.startswith(("http://", "https://")):
        col.add(("base_url",), f"'{base_url}' must start with http:// or https:// (the app's address, for deep links)")
    people = scalars.get("people_channel", "email") if "people_channel" in data else ("email" if "email" in names else None)
    if people is not None:
        if people not in names:
            col.add(("people_channel",), f"unknown channel '{people}'{did_you_mean(people, names)}; channels: {', '.join(names) or 'none'}")
        elif people in channels and channels[people].kind != "email":
            col.add(("people_channel",), f"channel '{people}' is a {channels[people].kind} webhook; people are reached by e-mail (kind: email)")
    for seg, ch in (scalars.get("segment_channels") or {}).items():
        if seg not in model.segments:
            col.add(("segment_channels", seg), f"unknown segment '{seg}'{did_you_mean(seg, model.segments)}; segments: {', '.join(model.segments)}")
        if ch not in names:
            col.add(("segment_channels", seg), f"unknown channel '{ch}'{did_you_mean(ch, names)}")
    for who in recipients:
        if not EMAIL.match(who) and who not in names:
            col.add(("recipients", who), f"'{who}' is neither an e-mail address nor a channel{did_you_mean(who, names)}")
    schema = condition_schema(model)
    for key, rule in rules.items():
        base = ("rules", key)
        for part in ("condition", "when"):
            text_ = getattr(rule, part)
            if text_ is not None:
                problem = check_condition(text_, schema)
                if problem:
                    col.add(base + (part,), problem)
        for i, target in enumerate(rule.notify):
            if target in ROUTES or target in names:
                if target in PEOPLE_ROUTES and people is None:
                    col.add(base + ("notify", i), f"'{target}' is a person: set people_channel to an e-mail channel")
                if target == "segment" and not scalars.get("segment_channels"):
                    col.add(base + ("notify", i), "'segment' needs segment_channels (health segment -> channel)")
                continue
            col.add(base + ("notify", i),
                    f"unknown recipient '{target}'{did_you_mean(target, [*ROUTES, *names])}; use owner, manager, segment or a channel: {', '.join(names) or 'none'}")
        if not rule.notify:
            col.add(base + ("notify",), "notify nobody? list owner, manager, segment or a channel")
    col.raise_if_errors()
    spec = AlertsFile.model_validate({
        **scalars, "people_channel": people, "channels": channels, "rules": rules, "recipients": recipients,
        "delivery": delivery or DeliveryPolicy(),
    })
    return LoadedAlerts(spec=spec, path=file, text=text, warnings=tuple(i for i in col.issues if i.severity != "error"))


def load_alerts(path: str | Path, model: HealthModel) -> LoadedAlerts:
    """The alert rules; a missing file gives no rules (nothing is sent)."""
    if not Path(path).exists():
        return LoadedAlerts(spec=AlertsFile(people_channel=None), path=str(path))
    return parse_alerts(read_text(path, "the alert rules"), model, str(path))


# ------------------------------------------------------------------------------- store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    as_of TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    last_run_at TEXT NOT NULL,
    run_count INTEGER NOT NULL DEFAULT 1,
    model_hash TEXT,
    source TEXT,
    accounts INTEGER,
    snapshot_at TEXT,
    evaluated_at TEXT,
    fired INTEGER
);
CREATE TABLE IF NOT EXISTS score_snapshots (
    account_id TEXT NOT NULL,
    as_of TEXT NOT NULL,
    score REAL,
    tier TEXT,
    segment TEXT,
    model_hash TEXT,
    PRIMARY KEY (account_id, as_of)
);
CREATE INDEX IF NOT EXISTS score_snapshots_as_of ON score_snapshots (as_of);
CREATE TABLE IF NOT EXISTS alert_hits (
    rule TEXT NOT NULL,
    account_id TEXT NOT NULL,
    as_of TEXT NOT NULL,
    PRIMARY KEY (rule, account_id, as_of)
);
CREATE INDEX IF NOT EXISTS alert_hits_as_of ON alert_hits (as_of, rule);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    account_id TEXT NOT NULL,
    as_of TEXT NOT NULL,
    fired_at TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    item TEXT NOT NULL,
    acknowledged_at TEXT,
    acknowledged_by TEXT,
    ack_note TEXT,
    UNIQUE (rule, account_id, as_of)
);
CREATE INDEX IF NOT EXISTS alerts_account ON alerts (account_id, as_of);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    digest INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    last_attempt_at TEXT,
    delivered_at TEXT,
    receipt TEXT,
    error TEXT,
    UNIQUE (alert_id, channel, recipient)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_status ON alert_deliveries (status, channel);
"""

DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed", "expired", "skipped")
STALE_SENDING = dt.timedelta(minutes=15)


def _iso(v: dt.datetime) -> str:
    return v.astimezone(UTC).isoformat(timespec="seconds")


def _ts(v: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(v) if v else None


class AlertStore(SqliteStore):
    """Runs, score snapshots, alert hits, alerts and deliveries in the state database
    (shared with the action store; this class touches only its own tables)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], dt.datetime] | None = None):
        super().__init__(path, _SCHEMA, clock=clock)
        cols = {r["name"] for r in self._con.execute("PRAGMA table_info(runs)")}
        for col, kind in (("last_code", "INTEGER"), ("last_report", "TEXT")):
            if col not in cols:
                self._con.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    # -- runs and snapshots --------------------------------------------------------------
    def start_run(self, as_of: dt.date, model_hash: str | None = None, source: str | None = None) -> bool:
        """Record a run for `as_of`; True when it is the day's first."""
        now = _iso(self.now())
        with self.tx() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO runs (as_of, started_at, last_run_at, model_hash, source) VALUES (?, ?, ?, ?, ?)",
                (as_of.isoformat(), now, now, model_hash, source),
            )
            if cur.rowcount == 0:
                con.execute("UPDATE runs SET last_run_at = ?, run_count = run_count + 1 WHERE as_of = ?", (now, as_of.isoformat()))
                return False
            return True

    def record_report(self, as_of: dt.date, code: int, text: str) -> None:
        """Keep the latest run's exit code and summary lines for the day (for the app)."""
        with self.tx() as con:
            con.execute("UPDATE runs SET last_code = ?, last_report = ? WHERE as_of = ?", (code, text, as_of.isoformat()))

    def run(self, as_of: dt.date) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM runs WHERE as_of = ?", (as_of.isoformat(),))
        return dict(rows[0]) if rows else None

    def runs(self) -> pl.DataFrame:
        rows = self.query("SELECT as_of, started_at, last_run_at, run_count, model_hash, source, accounts, snapshot_at, "
                          "evaluated_at, fired, last_code, last_report FROM runs ORDER BY as_of")
        schema = {"as_of": pl.String, "started_at": pl.String, "last_run_at": pl.String, "run_count": pl.Int64,
                  "model_hash": pl.String, "source": pl.String, "accounts": pl.Int64, "snapshot_at": pl.String,
                  "evaluated_at": pl.String, "fired": pl.Int64, "last_code": pl.Int64, "last_report": pl.String}
        return pl.DataFrame([dict(r) for r in rows], schema=schema, orient="row").with_columns(pl.col("as_of").str.to_date())

    def evaluated_runs_before(self, as_of: dt.date, n: int) -> list[dt.date]:
        """The `n` latest evaluated runs strictly before `as_of`, newest first."""
        if n <= 0:
            return []
        rows = self.query(
            "SELECT as_of FROM runs WHERE evaluated_at IS NOT NULL AND as_of < ? ORDER BY as_of DESC LIMIT ?",
            (as_of.isoformat(), n),
        )
        return [dt.date.fromisoformat(r["as_of"]) for r in rows]

    def store_snapshot(self, frame: pl.DataFrame, as_of: dt.date, model_hash: str) -> int:
        """Store (account_id, score, tier, segment) for `as_of`; rows already stored for
        that day are kept as they are. Returns how many rows were written."""
        seg = "health_segment" if "health_segment" in frame.columns else "segment"
        rows = [
            (r["account_id"], as_of.isoformat(), r["score"], r["tier"], r.get(seg), model_hash)
            for r in frame.select("account_id", "score", "tier", pl.col(seg)).iter_rows(named=True)
        ]
        with self.tx() as con:
            before = con.total_changes
            con.executemany(
                "INSERT OR IGNORE INTO score_snapshots (account_id, as_of, score, tier, segment, model_hash) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            written = con.total_changes - before
            con.execute(
                "UPDATE runs SET snapshot_at = coalesce(snapshot_at, ?), accounts = coalesce(accounts, ?) WHERE as_of = ?",
                (_iso(self.now()), len(rows), as_of.isoformat()),
            )
        return written

    def snapshots(self, account_id: str | None = None) -> pl.DataFrame:
        sql = "SELECT account_id, as_of, score, tier, segment, model_hash FROM score_snapshots"
        params: tuple[Any, ...] = ()
        if account_id is not None:
            sql += " WHERE account_id = ?"
            params = (account_id,)
        rows = self.query(sql + " ORDER BY as_of, account_id", params)
        schema = {"account_id": pl.String, "as_of": pl.String, "score": pl.Float64, "tier": pl.String,
                  "segment": pl.String, "model_hash": pl.String}
        return pl.DataFrame([dict(r) for r in rows], schema=schema, orient="row").with_columns(pl.col("as_of").str.to_date())

    # -- alerts ------------------------------------------------------------------------------
    def acknowledge(self, alert_id: int, by: str, note: str = "") -> bool:
        """Mark an alert acknowledged (the first acknowledgement is kept). True if it was new."""
        with self.tx() as con:
            if con.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is None:
                raise KeyError(f"no alert {alert_id}")
            cur = con.execute(
                "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ?, ack_note = ? WHERE id = ? AND acknowledged_at IS NULL",
                (_iso(self.now()), by, note or None, alert_id),
            )
            return cur.rowcount == 1

    def skip_deliveries(self, alert_ids: Sequence[int], why: str) -> int:
        """Mark the pending deliveries of `alert_ids` skipped (recorded, never sent)."""
        if not alert_ids:
            return 0
        marks = ",".join("?" * len(alert_ids))
        with self.tx() as con:
            return con.execute(
                f"UPDATE alert_deliveries SET status = 'skipped', error = ? WHERE status = 'pending' AND alert_id IN ({marks})",
                (why, *alert_ids),
            ).rowcount

    def delivery_counts(self) -> dict[str, int]:
        rows = self.query("SELECT status, count(*) AS n FROM alert_deliveries GROUP BY status ORDER BY status")
        return {r["status"]: r["n"] for r in rows}


# -------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    as_of: dt.date
    already: bool = False
    held: dict[str, int] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    """Held, but not yet on `persistence` consecutive runs."""
    cooling: dict[str, int] = field(default_factory=dict)
    """Held long enough, but the account was alerted within the cooldown."""
    deliveries: int = 0
    unrouted: list[str] = field(default_factory=list)
    alert_ids: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        if self.already:
            return f"alerts: already evaluated for {self.as_of} (nothing new)"
        fired = sum(self.fired.values())
        parts = [f"{sum(self.held.values())} conditions held", f"{fired} alert{'s' if fired != 1 else ''} fired"]
        if any(self.waiting.values()):
            parts.append(f"{sum(self.waiting.values())} waiting for persistence")
        if any(self.cooling.values()):
            parts.append(f"{sum(self.cooling.values())} in cooldown")
        parts.append(f"{self.deliveries} deliveries queued")
        if self.unrouted:
            parts.append(f"{len(self.unrouted)} without a recipient")
        detail = ", ".join(f"{k} {v}" for k, v in self.fired.items() if v)
        return f"alerts: {', '.join(parts)}" + (f" ({detail})" if detail else "")


def prepare(summary: pl.DataFrame, model: HealthModel, as_of: dt.date) -> pl.DataFrame:
    """The summary with every column a condition may name (absent ones null) and
    `days_to_renewal`."""
    schema = condition_schema(model)
    df = summary
    if "as_of" not in df.columns:
        df = df.with_columns(pl.lit(as_of, pl.Date).alias("as_of"))
    missing = [pl.lit(None, t).alias(c) for c, t in schema.items() if c not in df.columns and c != "days_to_renewal"]
    if missing:
        df = df.with_columns(missing)
    casts = {c: schema[c] for c in ("renewal_date", "as_of") if df.schema.get(c) != schema[c]}
    if casts:
        df = df.with_columns([pl.col(c).cast(t, strict=False) for c, t in casts.items()])
    return df.with_columns(
        (pl.col("renewal_date") - pl.col("as_of")).dt.total_days().cast(pl.Int64).alias("days_to_renewal")
    )


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _item(alert_id: int, rule: str, title: str, severity: str, row: Mapping[str, Any], base_url: str, as_of: dt.date) -> AlertItem:
    renewal = row.get("renewal_date")
    return AlertItem(
        alert_id=alert_id, rule=rule, title=title, severity=severity,
        account_id=str(row["account_id"]), account=str(row.get("name") or row["account_id"]),
        score=_num(row.get("score")), tier=row.get("tier"), drivers=str(row.get("drivers") or ""),
        reason=str(row.get("_reason") or ""), link=account_link(base_url, str(row["account_id"])), as_of=as_of,
        owner=row.get("owner"), owner_email=(str(row["owner_email"]).lower() if row.get("owner_email") else None),
        arr=_num(row.get("arr")),
        renewal_date=renewal if isinstance(renewal, dt.date) else None,
    )


def item_json(item: AlertItem) -> str:
    d = asdict(item)
    for k in ("as_of", "renewal_date"):
        if d[k] is not None:
            d[k] = d[k].isoformat()
    return json.dumps(d, sort_keys=True)


def item_from_json(text: str, alert_id: int | None = None) -> AlertItem:
    d = json.loads(text)
    d["as_of"] = dt.date.fromisoformat(d["as_of"])
    d["renewal_date"] = dt.date.fromisoformat(d["renewal_date"]) if d.get("renewal_date") else None
    if alert_id is not None:
        d["alert_id"] = alert_id
    return AlertItem(**d)


def route(
    rule: RuleDef, row: Mapping[str, Any], config: LoadedAlerts, roles: Any | None
) -> list[tuple[str, str, bool]]:
    """(channel, recipient, digest) for one alert. `roles`: a `health.roles.Roles` (or
    None: the owner is accounts.owner_email, nobody is a manager)."""
    spec = config.spec
    out: list[tuple[str, str, bool]] = []
    seen: set[tuple[str, str]] = set()

    def add(channel: str | None, recipient: str | None) -> None:
        if not channel or not recipient or (channel, recipient) in seen:
            return
        seen.add((channel, recipient))
        pref = spec.recipients.get(recipient)
        out.append((channel, recipient, bool(rule.digest or (pref is not None and pref.digest))))

    for target in rule.notify:
        if target == "owner":
            email = roles.owner_email(row) if roles is not None else (str(row.get("owner_email") or "").lower() or None)
            add(spec.people_channel, email)
        elif target == "manager":
            add(spec.people_channel, roles.manager_email(row) if roles is not None else None)
        elif target == "segment":
            ch = spec.segment_channels.get(str(row.get("health_segment")))
            add(ch, ch)
        else:
            add(target, target)
    return out


def evaluate(
    summary: pl.DataFrame,
    model: HealthModel,
    config: LoadedAlerts,
    store: AlertStore,
    as_of: dt.date,
    roles: Any | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Evaluation:
    """Evaluate every rule on `summary` (the scored rows as of `as_of`), record the hits,
    fire the alerts that held on `persistence` consecutive runs and are out of cooldown,
    and queue their deliveries — all in one transaction. Idempotent per `as_of`: a run
    already evaluated for that day changes nothing."""
    ev = Evaluation(as_of=as_of)
    day = as_of.isoformat()
    run = store.run(as_of)
    if run is not None and run.get("evaluated_at"):
        ev.already = True
        return ev
    df = prepare(summary, model, as_of)
    rules = config.rules
    base_url = config.base_url(environ)
    held: dict[str, pl.DataFrame] = {}
    for key, rule in rules.items():
        hits = df.filter(pl.sql_expr(rule_sql(rule)).fill_null(False))
        held[key] = hits.with_columns(reason_expr(rule, config.title(key), df.schema).alias("_reason"))
        ev.held[key] = hits.height
    max_k = max((r.persistence for r in rules.values()), default=1)
    previous = store.evaluated_runs_before(as_of, max_k - 1)
    now = _iso(store.now())
    with store.tx() as con:
        con.execute(
            "INSERT OR IGNORE INTO runs (as_of, started_at, last_run_at) VALUES (?, ?, ?)", (day, now, now)
        )
        if con.execute("SELECT evaluated_at FROM runs WHERE as_of = ?", (day,)).fetchone()["evaluated_at"]:
            ev.already = True  # another process evaluated the day meanwhile
            ev.held = {}
            return ev
        for key, rule in rules.items():
            hits = held[key]
            ids = hits["account_id"].to_list()
            con.executemany("INSERT OR IGNORE INTO alert_hits (rule, account_id, as_of) VALUES (?, ?, ?)",
                            [(key, a, day) for a in ids])
            need = rule.persistence - 1
            if need > 0:
                if len(previous) < need:
                    ev.waiting[key] = len(ids)
                    ev.fired[key] = 0
                    continue
                dates = [d.isoformat() for d in previous[:need]]
                marks = ",".join("?" * len(dates))
                rows = con.execute(
                    f"SELECT account_id FROM alert_hits WHERE rule = ? AND as_of IN ({marks}) "
                    f"GROUP BY account_id HAVING count(DISTINCT as_of) = ?",
                    (key, *dates, len(dates)),
                ).fetchall()
                streak = {r["account_id"] for r in rows}
            else:
                streak = set(ids)
            ready = hits.filter(pl.col("account_id").is_in(list(streak)))
            ev.waiting[key] = hits.height - ready.height
            since = (as_of - dt.timedelta(days=rule.cooldown_days)).isoformat()
            cooling = {
                r["account_id"]
                for r in con.execute(
                    "SELECT DISTINCT account_id FROM alerts WHERE rule = ? AND as_of > ? AND as_of < ?", (key, since, day)
                ).fetchall()
            } if rule.cooldown_days > 0 else set()
            fire = ready.filter(~pl.col("account_id").is_in(list(cooling)))
            ev.cooling[key] = ready.height - fire.height
            fired = 0
            title = config.title(key)
            for row in fire.iter_rows(named=True):
                cur = con.execute(
                    "INSERT OR IGNORE INTO alerts (rule, account_id, as_of, fired_at, severity, title, item) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, row["account_id"], day, now, rule.severity, title, "{}"),
                )
                if cur.rowcount == 0:
                    continue
                alert_id = int(cur.lastrowid)
                item = _item(alert_id, key, title, rule.severity, row, base_url, as_of)
                con.execute("UPDATE alerts SET item = ? WHERE id = ?", (item_json(item), alert_id))
                ev.alert_ids.append(alert_id)
                fired += 1
                targets = route(rule, row, config, roles)
                if not targets:
                    ev.unrouted.append(f"{key}:{row['account_id']}")
                for channel, recipient, digest in targets:
                    con.execute(
                        "INSERT OR IGNORE INTO alert_deliveries (alert_id, channel, recipient, digest, status, created_at) "
                        "VALUES (?, ?, ?, ?, 'pending', ?)",
                        (alert_id, channel, recipient, int(digest), now),
                    )
                    ev.deliveries += 1
            ev.fired[key] = fired
        con.execute("UPDATE runs SET evaluated_at = ?, fired = ? WHERE as_of = ?", (now, sum(ev.fired.values()), day))
    return ev


# ---------------------------------------------------------------------------- delivery


@dataclass
class DeliveryReport:
    delivered: int = 0
    messages: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    """(channel, recipient, error) per failed message."""
    waiting: dict[str, int] = field(default_factory=dict)
    """channel -> deliveries waiting because the channel is not configured."""
    expired: int = 0
    not_configured: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        parts = [f"{self.messages} message{'s' if self.messages != 1 else ''} sent ({self.delivered} deliveries)"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed (kept, retried next run)")
        for ch, n in self.waiting.items():
            why = self.not_configured.get(ch, "not configured")
            parts.append(f"{n} waiting for channel {ch} ({why})")
        if self.expired:
            parts.append(f"{self.expired} expired")
        out = "send: " + ", ".join(parts)
        for ch, rcpt, err in self.failed:
            out += f"\n  failed: {ch} -> {rcpt}: {err}"
        return out


def _claim(store: AlertStore, channels: Sequence[str], max_age_days: int) -> tuple[list[sqlite3.Row], int, dict[str, int], str]:
    now = store.now()
    token = f"sending:{now.timestamp():.6f}:{id(store)}"
    with store.tx() as con:
        expired = con.execute(
            "UPDATE alert_deliveries SET status = 'expired', error = coalesce(error, '') || ' (expired: not delivered within ' || ? || ' days)' "
            "WHERE status IN ('pending', 'failed') AND created_at < ?",
            (max_age_days, _iso(now - dt.timedelta(days=max_age_days))),
        ).rowcount
        con.execute(
            "UPDATE alert_deliveries SET status = 'failed', error = 'interrupted while sending (a run stopped half-way)' "
            "WHERE status LIKE 'sending:%' AND last_attempt_at < ?",
            (_iso(now - STALE_SENDING),),
        )
        waiting: dict[str, int] = {}
        for r in con.execute("SELECT channel, count(*) AS n FROM alert_deliveries WHERE status IN ('pending', 'failed') GROUP BY channel"):
            if r["channel"] not in channels:
                waiting[r["channel"]] = r["n"]
        if not channels:
            return [], expired, waiting, token
        marks = ",".join("?" * len(channels))
        con.execute(
            f"UPDATE alert_deliveries SET status = ?, last_attempt_at = ?, attempts = attempts + 1 "
            f"WHERE status IN ('pending', 'failed') AND channel IN ({marks})",
            (token, _iso(now), *channels),
        )
        rows = con.execute(
            "SELECT d.*, a.item FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.status = ? ORDER BY d.id",
            (token,),
        ).fetchall()
    return rows, expired, waiting, token


def deliver(
    store: AlertStore,
    config: LoadedAlerts,
    notifiers: Mapping[str, Notifier],
    not_configured: Mapping[str, str] | None = None,
) -> DeliveryReport:
    """Send every due delivery (new ones and those that failed before) over the
    configured `notifiers` (channel name -> Notifier). A channel missing from
    `notifiers` is not configured: its deliveries wait. One channel failing never stops
    the others; a failure is recorded with its error and retried by the next run."""
    report = DeliveryReport(not_configured=dict(not_configured or {}))
    rows, report.expired, report.waiting, token = _claim(store, list(notifiers), config.spec.delivery.max_age_days)
    single: list[list[sqlite3.Row]] = []
    digests: dict[tuple[str, str], list[sqlite3.Row]] = {}
    for r in rows:
        if r["digest"]:
            digests.setdefault((r["channel"], r["recipient"]), []).append(r)
        else:
            single.append([r])
    batches: list[tuple[Notice, list[sqlite3.Row]]] = []
    for batch in single:
        r = batch[0]
        item = item_from_json(r["item"], r["alert_id"])
        batches.append((alert_notice(r["channel"], r["recipient"], item, f"chi-alert-{r['alert_id']}-{r['id']}"), batch))
    for (channel, recipient), batch in digests.items():
        items = [item_from_json(r["item"], r["alert_id"]) for r in batch]
        ids = ",".join(str(r["id"]) for r in batch)
        key = "chi-digest-" + hashlib.sha256(f"{channel}|{recipient}|{ids}".encode()).hexdigest()[:16]
        batches.append((digest_notice(channel, recipient, items, key), batch))
    for notice, batch in batches:
        ids = [r["id"] for r in batch]
        marks = ",".join("?" * len(ids))
        try:
            receipt = notifiers[notice.channel].send(notice)
        except Exception as exc:  # noqa: BLE001 - a channel failing must not stop the others
            err = str(exc) if getattr(exc, "message", None) else f"{type(exc).__name__}: {exc}"
            with store.tx() as con:
                con.execute(f"UPDATE alert_deliveries SET status = 'failed', error = ? WHERE id IN ({marks}) AND status = ?",
                            (err[:1000], *ids, token))
            report.failed.append((notice.channel, notice.recipient, err))
            continue
        with store.tx() as con:
            con.execute(
                f"UPDATE alert_deliveries SET status = 'delivered', delivered_at = ?, receipt = ?, error = NULL "
                f"WHERE id IN ({marks}) AND status = ?",
                (_iso(store.now()), str(receipt)[:500], *ids, token),
            )
        report.messages += 1
        report.delivered += len(ids)
    return report


# ----------------------------------------------------------------------------- history

HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "alert_id": pl.Int64(), "as_of": pl.Date(), "fired_at": pl.Datetime("us", "UTC"), "rule": pl.String(),
    "title": pl.String(), "severity": pl.String(), "account_id": pl.String(), "account": pl.String(),
    "score": pl.Float64(), "tier": pl.String(), "reason": pl.String(), "link": pl.String(),
    "channel": pl.String(), "recipient": pl.String(), "digest": pl.Boolean(), "status": pl.String(),
    "attempts": pl.Int64(), "delivered_at": pl.Datetime("us", "UTC"), "error": pl.String(),
    "acknowledged_at": pl.Datetime("us", "UTC"), "acknowledged_by": pl.String(), "ack_note": pl.String(),
}


def alert_history(
    store: AlertStore,
    *,
    account_id: str | None = None,
    recipient: str | None = None,
    rule: str | None = None,
    since: dt.date | None = None,
    status: str | None = None,
    limit: int = 5000,
) -> pl.DataFrame:
    """Who was told what, when: one row per alert x delivery (an alert nobody was routed
    to has one row with null channel), newest first. `status`: pending / delivered /
    failed / expired ('sending' shows while a run is sending)."""
    where, params = [], []
    if account_id is not None:
        where.append("a.account_id = ?"); params.append(account_id)  # noqa: E702
    if recipient is not None:
        where.append("lower(d.recipient) = lower(?)"); params.append(recipient)  # noqa: E702
    if rule is not None:
        where.append("a.rule = ?"); params.append(rule)  # noqa: E702
    if since is not None:
        where.append("a.as_of >= ?"); params.append(since.isoformat())  # noqa: E702
    if status == "sending":
        where.append("d.status LIKE 'sending:%'")
    elif status is not None:
        where.append("d.status = ?"); params.append(status)  # noqa: E702
    sql = (
        "SELECT a.id AS alert_id, a.as_of, a.fired_at, a.rule, a.title, a.severity, a.account_id, a.item, "
        "d.channel, d.recipient, d.digest, d.status, d.attempts, d.delivered_at, d.error, "
        "a.acknowledged_at, a.acknowledged_by, a.ack_note "
        "FROM alerts a LEFT JOIN alert_deliveries d ON d.alert_id = a.id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY a.as_of DESC, a.id DESC, d.id LIMIT ?"
    )
    rows = store.query(sql, (*params, limit))
    out = []
    for r in rows:
        item = json.loads(r["item"] or "{}")
        status_ = r["status"]
        out.append({
            "alert_id": r["alert_id"], "as_of": dt.date.fromisoformat(r["as_of"]), "fired_at": _ts(r["fired_at"]),
            "rule": r["rule"], "title": r["title"], "severity": r["severity"], "account_id": r["account_id"],
            "account": item.get("account"), "score": item.get("score"), "tier": item.get("tier"),
            "reason": item.get("reason"), "link": item.get("link"), "channel": r["channel"], "recipient": r["recipient"],
            "digest": None if r["digest"] is None else bool(r["digest"]),
            "status": "sending" if status_ and status_.startswith("sending:") else status_,
            "attempts": r["attempts"], "delivered_at": _ts(r["delivered_at"]), "error": r["error"],
            "acknowledged_at": _ts(r["acknowledged_at"]), "acknowledged_by": r["acknowledged_by"], "ack_note": r["ack_note"],
        })
    return pl.DataFrame(out, schema=HISTORY_SCHEMA, orient="row")


def acknowledge(store: AlertStore, alert_id: int, by: Any, note: str = "") -> bool:
    """Alert `alert_id` has been seen. `by`: an e-mail (trusted: the command line, tests)
    or a `health.roles.User` — then the user must be one the alert was sent to, or hold a
    role whose scope covers the account (their own, their team's, all); else
    `PermissionDenied`. True when newly acknowledged (the first acknowledgement is kept)."""
    if isinstance(by, str):
        return store.acknowledge(alert_id, by, note)
    from health.roles import PermissionDenied, covers

    rows = store.query("SELECT item FROM alerts WHERE id = ?", (alert_id,))
    if not rows:
        raise KeyError(f"no alert {alert_id}")
    item = json.loads(rows[0]["item"] or "{}")
    told = {r["recipient"].lower() for r in store.query("SELECT recipient FROM alert_deliveries WHERE alert_id = ?", (alert_id,))}
    account = {"account_id": item.get("account_id"), "name": item.get("account"), "owner": item.get("owner"),
               "owner_email": item.get("owner_email")}
    if not (by.email.lower() in told or any(covers(by, scope, account) for scope in set(by.grants.values()))):
        raise PermissionDenied(
            f"{by.label} may not acknowledge this alert on {account['name']}: it was not sent to them and the account "
            "is outside their scope (config/roles.yaml)"
        )
    return store.acknowledge(alert_id, by.email, note)


def alerts_frame(store: AlertStore) -> pl.DataFrame:
    """One row per fired alert: alert_id, rule, title, severity, account_id, as_of, acknowledged."""
    rows = store.query("SELECT id, rule, title, severity, account_id, as_of, acknowledged_at FROM alerts ORDER BY as_of, id")
    schema = {"alert_id": pl.Int64, "rule": pl.String, "title": pl.String, "severity": pl.String,
              "account_id": pl.String, "as_of": pl.String, "acknowledged": pl.Boolean}
    data = [(r["id"], r["rule"], r["title"], r["severity"], r["account_id"], r["as_of"], r["acknowledged_at"] is not None) for r in rows]
    return pl.DataFrame(data, schema=schema, orient="row").with_columns(pl.col("as_of").str.to_date())


def alert_timeline(store: AlertStore, account_id: str) -> pl.DataFrame:
    """The account's alerts as timeline rows (the layout of `health.timeline`: at, source
    'alerts', event, title, detail, ref, tone), newest first. Concatenate with the
    account's timeline: `pl.concat([timeline, alert_timeline(store, id)]).sort("at", descending=True)`."""
    from health.timeline import SCHEMA

    hist = alert_history(store, account_id=account_id)
    out: list[dict[str, Any]] = []
    for alert_id, rows in hist.group_by("alert_id", maintain_order=True):
        first = rows.row(0, named=True)
        told = [
            f"{r['recipient']} via {r['channel']}: {r['status']}" + (f" ({r['error']})" if r["status"] == "failed" and r["error"] else "")
            for r in rows.iter_rows(named=True) if r["channel"] is not None
        ]
        fired = first["fired_at"]
        out.append({
            "at": dt.datetime.combine(first["as_of"], dt.time()) if fired is None else fired.astimezone(UTC).replace(tzinfo=None),
            "source": "alerts", "event": "alert_fired",
            "title": f"Alert ({first['severity']}): {first['title']}",
            "detail": "; ".join(x for x in [first["reason"] or "", "told " + ", ".join(told) if told else "nobody routed"] if x),
            "ref": f"A{alert_id[0] if isinstance(alert_id, tuple) else alert_id}",
            "tone": "bad" if first["severity"] in ("critical", "warning") else "info",
        })
        if first["acknowledged_at"] is not None:
            out.append({
                "at": first["acknowledged_at"].astimezone(UTC).replace(tzinfo=None), "source": "alerts",
                "event": "alert_acknowledged", "title": f"Alert acknowledged by {first['acknowledged_by']}: {first['title']}",
                "detail": first["ack_note"] or "", "ref": f"A{alert_id[0] if isinstance(alert_id, tuple) else alert_id}",
                "tone": "info",
            })
    if not out:
        return pl.DataFrame(schema=SCHEMA)
    return pl.DataFrame(out, schema=SCHEMA).sort("at", descending=True, maintain_order=True)


def alert_precision(
    alerts: pl.DataFrame,
    outcomes: pl.DataFrame | pl.LazyFrame,
    *,
    window_days: int = 180,
    bad: Sequence[str] = ("churned",),
    covered: tuple[dt.date, dt.date] | None = None,
) -> pl.DataFrame:
    """Did the alerts come before the renewals that went badly? For each rule, over the
    past renewals in `outcomes` (account_id, renewal_date, outcome): how many renewals
    had at least one alert of the rule in the `window_days` before the renewal date, split
    into bad outcomes (`bad`, default churned) and the others (renewed, expanded, ...).

    Columns: rule, renewals_alerted, churned_alerted, renewed_alerted, precision (share of
    alerted renewals that went badly), churned_total, recall (share of bad renewals that had
    an alert), alerts (alerts counted in a window). Only renewals whose window overlaps
    `covered` (first, last run day; default the alerts' first and last as_of) count — a
    renewal before alerting began could not have been alerted. `alerts` is `alerts_frame(store)` (or
    any frame with rule, account_id, as_of). A rule row "(any)" pools all rules."""
    out_lf = outcomes.lazy() if isinstance(outcomes, pl.DataFrame) else outcomes
    oc = (
        out_lf.select("account_id", pl.col("renewal_date").cast(pl.Date), pl.col("outcome").cast(pl.String))
        .collect()
        .with_columns(pl.col("outcome").is_in(list(bad)).alias("bad"))
        .with_row_index("renewal")
    )
    if covered is None and not alerts.is_empty():
        covered = (alerts["as_of"].cast(pl.Date).min(), alerts["as_of"].cast(pl.Date).max())  # type: ignore[assignment]
    if covered is not None:
        start, end = covered
        # only renewals whose alert window overlaps the period the runs covered
        oc = oc.filter((pl.col("renewal_date") > start) & (pl.col("renewal_date") - pl.duration(days=window_days) <= end))
    churned_total = int(oc["bad"].sum())
    schema = {"rule": pl.String, "renewals_alerted": pl.Int64, "churned_alerted": pl.Int64, "renewed_alerted": pl.Int64,
              "precision": pl.Float64, "churned_total": pl.Int64, "recall": pl.Float64, "alerts": pl.Int64}
    if alerts.is_empty() or oc.is_empty():
        return pl.DataFrame(schema=schema)
    al = alerts.select("rule", "account_id", pl.col("as_of").cast(pl.Date))
    al = pl.concat([al, al.with_columns(pl.lit("(any)").alias("rule"))])
    joined = al.join(oc, on="account_id").filter(
        (pl.col("as_of") < pl.col("renewal_date"))
        & (pl.col("as_of") >= pl.col("renewal_date") - pl.duration(days=window_days))
    )
    per = joined.group_by("rule").agg(
        pl.col("renewal").n_unique().cast(pl.Int64).alias("renewals_alerted"),
        pl.col("renewal").filter(pl.col("bad")).n_unique().cast(pl.Int64).alias("churned_alerted"),
        pl.col("renewal").filter(~pl.col("bad")).n_unique().cast(pl.Int64).alias("renewed_alerted"),
        pl.len().cast(pl.Int64).alias("alerts"),
    )
    rules = al.select("rule").unique()
    res = rules.join(per, on="rule", how="left").with_columns(
        pl.col("renewals_alerted", "churned_alerted", "renewed_alerted", "alerts").fill_null(0)
    ).with_columns(
        pl.when(pl.col("renewals_alerted") > 0).then(pl.col("churned_alerted") / pl.col("renewals_alerted")).alias("precision"),
        pl.lit(churned_total, pl.Int64).alias("churned_total"),
        (pl.col("churned_alerted") / churned_total if churned_total else pl.lit(None, pl.Float64)).alias("recall"),
    )
    return res.select(list(schema)).cast(schema).sort(pl.col("rule") == "(any)", "rule")


__all__ = [
    "AlertStore",
    "AlertsFile",
    "DeliveryReport",
    "Evaluation",
    "LoadedAlerts",
    "SEVERITIES",
    "acknowledge",
    "alert_history",
    "alert_precision",
    "alert_timeline",
    "alerts_frame",
    "deliver",
    "evaluate",
    "load_alerts",
    "parse_alerts",
    "route",
    "rule_sql",
]
