"""What a load returns: the valid tables, the rejected rows and every problem found."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

Severity = Literal["error", "warning"]


@dataclass
class Problem:
    """One problem found while loading, with enough detail for a user to fix it."""

    table: str
    column: str | None
    kind: str
    """missing_table, missing_column, bad_type, bad_date, ambiguous_format, null_id,
    duplicate_id, unknown_account, bad_value, unreadable_file, ..."""
    message: str
    """A full sentence: what is wrong, where, and what would fix it."""
    count: int = 0
    severity: Severity = "error"
    examples: list[dict[str, Any]] = field(default_factory=list)
    """A few offending rows as read, each with its `_line` (file line or row number)."""

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        return f"[{self.severity}] {where}: {self.message}"


@dataclass
class LoadResult:
    """The outcome of loading one source.

    `tables` holds only rows that passed validation, cast to the canonical types (extra
    columns kept). `rejected` holds, per table, the rows that did not, as they were read,
    with `_line` and `_reason` columns, so the user can see and fix them.
    """

    source: str
    tables: dict[str, pl.DataFrame]
    rejected: dict[str, pl.DataFrame] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors
