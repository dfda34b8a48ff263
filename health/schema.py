"""The data contract: the eight canonical tables every source is mapped onto.

Each table has a grain, required and optional columns with their Polars types, the
columns that identify a row, and the column that says *when* a record became known
(used for point-in-time scoring). Extra columns a source brings are kept and usable in
rules; only the columns named here are type-checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

ACCOUNT_KEY = "account_id"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    grain: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    """Columns that must be unique together (duplicates are rejected)."""
    time_column: str | None = None
    """When a record became known: the column point-in-time filters use."""
    required: bool = False
    """A required table must be present in every source (only `accounts`)."""
    references_accounts: bool = True
    """Rows must name an account_id present in `accounts`."""
    allowed_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Closed vocabularies: values outside them are rejected."""

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def optional_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if not c.required)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def polars_schema(self, include_optional: bool = True) -> pl.Schema:
        return pl.Schema(
            {c.name: c.dtype for c in self.columns if c.required or include_optional}
        )


def _c(name: str, dtype: pl.DataType, required: bool = True, description: str = "") -> Column:
    return Column(name, dtype, required, description)


STR = pl.String()
F64 = pl.Float64()
I64 = pl.Int64()
DATE = pl.Date()
TS = pl.Datetime("us")
BOOL = pl.Boolean()

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            name="accounts",
            grain="one row per account",
            columns=(
                _c("account_id", STR),
                _c("name", STR),
                _c("segment", STR, description="the source's segment label (smb, mid, enterprise, ...)"),
                _c("owner", STR, description="the CSM who owns the account"),
                _c("arr", F64, description="annual recurring revenue today"),
                _c("renewal_date", DATE, description="next renewal date (a snapshot of today)"),
                _c("start_date", DATE, False, "customer since"),
                _c("crm_id", STR, False, "the account's id in the CRM"),
                _c("owner_email", STR, False),
                _c("region", STR, False),
                _c("industry", STR, False),
                _c("plan", STR, False),
                _c("seats", I64, False),
                _c("contract_months", I64, False),
            ),
            key=("account_id",),
            time_column=None,
            required=True,
            references_accounts=False,
        ),
        TableSpec(
            name="usage",
            grain="account x day (or week) x metric",
            columns=(
                _c("account_id", STR),
                _c("date", DATE),
                _c("metric", STR),
                _c("value", F64),
            ),
            key=("account_id", "date", "metric"),
            time_column="date",
        ),
        TableSpec(
            name="tickets",
            grain="one row per support ticket",
            columns=(
                _c("ticket_id", STR),
                _c("account_id", STR),
                _c("opened_at", TS),
                _c("priority", STR),
                _c("closed_at", TS, False),
                _c("status", STR, False),
                _c("sentiment", F64, False, "-1 (angry) .. 1 (happy)"),
                _c("escalated", BOOL, False),
                _c("subject", STR, False),
            ),
            key=("ticket_id",),
            time_column="opened_at",
        ),
        TableSpec(
            name="invoices",
            grain="one row per invoice",
            columns=(
                _c("invoice_id", STR),
                _c("account_id", STR),
                _c("issued_at", DATE),
                _c("due_date", DATE),
                _c("amount", F64),
                _c("paid_at", DATE, False),
                _c("status", STR, False),
            ),
            key=("invoice_id",),
            time_column="issued_at",
        ),
        TableSpec(
            name="surveys",
            grain="one row per survey response",
            columns=(
                _c("response_id", STR),
                _c("account_id", STR),
                _c("responded_at", DATE),
                _c("kind", STR, description="nps or csat"),
                _c("score", F64),
                _c("comment", STR, False),
                _c("respondent", STR, False),
            ),
            key=("response_id",),
            time_column="responded_at",
        ),
        TableSpec(
            name="touchpoints",
            grain="one row per meeting or call",
            columns=(
                _c("touchpoint_id", STR),
                _c("account_id", STR),
                _c("at", DATE),
                _c("kind", STR, description="exec_meeting, qbr, call, ..."),
                _c("notes", STR, False),
                _c("participants", STR, False),
            ),
            key=("touchpoint_id",),
            time_column="at",
        ),
        TableSpec(
            name="milestones",
            grain="one row per lifecycle event",
            columns=(
                _c("account_id", STR),
                _c("at", DATE),
                _c("kind", STR, description="kickoff, go_live, feature_adopted, champion_left, ..."),
                _c("description", STR, False),
            ),
            key=(),
            time_column="at",
        ),
        TableSpec(
            name="outcomes",
            grain="one row per past renewal",
            columns=(
                _c("account_id", STR),
                _c("renewal_date", DATE),
                _c("outcome", STR, description="renewed, churned, downgraded or expanded"),
                _c("arr_before", F64, False),
                _c("arr_after", F64, False),
            ),
            key=("account_id", "renewal_date"),
            time_column="renewal_date",
            allowed_values={"outcome": ("renewed", "churned", "downgraded", "expanded")},
        ),
    )
}

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)


def table_spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(
            f"unknown table {name!r}; the canonical tables are {', '.join(TABLE_NAMES)}"
        ) from None
