"""Words, colours and number formats shared by the pages."""

from __future__ import annotations

import datetime as dt

import polars as pl

from health.model import INSUFFICIENT
from health.timeline import SOURCE_LABELS

TIER_LABELS: dict[str, str] = {
    "at_risk": "At risk",
    "watch": "Watch",
    "healthy": "Healthy",
    INSUFFICIENT: "Insufficient data",
}
TIER_ICONS: dict[str, str] = {"at_risk": "🔴", "watch": "🟠", "healthy": "🟢", INSUFFICIENT: "⚪"}
TIER_COLORS: dict[str, str] = {
    "at_risk": "#d64545",
    "watch": "#f0a030",
    "healthy": "#3a9d5d",
    INSUFFICIENT: "#9aa0a6",
}
TABLE_LABELS: dict[str, str] = {
    "accounts": "Accounts",
    "usage": "Product usage",
    "tickets": "Support tickets",
    "invoices": "Billing",
    "surveys": "Surveys",
    "touchpoints": "Meetings & calls",
    "milestones": "Milestones",
    "outcomes": "Past renewals",
}


def tier_label(tier: str | None, icon: bool = True) -> str:
    if tier is None:
        return "—"
    text = TIER_LABELS.get(tier, tier.replace("_", " ").capitalize())
    return f"{TIER_ICONS.get(tier, '')} {text}".strip() if icon else text


def tier_label_expr(column: str = "tier") -> pl.Expr:
    mapping = {t: tier_label(t) for t in TIER_LABELS}
    return pl.col(column).replace_strict(mapping, default=pl.col(column))


def money(x: float | None) -> str:
    """$1.2M, $450k, $900."""
    if x is None:
        return "—"
    a = abs(x)
    sign = "-" if x < 0 else ""
    if a >= 1e6:
        return f"{sign}${a / 1e6:.1f}M"
    if a >= 1e4:
        return f"{sign}${a / 1e3:.0f}k"
    if a >= 1e3:
        return f"{sign}${a / 1e3:.1f}k"
    return f"{sign}${a:,.0f}"


def signed(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    text = f"{abs(x):.{digits}f}"
    if float(text) == 0:
        return "±0"
    return ("+" if x > 0 else "\u2212") + text


def renewal_words(renewal: dt.date | None, as_of: dt.date) -> str:
    if renewal is None:
        return "no renewal date"
    days = (renewal - as_of).days
    if days < 0:
        return f"{renewal:%d %b %Y} ({-days} days ago)"
    if days == 0:
        return f"{renewal:%d %b %Y} (today)"
    return f"{renewal:%d %b %Y} (in {days} days)"


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source, source)
