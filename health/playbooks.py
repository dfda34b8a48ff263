"""Playbooks (`config/playbooks.yaml`): what to do about an account, why, and the policy.

A play says *when* it applies (an SQL condition over the scored summary row: tier, score,
change_4w, falling, health_segment, every signal's raw value by its name and its
sub-score as `<signal>__score`, the account columns and `days_to_renewal`), how urgent it
is (`priority`, higher first), which signals and records make the evidence, the team's
policy in words, a task template, the action types allowed (task / email / note) and
whether an action needs approval and by which role.

The file is validated like `weights.yaml`: every problem at once with file:line and a
"did you mean"; conditions are parsed by Polars (`pl.sql_expr`) and resolved against the
summary's columns without data — nothing in the file is ever evaluated as Python, and
templates may only use a fixed set of placeholders.

`recommend(summary, playbooks, tables)` returns the plays that apply, best first, each
with its evidence trail: the signal values (worded by `health.explain`), the records
behind them (the open P1/P2 tickets, the overdue invoices, the last executive meeting ...
as known at the row's `as_of`) and the policy text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import polars as pl
from pydantic import Field, ValidationError, field_validator

from health.crm import ACTION_TYPES
from health.explain import format_python, phrase
from health.model import HealthModel, Strict, parse_days
from health.model_loader import EXTRA_TYPES, check_condition
from health.roles import BUILTIN_ROLES
from health.schema import TABLES
from health.yaml_config import EMAIL, ConfigError, ModelIssue, did_you_mean, parse_yaml, plain, read_text

ActionTypeName = Literal["task", "email", "note"]
RecordTable = Literal["tickets", "invoices", "surveys", "touchpoints", "milestones"]

PLACEHOLDERS: dict[str, str] = {
    "account": "the account's name",
    "account_id": "the account id",
    "owner": "the account owner (accounts.owner)",
    "segment": "the account's segment",
    "tier": "the health tier in words (at risk, watch, healthy)",
    "score": "the health score, rounded",
    "arr": "ARR, e.g. $120,000",
    "renewal_date": "the next renewal date (YYYY-MM-DD)",
    "days_to_renewal": "days until the renewal",
    "drivers": "the top drivers of the score, in words",
    "play": "the play's title",
    "as_of": "the date the score is as of",
}
"""The only fields a template may use — no attribute access, no format specs."""

OWNER_RULES = ("account_owner", "manager")

SUMMARY_COLUMNS: dict[str, pl.DataType] = {
    "as_of": pl.Date(),
    "score": pl.Float64(),
    "coverage": pl.Float64(),
    "health_segment": pl.String(),
    "tier": pl.String(),
    "tier_by_score": pl.String(),
    "rule": pl.String(),
    "rule_reason": pl.String(),
    "change_1w": pl.Float64(),
    "change_4w": pl.Float64(),
    "change_12w": pl.Float64(),
    "tier_4w_ago": pl.String(),
    "moved_into_at_risk": pl.Boolean(),
    "falling": pl.Boolean(),
    "falling_reason": pl.String(),
    "drivers": pl.String(),
    "what_changed": pl.String(),
}
DERIVED_COLUMNS: dict[str, pl.DataType] = {"days_to_renewal": pl.Int64()}
"""Computed from the row before conditions run: renewal_date - as_of, in days."""

_TIER_WORDS = {"at_risk": "at risk", "watch": "watch", "healthy": "healthy", "insufficient_data": "insufficient data"}


# ------------------------------------------------------------------------------ schema


class RecordSpec(Strict):
    """Which records of one table make the evidence (as known at the row's as_of)."""

    table: RecordTable
    label: str | None = None
    where: str | None = None
    state: Literal["any", "open", "overdue"] = "any"
    within: str | int | None = None
    limit: int = Field(default=5, ge=1, le=50)

    @field_validator("within")
    @classmethod
    def _within(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_days(v)
        return v

    @property
    def within_days(self) -> int | None:
        return parse_days(self.within) if self.within is not None else None


class TaskTemplate(Strict):
    subject: str = Field(min_length=1)
    body: str = ""
    due_in_days: int = Field(default=3, ge=0, le=365)
    owner: str = "account_owner"
    priority: Literal["low", "normal", "high"] = "normal"


class Approval(Strict):
    role: str
    action_types: list[ActionTypeName] | None = None
    """Which of the play's action types need approval (default: all of them)."""


class Play(Strict):
    title: str
    when: str
    priority: int = Field(ge=0, le=1000)
    policy: str
    task: TaskTemplate
    evidence: list[str] = Field(default_factory=list)
    records: list[RecordSpec] = Field(default_factory=list)
    action_types: list[ActionTypeName] = Field(default_factory=lambda: ["task", "email", "note"])
    approval: Approval | None = None
    description: str | None = None

    @field_validator("action_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one action type (task, email, note)")
        if len(set(v)) != len(v):
            raise ValueError(f"action types are listed twice: {v}")
        return v


class ActionTypePolicy(Strict):
    label: str | None = None
    approval: str | None = None
    """A role that must approve every action of this type, whatever the play."""


class Playbooks(Strict):
    version: int | str | None = None
    description: str | None = None
    dismiss_reasons: dict[str, str] = Field(default_factory=dict)
    action_types: dict[ActionTypeName, ActionTypePolicy] = Field(default_factory=dict)
    plays: dict[str, Play]


DEFAULT_DISMISS_REASONS = {
    "already_done": "Already done outside the app",
    "in_progress": "Already in progress with the customer",
    "not_relevant": "Does not fit this account right now",
    "data_wrong": "The data behind it is wrong",
    "other": "Other (say why)",
}


@dataclass(frozen=True)
class LoadedPlaybooks:
    spec: Playbooks
    model: HealthModel
    text: str = ""
    path: str = "config/playbooks.yaml"
    warnings: tuple[ModelIssue, ...] = ()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    @property
    def plays(self) -> dict[str, Play]:
        return self.spec.plays

    @property
    def dismiss_reasons(self) -> dict[str, str]:
        return self.spec.dismiss_reasons or DEFAULT_DISMISS_REASONS

    def play(self, key: str) -> Play:
        try:
            return self.spec.plays[key]
        except KeyError:
            raise KeyError(f"unknown play {key!r}{did_you_mean(key, self.spec.plays)}") from None

    def action_types_for(self, play: str | None) -> list[str]:
        return list(self.play(play).action_types) if play else list(ACTION_TYPES)

    def approval_role(self, play: str | None, action_type: str) -> str | None:
        """The role that must approve an action of `action_type` taken for `play`
        (None: no approval). The play's own rule wins; else the action type's."""
        if play is not None:
            p = self.play(play)
            if p.approval is not None and (p.approval.action_types is None or action_type in p.approval.action_types):
                return p.approval.role
        policy = self.spec.action_types.get(action_type)  # type: ignore[call-overload]
        return policy.approval if policy is not None else None


# ----------------------------------------------------------------------- validation


def summary_schema(model: HealthModel, extra: Mapping[str, pl.DataType] | None = None) -> dict[str, pl.DataType]:
    """The columns a play's `when` may use: the scored summary's (see module docstring)."""
    schema: dict[str, pl.DataType] = dict(TABLES["accounts"].polars_schema())
    for col, kind in model.extra_columns.get("accounts", {}).items():
        schema[col] = EXTRA_TYPES[kind]
    schema.update(SUMMARY_COLUMNS)
    for s in model.signals:
        schema[s] = pl.Float64()
        for suffix in ("score", "weight", "contribution", "lost"):
            schema[f"{s}__{suffix}"] = pl.Float64()
    schema.update(DERIVED_COLUMNS)
    for col, dtype in (extra or {}).items():
        if col not in schema and not isinstance(dtype, (pl.List, pl.Struct)):
            schema[col] = dtype
    return schema


def _table_schema(table: str, model: HealthModel) -> dict[str, pl.DataType]:
    schema = dict(TABLES[table].polars_schema())
    for col, kind in model.extra_columns.get(table, {}).items():
        schema[col] = EXTRA_TYPES[kind]
    return schema


def template_problem(text: str) -> str | None:
    """None when `text` only uses the allowed placeholders, plainly; else what is wrong."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"cannot read the template {text!r}: {exc} (write a literal brace as {{{{ or }}}})"
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if name == "":
            return "empty placeholder {} — name one of: " + ", ".join(PLACEHOLDERS)
        if name not in PLACEHOLDERS:
            return (
                f"unknown placeholder {{{name}}}{did_you_mean(name, PLACEHOLDERS)}; "
                f"templates may only use: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        if spec or conv:
            return f"placeholder {{{name}}} may not carry a format or conversion (write just {{{name}}})"
    return None


def parse_playbooks(
    text: str,
    model: HealthModel,
    file: str = "config/playbooks.yaml",
    *,
    roles: Sequence[str] | None = None,
    columns: Mapping[str, pl.DataType] | None = None,
) -> LoadedPlaybooks:
    """Validate playbook text against `model` (and the role names, default the four
    built-in roles); raise `ConfigError` listing every problem."""
    what = "the playbooks"
    doc, col = parse_yaml(text, file, what)
    data = plain(doc)
    if not col.top_level(data, Playbooks, ("plays",)):
        col.raise_if_errors()
    role_names = list(roles) if roles is not None else list(BUILTIN_ROLES)

    plays = col.each(("plays",), data.get("plays"), Play)
    if "plays" in data and isinstance(data.get("plays"), dict) and not data["plays"]:
        col.add(("plays",), "no plays: add at least one")
    types = {}
    raw_types = data.get("action_types")
    if raw_types is not None:
        if not isinstance(raw_types, dict):
            col.add(("action_types",), "'action_types' must be a mapping of task / email / note -> policy")
        else:
            for name, item in raw_types.items():
                if name not in ACTION_TYPES:
                    col.add(("action_types", name), f"unknown action type '{name}'{did_you_mean(name, ACTION_TYPES)}; use one of: {', '.join(ACTION_TYPES)}")
                    continue
                parsed = col.one(("action_types", name), item or {}, ActionTypePolicy)
                if parsed is not None:
                    types[name] = parsed
                    if parsed.approval is not None and parsed.approval not in role_names:
                        col.add(("action_types", name, "approval"),
                                f"unknown role '{parsed.approval}'{did_you_mean(parsed.approval, role_names)}; roles: {', '.join(role_names)}")
    scalars: dict[str, Any] = {}
    for key in ("version", "description", "dismiss_reasons"):
        if key in data:
            try:
                Playbooks.model_validate({key: data[key], "plays": {}})
                scalars[key] = data[key]
            except ValidationError as exc:
                col.pydantic((), exc, Playbooks)
    if isinstance(scalars.get("dismiss_reasons"), dict) and not scalars["dismiss_reasons"]:
        col.add(("dismiss_reasons",), "list at least one reason (code: label)")

    schema = summary_schema(model, columns)
    signals = list(model.signals)
    for key, play in plays.items():
        base = ("plays", key)
        problem = check_condition(play.when, schema)
        if problem:
            col.add(base + ("when",), problem)
        for i, s in enumerate(play.evidence):
            if s not in model.signals:
                col.add(base + ("evidence", i), f"unknown signal '{s}'{did_you_mean(s, signals)}")
        for i, rec in enumerate(play.records):
            rbase = base + ("records", i)
            if rec.where is not None:
                problem = check_condition(rec.where, _table_schema(rec.table, model))
                if problem:
                    col.add(rbase + ("where",), problem)
            if rec.state == "open" and rec.table not in ("tickets", "invoices"):
                col.add(rbase + ("state",), "state `open` works on tickets (not closed) or invoices (not paid)")
            if rec.state == "overdue" and rec.table != "invoices":
                col.add(rbase + ("state",), "state `overdue` works on invoices only")
        for part in ("subject", "body"):
            problem = template_problem(getattr(play.task, part))
            if problem:
                col.add(base + ("task", part), problem)
        owner = play.task.owner
        if owner not in OWNER_RULES and not EMAIL.match(owner):
            col.add(base + ("task", "owner"),
                    f"owner '{owner}' is not allowed{did_you_mean(owner, OWNER_RULES)}; use account_owner, manager or an e-mail address")
        if play.approval is not None:
            if play.approval.role not in role_names:
                col.add(base + ("approval", "role"),
                        f"unknown role '{play.approval.role}'{did_you_mean(play.approval.role, role_names)}; roles: {', '.join(role_names)}")
            for j, t in enumerate(play.approval.action_types or []):
                if t not in play.action_types:
                    col.add(base + ("approval", "action_types", j),
                            f"'{t}' needs approval but is not one of the play's action_types ({', '.join(play.action_types)})")
    col.raise_if_errors()
    spec = Playbooks.model_validate({**scalars, "action_types": types, "plays": plays})
    return LoadedPlaybooks(spec=spec, model=model, text=text, path=file,
                           warnings=tuple(i for i in col.issues if i.severity != "error"))


def load_playbooks(
    path: str | Path,
    model: HealthModel,
    *,
    roles: Sequence[str] | None = None,
    columns: Mapping[str, pl.DataType] | None = None,
) -> LoadedPlaybooks:
    """Read and validate a playbooks file. `roles`: the role names approvals may name
    (pass `list(Roles.spec.roles)`); `columns`: the real summary schema, to allow the
    extra account columns a source brings."""
    return parse_playbooks(read_text(path, "the playbooks"), model, str(path), roles=roles, columns=columns)


# ---------------------------------------------------------------------- recommend


@dataclass(frozen=True)
class EvidenceSignal:
    signal: str
    label: str
    raw: float | None
    value: str
    phrase: str | None
    sub_score: float | None


@dataclass(frozen=True)
class EvidenceRecord:
    table: str
    ref: str
    at: dt.date | None
    title: str
    detail: str


@dataclass(frozen=True)
class EvidenceGroup:
    label: str
    table: str
    records: tuple[EvidenceRecord, ...]
    total: int
    """How many records matched (records holds at most the spec's limit)."""


@dataclass(frozen=True)
class TaskDraft:
    subject: str
    body: str
    due_date: dt.date
    owner_rule: str
    owner_email: str | None
    priority: str


@dataclass(frozen=True)
class Recommendation:
    account_id: str
    account_name: str | None
    play: str
    title: str
    priority: int
    policy: str
    signals: tuple[EvidenceSignal, ...]
    records: tuple[EvidenceGroup, ...]
    draft: TaskDraft
    action_types: tuple[str, ...]
    approval: Mapping[str, str | None]
    """action type -> the role that must approve it (None: no approval)."""
    as_of: dt.date | None
    tier: str | None
    score: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Things the user should know (e.g. no owner e-mail could be resolved)."""

    def evidence_snapshot(self) -> dict[str, Any]:
        """The evidence as plain JSON-able data (stored with an action or dismissal)."""
        def conv(v: Any) -> Any:
            if isinstance(v, (dt.date, dt.datetime)):
                return v.isoformat()
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            return v

        return conv(
            {
                "play": self.play,
                "title": self.title,
                "policy": self.policy,
                "as_of": self.as_of,
                "tier": self.tier,
                "score": self.score,
                "signals": [asdict(s) for s in self.signals],
                "records": [
                    {"label": g.label, "table": g.table, "total": g.total, "records": [asdict(r) for r in g.records]}
                    for g in self.records
                ],
            }
        )


def _frame(summary: pl.DataFrame | pl.LazyFrame | Mapping[str, Any]) -> pl.DataFrame:
    if isinstance(summary, pl.LazyFrame):
        return summary.collect()
    if isinstance(summary, pl.DataFrame):
        return summary
    row = {k: v for k, v in dict(summary).items() if not isinstance(v, (list, tuple, dict))}
    return pl.DataFrame([row])


def prepare(summary: pl.DataFrame, loaded: LoadedPlaybooks, as_of: dt.date | None = None) -> pl.DataFrame:
    """The summary with every column a condition may name (absent ones as nulls) and the
    derived columns (days_to_renewal)."""
    schema = summary_schema(loaded.model)
    df = summary
    if "as_of" not in df.columns or df["as_of"].null_count() == df.height:
        df = df.with_columns(pl.lit(as_of or dt.date.today(), pl.Date).alias("as_of"))
    missing = [pl.lit(None, dtype).alias(c) for c, dtype in schema.items() if c not in df.columns and c not in DERIVED_COLUMNS]
    if missing:
        df = df.with_columns(missing)
    casts = {c: schema[c] for c in ("renewal_date", "as_of") if df.schema.get(c) != schema[c]}
    if casts:
        df = df.with_columns([pl.col(c).cast(t, strict=False) for c, t in casts.items()])
    return df.with_columns(
        (pl.col("renewal_date") - pl.col("as_of")).dt.total_days().cast(pl.Int64).alias("days_to_renewal")
    )


def matching_plays(summary: pl.DataFrame | pl.LazyFrame | Mapping[str, Any], loaded: LoadedPlaybooks) -> pl.DataFrame:
    """Vectorised: one row per (account_id, play) that applies, with title and priority,
    accounts in the summary's order, best play first — cheap enough for a whole book (no
    evidence records): e.g. a "next step" column on the at-risk list."""
    df = prepare(_frame(summary), loaded)
    if df.is_empty() or not loaded.plays:
        return pl.DataFrame(schema={"account_id": pl.String, "play": pl.String, "title": pl.String, "priority": pl.Int64})
    order = {k: i for i, k in enumerate(loaded.plays)}
    hits = df.with_row_index("_row").select(
        "_row", "account_id", *[pl.sql_expr(p.when).fill_null(False).alias(k) for k, p in loaded.plays.items()]
    ).unpivot(index=["_row", "account_id"], variable_name="play", value_name="hit")
    return (
        hits.filter(pl.col("hit"))
        .with_columns(
            pl.col("play").replace_strict({k: p.title for k, p in loaded.plays.items()}, return_dtype=pl.String).alias("title"),
            pl.col("play").replace_strict({k: p.priority for k, p in loaded.plays.items()}, return_dtype=pl.Int64).alias("priority"),
            pl.col("play").replace_strict(order, return_dtype=pl.Int64).alias("_o"),
        )
        .sort(["_row", "priority", "_o"], descending=[False, True, False])
        .select("account_id", "play", "title", "priority")
    )


def _money(v: Any) -> str:
    try:
        return f"${float(v):,.0f}"
    except (TypeError, ValueError):
        return ""


def _placeholder_values(row: Mapping[str, Any], play: Play) -> dict[str, str]:
    score = row.get("score")
    return {
        "account": str(row.get("name") or row.get("account_id") or ""),
        "account_id": str(row.get("account_id") or ""),
        "owner": str(row.get("owner") or ""),
        "segment": str(row.get("segment") or ""),
        "tier": _TIER_WORDS.get(str(row.get("tier")), str(row.get("tier") or "")),
        "score": "" if score is None else str(int(round(float(score)))),
        "arr": _money(row.get("arr")),
        "renewal_date": row["renewal_date"].isoformat() if isinstance(row.get("renewal_date"), dt.date) else "",
        "days_to_renewal": "" if row.get("days_to_renewal") is None else str(row["days_to_renewal"]),
        "drivers": str(row.get("drivers") or ""),
        "play": play.title,
        "as_of": row["as_of"].isoformat() if isinstance(row.get("as_of"), dt.date) else "",
    }


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill a validated template: literal text and whole-field substitution only."""
    out = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values.get(name, ""))
    return "".join(out)


def _for_account(tables: Mapping[str, Any] | None, table: str, account_id: str) -> pl.DataFrame | None:
    if not tables or tables.get(table) is None:
        return None
    frame = tables[table]
    lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    if "account_id" not in lf.collect_schema().names():
        return None
    return lf.filter(pl.col("account_id") == account_id).collect()


def _s(v: Any) -> str:
    return "" if v is None else str(v)



_ACRONYMS = {"qbr": "QBR", "nps": "NPS", "csat": "CSAT", "sso": "SSO", "poc": "PoC"}


def _kind_label(kind: str) -> str:
    """'exec_meeting' -> 'Exec meeting', 'qbr' -> 'QBR'."""
    words = [_ACRONYMS.get(w.lower(), w) for w in kind.replace("_", " ").split()]
    text = " ".join(words)
    return text[:1].upper() + text[1:]

def _records(spec: RecordSpec, df: pl.DataFrame, as_of: dt.date) -> tuple[list[EvidenceRecord], int]:
    end = dt.datetime.combine(as_of, dt.time.max)
    t = spec.table
    tcol = TABLES[t].time_column or "at"
    if tcol not in df.columns:
        return [], 0
    when = pl.col(tcol)
    known = when <= (pl.lit(end) if df.schema[tcol] == pl.Datetime("us") or isinstance(df.schema[tcol], pl.Datetime) else pl.lit(as_of))
    df = df.filter(known)
    if spec.where is not None:
        df = df.filter(pl.sql_expr(spec.where).fill_null(False))
    if spec.within_days is not None:
        df = df.filter(when.cast(pl.Date) > as_of - dt.timedelta(days=spec.within_days))
    if spec.state == "open":
        if t == "tickets" and "closed_at" in df.columns:
            df = df.filter(pl.col("closed_at").is_null() | (pl.col("closed_at") > end))
        elif t == "invoices" and "paid_at" in df.columns:
            df = df.filter(pl.col("paid_at").is_null() | (pl.col("paid_at") > as_of))
    if spec.state == "overdue":
        paid = pl.col("paid_at") if "paid_at" in df.columns else pl.lit(None, pl.Date)
        df = df.filter((pl.col("due_date") < as_of) & (paid.is_null() | (paid > as_of)))
        df = df.sort("due_date")
    else:
        df = df.sort(tcol, descending=True)
    total = df.height
    out: list[EvidenceRecord] = []
    for r in df.head(spec.limit).iter_rows(named=True):
        at = r.get(tcol)
        day = at.date() if isinstance(at, dt.datetime) else at
        if t == "tickets":
            bits = []
            closed = r.get("closed_at")
            if closed is None or closed > end:
                bits.append(f"open {(as_of - day).days} days")
            else:
                bits.append(f"closed {closed.date().isoformat()}")
            if r.get("escalated"):
                bits.append("escalated")
            if r.get("sentiment") is not None:
                bits.append(f"sentiment {r['sentiment']:.2f}")
            subject = r.get("subject")
            title = f"{_s(r.get('priority'))} ticket {_s(r.get('ticket_id'))}" + (f": {subject}" if subject else "")
            out.append(EvidenceRecord(t, _s(r.get("ticket_id")), day, title, "; ".join(bits)))
        elif t == "invoices":
            due = r.get("due_date")
            paid = r.get("paid_at")
            if paid is not None and paid <= as_of:
                detail = f"paid {paid.isoformat()}"
            elif due is not None and due < as_of:
                detail = f"{(as_of - due).days} days overdue, unpaid"
            else:
                detail = "not yet due"
            title = f"Invoice {_s(r.get('invoice_id'))}: {_money(r.get('amount'))} due {due.isoformat() if due else '?'}"
            out.append(EvidenceRecord(t, _s(r.get("invoice_id")), day, title, detail))
        elif t == "surveys":
            kind = _s(r.get("kind")).upper()
            scale = "/10" if kind == "NPS" else "/5" if kind == "CSAT" else ""
            score = r.get("score")
            title = f"{kind} {'' if score is None else int(round(score))}{scale} on {day.isoformat() if day else '?'}"
            detail = " — ".join(x for x in (f"“{r['comment']}”" if r.get("comment") else "", _s(r.get("respondent"))) if x)
            out.append(EvidenceRecord(t, _s(r.get("response_id")), day, title, detail))
        elif t == "touchpoints":
            kind = _kind_label(_s(r.get("kind")))
            ago = f"{(as_of - day).days} days ago" if day else ""
            title = f"{kind} on {day.isoformat() if day else '?'} ({ago})"
            detail = "; ".join(x for x in (_s(r.get("notes")), _s(r.get("participants"))) if x)
            out.append(EvidenceRecord(t, _s(r.get("touchpoint_id")), day, title, detail))
        else:  # milestones
            kind = _kind_label(_s(r.get("kind")))
            title = f"{kind} on {day.isoformat() if day else '?'}"
            out.append(EvidenceRecord(t, "", day, title, _s(r.get("description"))))
    return out, total


_DEFAULT_LABELS = {
    ("tickets", "open"): "Open tickets",
    ("invoices", "overdue"): "Overdue invoices",
    ("invoices", "open"): "Unpaid invoices",
}


def _signal_evidence(row_df: pl.DataFrame, row: Mapping[str, Any], model: HealthModel, names: Sequence[str]) -> list[EvidenceSignal]:
    out = []
    for name in names:
        sig = model.signals[name]
        raw = row.get(name)
        words = row_df.select(phrase(name, sig).alias("p")).item() if name in row_df.columns else None
        out.append(
            EvidenceSignal(
                signal=name,
                label=sig.label,
                raw=None if raw is None else float(raw),
                value=format_python(raw, sig.format),
                phrase=words,
                sub_score=row.get(f"{name}__score"),
            )
        )
    return out


def recommend(
    summary: pl.DataFrame | pl.LazyFrame | Mapping[str, Any],
    playbooks: LoadedPlaybooks,
    tables: Mapping[str, Any] | None = None,
    *,
    roles: Any | None = None,
    as_of: dt.date | None = None,
    plays: Sequence[str] | None = None,
) -> list[Recommendation]:
    """The plays that apply to each account of `summary` (one summary row as a dict, a
    one-row frame, or a frame of several accounts), ranked by priority (then file order)
    per account, each with its evidence trail (signals, records from `tables` as known
    at the row's as_of, policy) and a task draft rendered from the template.

    `roles` (a `health.roles.Roles`) resolves the draft's owner e-mail (account_owner,
    manager); without it, account_owner falls back to accounts.owner_email. `plays`
    restricts the evaluation to those play keys."""
    df = prepare(_frame(summary), playbooks, as_of)
    if df.is_empty():
        return []
    chosen = {k: p for k, p in playbooks.plays.items() if plays is None or k in plays}
    if not chosen:
        return []
    hits = df.with_columns([pl.sql_expr(p.when).fill_null(False).alias(f"__play__{k}") for k, p in chosen.items()])
    order = {k: i for i, k in enumerate(chosen)}
    out: list[Recommendation] = []
    for i in range(hits.height):
        row_df = hits.slice(i, 1)
        row = row_df.row(0, named=True)
        keys = [k for k in chosen if row[f"__play__{k}"]]
        keys.sort(key=lambda k: (-chosen[k].priority, order[k]))
        row_as_of = row.get("as_of") or as_of or dt.date.today()
        account_id = str(row["account_id"])
        cache: dict[str, pl.DataFrame | None] = {}
        for k in keys:
            play = chosen[k]
            groups = []
            for spec in play.records:
                if spec.table not in cache:
                    cache[spec.table] = _for_account(tables, spec.table, account_id)
                frame = cache[spec.table]
                recs, total = ([], 0) if frame is None else _records(spec, frame, row_as_of)
                label = spec.label or _DEFAULT_LABELS.get((spec.table, spec.state), spec.table.capitalize())
                groups.append(EvidenceGroup(label, spec.table, tuple(recs), total))
            values = _placeholder_values(row, play)
            notes: list[str] = []
            owner_rule = play.task.owner
            if owner_rule == "account_owner":
                owner_email = roles.owner_email(row) if roles is not None else (row.get("owner_email") or None)
                if owner_email is None:
                    notes.append(f"No e-mail found for the owner {row.get('owner')!r}: add them to config/roles.yaml")
            elif owner_rule == "manager":
                owner_email = roles.manager_email(row) if roles is not None else None
                if owner_email is None:
                    notes.append(f"No manager found for the owner {row.get('owner')!r} in config/roles.yaml")
            else:
                owner_email = owner_rule
            draft = TaskDraft(
                subject=render(play.task.subject, values),
                body=render(play.task.body, values),
                due_date=row_as_of + dt.timedelta(days=play.task.due_in_days),
                owner_rule=owner_rule,
                owner_email=owner_email,
                priority=play.task.priority,
            )
            out.append(
                Recommendation(
                    account_id=account_id,
                    account_name=row.get("name"),
                    play=k,
                    title=play.title,
                    priority=play.priority,
                    policy=play.policy.strip(),
                    signals=tuple(_signal_evidence(row_df, row, playbooks.model, play.evidence)),
                    records=tuple(groups),
                    draft=draft,
                    action_types=tuple(play.action_types),
                    approval={t: playbooks.approval_role(k, t) for t in play.action_types},
                    as_of=row_as_of,
                    tier=row.get("tier"),
                    score=row.get("score"),
                    notes=tuple(notes),
                )
            )
    return out


__all__ = [
    "PLACEHOLDERS",
    "ConfigError",
    "EvidenceGroup",
    "EvidenceRecord",
    "EvidenceSignal",
    "LoadedPlaybooks",
    "Play",
    "Playbooks",
    "Recommendation",
    "TaskDraft",
    "load_playbooks",
    "matching_plays",
    "parse_playbooks",
    "prepare",
    "recommend",
    "render",
    "summary_schema",
    "template_problem",
]
