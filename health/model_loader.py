"""Load `weights.yaml` and report **every** problem at once, with file, line and a
"did you mean".

Each section is validated separately so that one broken signal does not hide the next
one's problem; cross-checks (weights name real signals, SQL conditions name real
columns, a default segment exists, ...) then run over whatever parsed. SQL conditions are
parsed by Polars (`pl.sql_expr`) and resolved against a schema without data; nothing in
the file is ever evaluated as Python.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from health.model import (
    HealthModel,
    Operand,
    Rule,
    Segment,
    Signal,
    Tiers,
    Trajectory,
)
from health.schema import TABLES
from health.yaml_config import Collector, ModelIssue, _fmt_path, _Locator, _plain, did_you_mean  # noqa: F401

EXTRA_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "number": pl.Float64(),
    "integer": pl.Int64(),
    "date": pl.Date(),
    "boolean": pl.Boolean(),
}
RESULT_COLUMNS: dict[str, pl.DataType] = {
    "score": pl.Float64(),
    "coverage": pl.Float64(),
    "health_segment": pl.String(),
}
ALLOWED_TEMPLATE_FIELDS = {"value", "label"}


class ModelError(ValueError):
    """The model file has errors; `issues` lists every one of them."""

    def __init__(self, issues: list[ModelIssue]):
        self.issues = issues
        errors = [i for i in issues if i.severity == "error"]
        super().__init__(
            f"{len(errors)} problem(s) in the health model:\n" + "\n".join(str(i) for i in errors)
        )


@dataclass(frozen=True)
class LoadedModel:
    model: HealthModel
    text: str
    path: str
    warnings: tuple[ModelIssue, ...] = ()

    @property
    def hash(self) -> str:
        return model_hash(self.text)


def model_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _schema_for(table: str, model_extra: dict[str, dict[str, str]]) -> dict[str, pl.DataType]:
    schema = dict(TABLES[table].polars_schema())
    for col, kind in model_extra.get(table, {}).items():
        schema[col] = EXTRA_TYPES[kind]
    return schema


def check_condition(text: str, schema: dict[str, pl.DataType]) -> str | None:
    """None when `text` is a boolean SQL expression over `schema`, else what is wrong."""
    try:
        expr = pl.sql_expr(text)
    except Exception as exc:  # polars raises several SQL error classes
        return f"cannot parse SQL condition {text!r}: {str(exc).splitlines()[0]}"
    try:
        out = pl.LazyFrame(schema=schema).select(expr.alias("_c")).collect_schema()
    except pl.exceptions.ColumnNotFoundError as exc:
        m = re.search(r'unable to find column "([^"]+)"', str(exc))
        col = m.group(1) if m else "?"
        return f"unknown column '{col}' in {text!r}{did_you_mean(col, schema)}"
    except Exception as exc:
        return f"invalid SQL condition {text!r}: {str(exc).splitlines()[0]}"
    if out["_c"] != pl.Boolean():
        return f"condition {text!r} must be true/false, it gives {out['_c']}"
    return None


def _template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def parse_model(text: str, file: str = "weights.yaml") -> LoadedModel:
    """Validate model text; raise `ModelError` listing every problem."""
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ModelError([ModelIssue(file, line, "", f"not valid YAML: {exc.problem or exc}")]) from None
    except YAMLError as exc:  # e.g. a control character the reader refuses
        raise ModelError([ModelIssue(file, None, "", f"not valid YAML: {exc}")]) from None
    col = Collector(file, _Locator(doc), "the health model")
    if not isinstance(doc, dict):
        col.add((), "the model must be a mapping with signals, segments and tiers")
        raise ModelError(col.issues)

    data = _plain(doc)
    top_fields = set(HealthModel.model_fields)
    for key in data:
        if key not in top_fields:
            col.add((key,), f"unknown section '{key}'{did_you_mean(key, top_fields)}")
    for key in ("signals", "segments", "tiers"):
        if key not in data:
            col.add((), f"the section '{key}' is missing")

    signals = col.each(("signals",), data.get("signals"), Signal)
    segments = col.each(("segments",), data.get("segments"), Segment)
    rules = col.each_item(("rules",), data.get("rules"), Rule)
    tiers = col.one(("tiers",), data.get("tiers"), Tiers) if "tiers" in data else None
    traj = col.one(("trajectory",), data.get("trajectory", {}), Trajectory)
    scalars: dict[str, Any] = {}
    placeholder = {"signals": {}, "segments": {}, "tiers": {"at_risk": 0, "watch": 1}}
    extra_raw = data.get("extra_columns")
    if isinstance(extra_raw, dict):
        # Column by column: one bad type must not hide the other declared columns.
        kept: dict[str, dict[str, Any]] = {}
        for table, cols in extra_raw.items():
            if not isinstance(cols, dict):
                col.add(("extra_columns", table), "list the columns as `name: type` pairs")
                continue
            for name, kind in cols.items():
                if kind in EXTRA_TYPES:
                    kept.setdefault(table, {})[name] = kind
                else:
                    col.add(
                        ("extra_columns", table, name),
                        f"'{kind}' is not allowed{did_you_mean(kind, EXTRA_TYPES)}; use one of: {', '.join(EXTRA_TYPES)}",
                    )
        data = {**data, "extra_columns": kept}
    for key in ("version", "description", "min_coverage", "extra_columns"):
        if key not in data:
            continue
        try:  # one key at a time: a bad min_coverage must not discard extra_columns
            HealthModel.model_validate({key: data[key], **placeholder})
            scalars[key] = data[key]
        except ValidationError as exc:
            col.pydantic((), exc, HealthModel)

    extra = scalars.get("extra_columns", {}) or {}
    _cross_check(col, data, signals, segments, rules, traj, extra)

    col.issues.sort(key=lambda i: i.line or 0)
    errors = [i for i in col.issues if i.severity == "error"]
    if errors or tiers is None or traj is None:
        raise ModelError(col.issues)
    model = HealthModel.model_validate(
        {**scalars, "signals": signals, "segments": segments, "tiers": tiers, "rules": rules, "trajectory": traj}
    )
    warnings = tuple(i for i in col.issues if i.severity != "error")
    return LoadedModel(model=model, text=text, path=file, warnings=warnings)


def load_model(path: str | Path = "weights.yaml") -> LoadedModel:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError([ModelIssue(str(path), None, "", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise ModelError(
            [ModelIssue(str(path), None, "", f"not UTF-8 text (byte {exc.start}); save the file as UTF-8")]
        ) from None
    except OSError as exc:
        raise ModelError([ModelIssue(str(path), None, "", f"cannot read the file: {exc.strerror}")]) from None
    return parse_model(text, file=str(path))


def _cross_check(
    col: Collector,
    data: dict[str, Any],
    signals: dict[str, Signal],
    segments: dict[str, Segment],
    rules: list[Rule],
    traj: Trajectory | None,
    extra: dict[str, dict[str, str]],
) -> None:
    for table in extra:
        if table not in TABLES:
            col.add(("extra_columns", table), f"unknown table '{table}'{did_you_mean(table, TABLES)}")
    extra = {t: v for t, v in extra.items() if t in TABLES}
    accounts = _schema_for("accounts", extra)
    all_signal_names = set((data.get("signals") or {}).keys()) if isinstance(data.get("signals"), dict) else set()

    for name, sig in signals.items():
        base = ("signals", name)
        if name in accounts or name in RESULT_COLUMNS:
            col.add(base, f"signal name '{name}' clashes with a column of the same name; rename the signal")
        _check_signal(col, base, sig, extra)

    seg_names = list(segments)
    raw_segments = data.get("segments") or {}
    defaults = [n for n, s in segments.items() if s.when is None]
    if "segments" in data and not raw_segments:
        col.add(("segments",), "no segments: add at least a `default:` segment with weights")
    elif isinstance(raw_segments, dict) and not defaults and len(segments) == len(raw_segments):
        col.add(("segments",), "no default segment: add a last segment without `when` (e.g. `default:`)")
    if len(defaults) > 1:
        col.add(("segments", defaults[1]), f"only one segment may lack `when`; '{defaults[0]}' already does")
    if defaults and seg_names.index(defaults[0]) != len(seg_names) - 1:
        col.add(
            ("segments", defaults[0]),
            "the default segment (no `when`) must come last: segments after it could never match",
        )
    for seg_name, seg in segments.items():
        base = ("segments", seg_name)
        if seg.when is not None:
            problem = check_condition(seg.when, accounts)
            if problem:
                col.add(base + ("when",), problem)
        for sig_name in seg.weights:
            if sig_name not in all_signal_names:
                col.add(
                    base + ("weights", sig_name),
                    f"weight for unknown signal '{sig_name}'{did_you_mean(sig_name, all_signal_names)}",
                )

    rule_schema = {**accounts, **RESULT_COLUMNS, **{s: pl.Float64() for s in all_signal_names}}
    for i, rule in enumerate(rules):
        problem = check_condition(rule.when, rule_schema)
        if problem:
            col.add(("rules", i, "when"), problem)
    if traj is not None:
        for j, s in enumerate(traj.key_signals):
            if s not in all_signal_names:
                col.add(("trajectory", "key_signals", j), f"unknown signal '{s}'{did_you_mean(s, all_signal_names)}")


def _check_signal(col: Collector, base: tuple[Any, ...], sig: Signal, extra: dict[str, dict[str, str]]) -> None:
    schema = _schema_for(sig.table, extra)
    accounts = _schema_for("accounts", extra)
    if sig.where is not None:
        problem = check_condition(sig.where, schema)
        if problem:
            col.add(base + ("where",), problem)
    if sig.value is not None:
        _check_numeric(col, base + ("value",), sig.value, schema, sig.table)
    if sig.column is not None:
        if sig.column not in accounts:
            col.add(
                base + ("column",),
                f"unknown account column '{sig.column}'{did_you_mean(sig.column, accounts)}",
            )
        elif sig.measure == "age" and accounts[sig.column] != pl.Date():
            col.add(base + ("column",), f"measure `age` needs a date column; '{sig.column}' is {accounts[sig.column]}")
        elif sig.measure == "column" and not accounts[sig.column].is_numeric():
            col.add(base + ("column",), f"'{sig.column}' is not numeric; a signal needs a number")
    for side in ("numerator", "denominator"):
        op: Operand | None = getattr(sig, side)
        if op is None:
            continue
        if op.column is not None:
            if op.column not in accounts:
                col.add(base + (side, "column"), f"unknown account column '{op.column}'{did_you_mean(op.column, accounts)}")
            elif not accounts[op.column].is_numeric():
                col.add(base + (side, "column"), f"'{op.column}' is not numeric")
            continue
        op_schema = _schema_for(op.table, extra)  # type: ignore[arg-type]
        if op.where is not None:
            problem = check_condition(op.where, op_schema)
            if problem:
                col.add(base + (side, "where"), problem)
        if op.value is not None:
            _check_numeric(col, base + (side, "value"), op.value, op_schema, op.table or "")
        if op.table == "usage" and op.measure in ("sum", "mean") and op.metric is None:
            col.add(base + (side,), "a usage operand with sum/mean needs `metric`")
    if sig.measure in ("sum", "mean", "trend", "latest") and sig.table not in ("usage", "accounts") and sig.value is None:
        col.add(base, f"measure `{sig.measure}` on {sig.table} needs `value:` (the column to aggregate)")
    if sig.measure == "latest" and sig.lookback is None:
        col.add(base, "measure `latest` needs `lookback` (how old a value may be and still count)")
    if sig.explain is not None:
        try:
            bad = [f for f in _template_fields(sig.explain) if f not in ALLOWED_TEMPLATE_FIELDS]
        except ValueError as exc:
            col.add(base + ("explain",), f"cannot read the template {sig.explain!r}: {exc} (write braces as {{{{ }}}})")
            bad = []
        if bad:
            col.add(
                base + ("explain",),
                f"the template may only use {{value}} and {{label}}; found {{{bad[0]}}}"
                f"{did_you_mean(bad[0], ALLOWED_TEMPLATE_FIELDS)}",
            )
    if isinstance(sig.score, list):
        ys = [p[1] for p in sig.score]
        rising = ys[-1] > ys[0]
        if ys[-1] != ys[0] and rising != (sig.direction == "higher_is_better"):
            col.add(
                base + ("score",),
                f"direction is {sig.direction} but the sub-scores {'rise' if rising else 'fall'} with the raw value",
                severity="warning",
            )


def _check_numeric(col: Collector, path: tuple[Any, ...], name: str, schema: dict[str, pl.DataType], table: str) -> None:
    if name not in schema:
        col.add(path, f"unknown column '{name}' in {table}{did_you_mean(name, schema)}")
    elif not (schema[name].is_numeric() or schema[name] == pl.Boolean()):
        col.add(path, f"'{name}' in {table} is {schema[name]}, not a number")
