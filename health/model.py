"""The health model (`weights.yaml`): one pydantic v2 model per section.

Parsing is split in two, the way dbt's semantic-interfaces do it: each section is
validated on its own (so one broken signal does not hide problems in another), then
cross-checks run over what parsed (weights name real signals, SQL conditions name real
columns, tiers are ordered, ...). `health.model_loader` turns every failure into a
`ModelIssue` with the file, the line and a "did you mean".
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

TIER_NAMES: tuple[str, ...] = ("at_risk", "watch", "healthy")
INSUFFICIENT = "insufficient_data"
TIER_ORDER: dict[str, int] = {"at_risk": 0, "watch": 1, "healthy": 2, INSUFFICIENT: 3}

Measure = Literal[
    "sum",
    "count",
    "mean",
    "trend",
    "share",
    "ratio",
    "latest",
    "days_since",
    "open_count",
    "open_max_age",
    "max_days_overdue",
    "age",
    "column",
]
MEASURES: tuple[str, ...] = get_args(Measure)

ValueFormat = Literal["number", "integer", "percent", "signed_percent", "days", "currency", "ratio"]

_DURATION = re.compile(r"^\s*(\d+)\s*([dw])\s*$")


def parse_days(text: str | int) -> int:
    """'28d' -> 28, '4w' -> 28, 28 -> 28."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration; write it like 28d or 4w")
    if isinstance(text, int):
        if text <= 0:
            raise ValueError("a duration must be positive")
        return text
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration; write it like 28d or 4w")
    n = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
    if n <= 0:
        raise ValueError("a duration must be positive")
    return n


Duration = Annotated[StrictStr | StrictInt, Field(description="a duration like 28d or 4w")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Operand(Strict):
    """One side of a `ratio`: a windowed aggregate over a table, or an account column."""

    table: Literal["usage", "tickets", "invoices", "surveys", "touchpoints", "milestones"] | None = None
    measure: Literal["sum", "count", "mean"] | None = None
    metric: str | None = None
    where: str | None = None
    value: str | None = None
    window: Duration | None = None
    column: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Operand":
        if self.column is not None:
            if any(v is not None for v in (self.table, self.measure, self.metric, self.where, self.window, self.value)):
                raise ValueError("an operand is either `column: <account column>` or a table measure, not both")
            return self
        missing = [k for k in ("table", "measure", "window") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a table operand needs {', '.join(missing)}")
        parse_days(self.window)  # type: ignore[arg-type]
        return self


class Signal(Strict):
    """A named, explainable measure over one canonical table (or the account columns)."""

    label: str
    table: Literal["accounts", "usage", "tickets", "invoices", "surveys", "touchpoints", "milestones"]
    measure: Measure
    description: str | None = None
    metric: str | None = None
    where: str | None = None
    value: str | None = None
    window: Duration | None = None
    lookback: Duration | None = None
    of: str | None = None
    numerator: Operand | None = None
    denominator: Operand | None = None
    column: str | None = None
    direction: Literal["higher_is_better", "lower_is_better"] = "higher_is_better"
    score: list[tuple[float, float]] | Literal["percentile"]
    missing: Literal["drop", "neutral", "worst"] = "drop"
    format: ValueFormat = "number"
    explain: str | None = None

    @field_validator("score")
    @classmethod
    def _points(cls, v: list[tuple[float, float]] | str) -> list[tuple[float, float]] | str:
        if isinstance(v, str):
            return v
        if len(v) < 2:
            raise ValueError("give at least two [raw value, sub-score] points")
        xs = [p[0] for p in v]
        if not all(math.isfinite(x) and math.isfinite(y) for x, y in v):
            raise ValueError("score points must be finite numbers (no .nan / .inf)")
        if any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"the raw values of the points must increase strictly, got {xs}")
        bad = [p[1] for p in v if not 0 <= p[1] <= 100]
        if bad:
            raise ValueError(f"sub-scores must lie in 0..100, got {bad}")
        return v

    @field_validator("window", "lookback")
    @classmethod
    def _duration(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_days(v)
        return v

    @model_validator(mode="after")
    def _needs(self) -> "Signal":
        m = self.measure
        need: list[str] = []
        if m in ("sum", "count", "mean", "trend", "share") and self.window is None:
            need.append("window")
        if m in ("sum", "mean", "trend", "share", "latest") and self.table == "usage" and self.metric is None:
            need.append("metric")
        if m == "share" and self.of is None:
            need.append("of (the metric it is a share of)")
        if m == "ratio" and (self.numerator is None or self.denominator is None):
            need.append("numerator and denominator")
        if m in ("age", "column") and self.column is None:
            need.append("column")
        if need:
            raise ValueError(f"measure `{m}` needs {' and '.join(need)}")
        if m in ("age", "column") and self.table != "accounts":
            raise ValueError(f"measure `{m}` reads an account column: set `table: accounts`")
        if self.table == "accounts" and m not in ("age", "column", "ratio"):
            raise ValueError(f"measure `{m}` needs an event table, not accounts")
        if m == "open_count" or m == "open_max_age":
            if self.table not in ("tickets", "invoices"):
                raise ValueError(f"measure `{m}` works on tickets (opened/closed) or invoices (issued/paid)")
        if m == "max_days_overdue" and self.table != "invoices":
            raise ValueError("measure `max_days_overdue` works on the invoices table")
        if self.metric is not None and self.table != "usage" and m != "ratio":
            raise ValueError("`metric` filters the usage table; use `where` for other tables")
        return self

    @property
    def window_days(self) -> int | None:
        return parse_days(self.window) if self.window is not None else None

    @property
    def lookback_days(self) -> int | None:
        return parse_days(self.lookback) if self.lookback is not None else None


class Tiers(Strict):
    """Score thresholds: below `at_risk` is at risk, below `watch` is watch, else healthy."""

    at_risk: float = Field(ge=0, le=100)
    watch: float = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> "Tiers":
        if not self.at_risk < self.watch:
            raise ValueError(
                f"tiers must be ordered: at_risk ({self.at_risk}) must be below watch ({self.watch})"
            )
        return self


class Segment(Strict):
    when: str | None = None
    description: str | None = None
    weights: dict[str, float]
    tiers: Tiers | None = None

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("a segment needs at least one weight")
        odd = [k for k, w in v.items() if not math.isfinite(w)]
        if odd:
            raise ValueError(f"weights must be finite numbers: {', '.join(odd)}")
        neg = [k for k, w in v.items() if w < 0]
        if neg:
            raise ValueError(f"weights must not be negative: {', '.join(neg)}")
        if sum(v.values()) <= 0:
            raise ValueError("at least one weight must be above zero")
        return v


class Rule(Strict):
    name: str
    when: str
    tier: Literal["at_risk", "watch", "healthy"]
    reason: str | None = None


class Trajectory(Strict):
    """Early warning: flag an account whose score or a key signal falls fast."""

    weeks: int = Field(default=4, ge=1, le=26)
    score_drop: float = Field(default=10, gt=0, description="points lost over `weeks`")
    key_signals: list[str] = Field(default_factory=list)
    signal_drop: float = Field(default=25, gt=0, description="sub-score points lost over `weeks`")


class HealthModel(Strict):
    version: int | str | None = None
    description: str | None = None
    min_coverage: float = Field(default=0.5, ge=0, le=1)
    extra_columns: dict[str, dict[str, Literal["string", "number", "integer", "date", "boolean"]]] = Field(
        default_factory=dict
    )
    signals: dict[str, Signal]
    segments: dict[str, Segment]
    tiers: Tiers
    rules: list[Rule] = Field(default_factory=list)
    trajectory: Trajectory = Field(default_factory=Trajectory)

    def segment_tiers(self, segment: str) -> Tiers:
        return self.segments[segment].tiers or self.tiers

    @property
    def used_signals(self) -> list[str]:
        """Signals with a weight in some segment, in declaration order."""
        used = {s for seg in self.segments.values() for s, w in seg.weights.items()}
        return [s for s in self.signals if s in used]
