"""The at-risk worklist: the scored book as rows a CSM works through, most at risk first.

Pure functions over the current summary (`health.trajectory.summarize`): pick the
columns, filter by owner / segment / tier / renewal window / falling trajectory / text,
count the headline figures and encode the filters as URL query parameters (so a
filtered list can be shared as a link). Nothing here re-scores anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Mapping

import polars as pl

from health.segments import TIERS, days_to_renewal

ME = "me"
"""The owner filter value meaning "the accounts of whoever is looking"."""

RENEWAL_WINDOWS: tuple[int, ...] = (30, 90, 180)

# The URL vocabulary: query parameter values are the words the user sees, so a link reads
# `?owner=My+accounts&tier=At+risk&renewal=90+days` and a browser's bound widgets accept it.
ANY_OWNER, ANY_SEGMENT, ANY_TIME = "Everyone", "All segments", "Any time"
MY_ACCOUNTS = "My accounts"
TIER_WORDS: dict[str, str] = {"at_risk": "At risk", "watch": "Watch", "healthy": "Healthy", "insufficient_data": "Insufficient data"}
RENEWAL_WORDS: dict[int, str] = {d: f"{d} days" for d in RENEWAL_WINDOWS}


def owner_word(owner: str | None) -> str:
    return ANY_OWNER if not owner else MY_ACCOUNTS if owner == ME else owner


def renewal_word(days: int | None) -> str:
    return ANY_TIME if days is None else RENEWAL_WORDS.get(days, f"{days} days")


COLUMNS: tuple[str, ...] = (
    "account_id",
    "name",
    "segment",
    "owner",
    "arr",
    "renewal_date",
    "renewal_in_days",
    "score",
    "tier",
    "change_4w",
    "spark",
    "coverage",
    "drivers",
    "falling",
    "falling_reason",
    "moved_into_at_risk",
    "rule",
    "owner_email",
)


@dataclass(frozen=True)
class Filters:
    owner: str | None = None
    """An owner's name, ME for "my accounts", or None for everyone."""
    segment: str | None = None
    tiers: tuple[str, ...] = ()
    """Empty means every tier."""
    renewal_within: int | None = None
    """Renewing within this many days from the as-of date, or None for any time."""
    falling: bool = False
    """Only accounts whose trajectory is falling (an early warning)."""
    search: str = ""
    """Case-insensitive text matched against the account name and id."""

    def to_params(self) -> dict[str, str | list[str]]:
        """Query parameters for the non-default filters (a shareable link), in the words
        the widgets show; several tiers are repeated parameters (`?tier=At+risk&tier=Watch`)."""
        out: dict[str, str | list[str]] = {}
        if self.owner:
            out["owner"] = owner_word(self.owner)
        if self.segment:
            out["segment"] = self.segment
        if self.tiers:
            out["tier"] = [TIER_WORDS.get(t, t) for t in self.tiers]
        if self.renewal_within is not None:
            out["renewal"] = renewal_word(self.renewal_within)
        if self.falling:
            out["falling"] = "true"
        if self.search.strip():
            out["q"] = self.search.strip()
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, str | list[str]]) -> "Filters":
        """Read filters back from query parameters (the words, or the codes: `at_risk`,
        `90`, `me`); values that make no sense are dropped. Tiers may be repeated
        parameters or one comma-separated value."""
        raw = params.get("tier") or []
        raw = [raw] if isinstance(raw, str) else list(raw)
        by_word = {w.lower(): t for t, w in TIER_WORDS.items()} | {t: t for t in TIERS}
        tiers = tuple(
            dict.fromkeys(by_word[t.strip().lower()] for part in raw for t in part.split(",") if t.strip().lower() in by_word)
        )
        renewal: int | None
        text = str(params.get("renewal", "") or "").lower().removesuffix("days").strip()
        try:
            renewal = int(text)
            renewal = renewal if renewal > 0 else None
        except ValueError:
            renewal = None
        owner = str(params.get("owner") or "") or None
        if owner in (ANY_OWNER,):
            owner = None
        elif owner is not None and owner.lower() in (ME, MY_ACCOUNTS.lower()):
            owner = ME
        segment = str(params.get("segment") or "") or None
        return cls(
            owner=owner,
            segment=None if segment == ANY_SEGMENT else segment,
            tiers=tiers,
            renewal_within=renewal,
            falling=str(params.get("falling", "") or "").lower() in ("1", "true", "yes"),
            search=str(params.get("q", "") or ""),
        )

    def replace(self, **changes: object) -> "Filters":
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def worklist(summary: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """The rows of the at-risk view: one per active account, lowest score first
    (accounts without a score last), with `renewal_in_days` from `as_of`."""
    if summary.is_empty():
        return pl.DataFrame(schema={c: pl.String for c in COLUMNS})
    rows = summary.with_columns(days_to_renewal(as_of))
    present = [c for c in COLUMNS if c in rows.columns]
    missing = [pl.lit(None).alias(c) for c in COLUMNS if c not in rows.columns]
    return rows.select(*present, *missing).select(COLUMNS).sort(
        ["score", "arr"], descending=[False, True], nulls_last=True
    )


def owners_for(accounts: pl.DataFrame, who: str | None) -> list[str]:
    """The owner names that `who` (an email address or a name) stands for: matched on
    `owner_email` when the table has it, else on the owner name (both case-insensitive)."""
    if not who:
        return []
    key = who.strip().lower()
    hits: set[str] = set()
    if "owner_email" in accounts.columns:
        hits |= set(
            accounts.filter(pl.col("owner_email").str.to_lowercase() == key)["owner"].drop_nulls().to_list()
        )
    hits |= set(accounts.filter(pl.col("owner").str.to_lowercase() == key)["owner"].drop_nulls().to_list())
    return sorted(hits)


def apply_filters(rows: pl.DataFrame, f: Filters, me: Iterable[str] = ()) -> pl.DataFrame:
    """The rows that pass every filter; `me` is the owner names "my accounts" stands for."""
    cond = pl.lit(True)
    if f.owner == ME:
        cond = cond & pl.col("owner").is_in(list(me))
    elif f.owner:
        cond = cond & (pl.col("owner") == f.owner)
    if f.segment:
        cond = cond & (pl.col("segment") == f.segment)
    if f.tiers:
        cond = cond & pl.col("tier").is_in(list(f.tiers))
    if f.renewal_within is not None:
        cond = cond & pl.col("renewal_in_days").is_between(0, f.renewal_within)
    if f.falling:
        cond = cond & pl.col("falling").fill_null(False)
    text = f.search.strip().lower()
    if text:
        cond = cond & (
            pl.col("name").str.to_lowercase().str.contains(text, literal=True)
            | pl.col("account_id").str.to_lowercase().str.contains(text, literal=True)
        )
    return rows.filter(cond)


def headline(rows: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Accounts and ARR per tier, plus those that moved into at-risk in the last 4 weeks:
    {"at_risk": {"accounts": n, "arr": x}, ..., "moved_into_at_risk": {...}, "all": {...}}."""
    out: dict[str, dict[str, float]] = {}
    for tier in TIERS:
        part = rows.filter(pl.col("tier") == tier)
        out[tier] = {"accounts": part.height, "arr": float(part["arr"].sum() or 0.0)}
    moved = rows.filter(pl.col("moved_into_at_risk").fill_null(False))
    out["moved_into_at_risk"] = {"accounts": moved.height, "arr": float(moved["arr"].sum() or 0.0)}
    out["all"] = {"accounts": rows.height, "arr": float(rows["arr"].sum() or 0.0)}
    return out


def to_csv(rows: pl.DataFrame) -> str:
    """The rows as CSV for a spreadsheet: the sparkline becomes a ';'-separated list."""
    flat = rows.with_columns(
        pl.col("spark").list.eval(pl.element().round(1).cast(pl.String)).list.join(";").alias("spark")
        if "spark" in rows.columns and rows.schema["spark"] != pl.String
        else pl.col("spark") if "spark" in rows.columns else pl.lit(None),
    )
    if "spark" in flat.columns:
        flat = flat.rename({"spark": "score_last_12_weeks"})
    return flat.with_columns(pl.col(pl.Float64).round(2)).write_csv()
