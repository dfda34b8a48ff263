"""The built-in sample source: a generated, realistic book of B2B SaaS accounts.

The book is deterministic for a seed and written as one Parquet file per canonical table
(see `health.schema`), so the app runs on a fresh machine with no credentials and the
health model can be back-tested against known renewals.

How the story is made (the part that matters for back-tests): every account's contract
periods are laid out from its start date and term. Each period draws a latent risk; an
at-risk period develops a decline that starts 3-9 months before its renewal (a champion
leaves, usage and feature adoption fall, tickets rise and turn sour, exec meetings lapse,
NPS drops, invoices get paid late) and then usually ends in churn or a downgrade, while
some recover. Healthy periods carry noise (incident bursts, transient dips, a grumpy NPS
respondent) and a few churn without warning (acquisition, budget freeze). Every signal
is a function of one shared "decline depth" per account and day, so the signals agree
with each other the way they do in a real book, without any of them seeing the future.

Time is integer day numbers (days since 1970-01-01) inside the generator; the window is
the `HISTORY_DAYS` days ending on `end_date`. A churned account's last customer day is
the day before its renewal date, which is also its churn date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from health.loading import LoadResult
from health.schema import TABLE_NAMES, TABLES
from sources.base import SourceConfigError
from sources.registry import register

END_DATE = dt.date(2026, 11, 30)
HISTORY_DAYS = 730
SAMPLE_VERSION = 2
DEFAULT_ACCOUNTS = 600
DEFAULT_SEED = 7
DEFAULT_PATH = "data/sample"

METRICS: tuple[str, ...] = ("active_users", "events", "feature_automations", "feature_dashboards")
SEGMENTS: tuple[str, ...] = ("smb", "mid", "enterprise")
REGIONS: tuple[str, ...] = ("NA", "EMEA", "APAC", "LATAM")
PLANS: tuple[str, ...] = ("starter", "growth", "enterprise")
OUTCOMES: tuple[str, ...] = ("renewed", "expanded", "downgraded", "churned")
PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")

SMB, MID, ENT = 0, 1, 2
RENEWED, EXPANDED, DOWNGRADED, CHURNED = 0, 1, 2, 3
NO_DIP, DECLINE, RECOVER, TRANSIENT = 0, 1, 2, 3

_MAX_TENURE_DAYS = 5 * 365
"""The oldest account started five years before the end of history."""
_USAGE_CHUNK = 2_000
"""Accounts per usage chunk: bounds memory at any book size (about 6M rows a chunk)."""
_SLOTS = 4
"""Contract periods tracked per account: a 12-month term meets at most 4 in 730 days."""
_FAR = np.int64(10**7)
"""A day number far beyond any real date: the end of a slot that does not exist."""
_DAY_US = 86_400_000_000
_ACCOUNT_COLUMNS = (*TABLES["accounts"].polars_schema().names(), "status")

# ---------------------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------------------

# fmt: off

_SENIOR_CSMS = ("Maya Patel", "Daniel Okafor", "Sarah Lindqvist")
_CSMS = (*_SENIOR_CSMS, "James Whitaker", "Priya Raman", "Lucas Moreau", "Emily Chen",
         "Carlos Mendes", "Hannah Brooks", "Tom Fischer")

_FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Ethan", "Sophia", "Mason", "Isabella", "Lucas",
    "Mia", "Aiden", "Amelia", "James", "Harper", "Benjamin", "Evelyn", "Elijah", "Abigail",
    "Daniel", "Priya", "Arjun", "Mei", "Wei", "Hiroshi", "Yuki", "Sofia", "Mateo", "Lucia",
    "Diego", "Fatima", "Omar", "Amara", "Kwame", "Ingrid", "Lars", "Anna", "Jonas", "Chloe",
    "Hugo", "Camille", "Louis", "Giulia", "Marco", "Elena", "Pavel", "Zoe", "Ryan", "Grace",
    "Nathan", "Hannah", "Samuel", "Leah", "David", "Rachel", "Adrian", "Nina", "Tomas",
    "Aisha", "Raj",
)
_LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Patel", "Nguyen", "Kim", "Chen", "Rossi", "Silva", "Okafor",
    "Andersson", "Kowalski", "Dubois", "Tanaka", "Sato", "Hernandez", "Lopez", "Brown",
    "Davis", "Wilson", "Taylor", "Thomas", "Moore", "Martin", "Lee", "Walker", "Hall",
    "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Carter",
    "Mitchell", "Perez", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans",
    "Edwards", "Collins", "Stewart", "Morris", "Murphy", "Cook", "Rogers", "Reed", "Bailey",
    "Bell", "Cooper", "Richardson", "Ward", "Fischer", "Novak", "Costa", "Haddad", "Mensah",
)
_ROLES = (
    "VP Operations", "Head of Customer Success", "Analytics Lead", "IT Director",
    "Operations Manager", "CFO", "COO", "Director of Revenue Operations", "Product Manager",
    "Head of Data", "Program Manager", "Sales Operations Lead", "CTO", "Finance Manager",
)

_PREFIXES = (
    "Northwind", "Bluepeak", "Silverline", "Redwood", "Ironbridge", "Clearwater",
    "Brightpath", "Summit", "Evergreen", "Granite", "Harbor", "Lakeshore", "Maple", "Oakridge",
    "Pinecrest", "Riverbend", "Stonegate", "Sunrise", "Westfield", "Crescent", "Falcon",
    "Horizon", "Keystone", "Lighthouse", "Meridian", "Nova", "Orchard", "Pioneer", "Quantum",
    "Sterling", "Trident", "Vantage", "Willow", "Aurora", "Beacon", "Cedar", "Delta", "Ember",
    "Frontier", "Golden", "Highland", "Juniper", "Kestrel", "Lumen", "Magnolia", "Northstar",
    "Onyx", "Pacific", "Quarry", "Rainier", "Sapphire", "Tidewater", "Union", "Vertex",
    "Wildflower", "Zenith", "Alder", "Birch", "Cobalt", "Driftwood", "Eastgate", "Foxglove",
    "Glacier", "Hawthorne", "Indigo", "Jasper", "Kingsley", "Larkspur", "Mosaic", "Nimbus",
    "Oakmont", "Paragon", "Redstone", "Saltmarsh", "Tamarack", "Upland", "Valor", "Wavecrest",
    "Arbor", "Bramble", "Copperfield", "Dunmore", "Elmwood", "Fairhaven", "Greystone",
    "Hollowbrook", "Ironwood", "Kingfisher", "Lodestar", "Marigold", "Newhaven", "Oakhurst",
    "Peregrine", "Ravenwood", "Seabright", "Thornbury", "Vireo", "Whitecap", "Ashford",
    "Bayview", "Coldspring", "Deerfield", "Everest", "Fernhill", "Goldcrest", "Halcyon",
    "Ivory", "Jetstream", "Kinetic", "Lakemont", "Millbrook", "Northgate", "Overlook",
    "Prairie", "Quillon", "Rosewood", "Starling", "Tallpine", "Umber", "Verdant", "Westbrook",
    "Yarrow", "Blackstone", "Crestview", "Dovetail", "Emberly", "Flintridge", "Greenleaf",
)
_INDUSTRY_NOUNS: dict[str, tuple[str, ...]] = {
    "Logistics": ("Logistics", "Freight", "Shipping", "Transport", "Cargo", "Fleet"),
    "Healthcare": ("Health", "Medical", "Clinics", "Care", "Biosciences", "Diagnostics"),
    "Financial Services": ("Capital", "Financial", "Bank", "Insurance", "Wealth", "Payments"),
    "Manufacturing": ("Manufacturing", "Industries", "Fabrication", "Components", "Materials",
                      "Robotics"),
    "Retail": ("Retail", "Outfitters", "Goods", "Markets", "Apparel", "Home"),
    "Software": ("Software", "Analytics", "Cloud", "Systems", "Data", "Labs"),
    "Education": ("Learning", "Academy", "Education", "Schools"),
    "Media": ("Media", "Studios", "Publishing", "Creative"),
    "Energy": ("Energy", "Power", "Solar", "Utilities", "Renewables"),
    "Real Estate": ("Properties", "Realty", "Estates", "Housing"),
    "Hospitality": ("Hotels", "Hospitality", "Resorts", "Travel"),
    "Professional Services": ("Consulting", "Advisors", "Partners", "Legal", "Staffing"),
}
_INDUSTRIES: tuple[str, ...] = tuple(_INDUSTRY_NOUNS)
_NOUNS: tuple[tuple[str, int], ...] = tuple(
    (noun, i) for i, nouns in enumerate(_INDUSTRY_NOUNS.values()) for noun in nouns
)
_LEGAL_SUFFIXES = ("", "Group", "Inc.", "Co.", "Holdings", "International", "Collective",
                   "Worldwide", "Ltd", "LLC", "Global", "& Co.", "Corp.", "Ventures")

_SUBJECTS: dict[str, tuple[str, ...]] = {
    "P1": (
        "Production outage: dashboards not loading for all users",
        "SSO login failing for EU users",
        "API returning 500 errors on every request",
        "Data sync stopped since last night",
        "Scheduled automations not running",
        "Users locked out after password policy change",
    ),
    "P2": (
        "Export to CSV times out",
        "Salesforce integration duplicating records",
        "Dashboard numbers do not match finance report",
        "Webhook deliveries delayed by several hours",
        "Bulk user import fails halfway",
        "Automation runs twice for the same trigger",
        "Reports very slow since the last release",
        "SAML assertion rejected for new subdomain",
    ),
    "P3": (
        "Chart legend overlaps on small screens",
        "Timezone wrong on scheduled report emails",
        "Filter resets when switching tabs",
        "Cannot rename a shared dashboard",
        "Audit log missing entries for API changes",
        "PDF export cuts off the last column",
        "Notification emails going to spam",
        "Custom field not available in automations",
    ),
    "P4": (
        "How do I set up a weekly digest?",
        "Request: dark mode for dashboards",
        "Question about seat licensing on renewal",
        "How to give read-only access to contractors",
        "Feature request: Slack alerts for automations",
        "Where can I find the API rate limits?",
        "Training materials for new team members",
        "Request: more granular permissions",
    ),
    "incident": (
        "Platform unavailable: all users affected",
        "Incident: data pipeline delayed",
        "Login errors across the whole org",
        "Dashboards timing out during incident",
    ),
}

_NOTES: dict[str, tuple[str, ...]] = {
    "call/ok": (
        "Quick check-in; team happy with the new automations",
        "Walked through dashboard sharing for the ops team",
        "Answered questions on the API and rate limits",
        "Reviewed open tickets; nothing blocking",
        "Shared tips on scheduled reports; admin will roll out",
        "Discussed onboarding of the new analysts next month",
        "Confirmed training session for the regional leads",
    ),
    "call/worried": (
        "Champion raised concerns about reporting gaps",
        "Usage down since the reorg; agreed a recovery plan",
        "Admin frustrated with open tickets; escalated internally",
        "Customer evaluating a cheaper competitor",
        "Team asked how to reduce seats at renewal",
        "New manager questioning the value of the tool",
        "No reply to last two follow-ups; chased by email",
    ),
    "qbr/ok": (
        "QBR: usage up quarter on quarter; discussed expansion to EMEA team",
        "QBR: agreed success plan for next quarter; exec sponsor engaged",
        "QBR: reviewed ROI, automations saving ~20 hours a week",
        "QBR: roadmap preview well received; interest in the AI add-on",
        "QBR: adoption targets met; planning rollout to finance",
    ),
    "qbr/worried": (
        "QBR: sponsor asked for a pricing review ahead of renewal",
        "QBR: adoption below plan; customer unsure about renewal",
        "QBR: open P1s dominated the meeting; trust is low",
        "QBR: key users moved to another tool for reporting",
        "QBR: shortened to 20 minutes; sponsor did not attend",
    ),
    "exec_meeting/ok": (
        "Exec sync: sponsor sees us as strategic; multi-year discussed",
        "Exec sync: aligned on company-wide rollout next year",
        "Exec dinner: strong relationship; intro to their CIO",
        "Exec sync: discussed expansion budget for next fiscal year",
    ),
    "exec_meeting/worried": (
        "Exec sync: CFO reviewing all software spend",
        "Exec sync: sponsor disappointed with support response times",
        "Exec sync: new VP wants to consolidate vendors",
    ),
    "onboarding/ok": (
        "Onboarding: admin setup and SSO configuration",
        "Onboarding: data connections and first dashboards",
        "Onboarding: automation workshop with power users",
        "Onboarding: training for end users, recording shared",
    ),
}
_NOTE_KINDS = ("call", "qbr", "exec_meeting", "onboarding")

_NPS_COMMENTS: dict[str, tuple[str, ...]] = {
    "detractor": (
        "Too many outages lately, my team has lost trust.",
        "Reporting does not cover what we need; we export to spreadsheets.",
        "Support takes days to respond to urgent issues.",
        "Price is hard to justify for how little we use it.",
        "Our champion left and nobody knows how to use it well.",
    ),
    "passive": (
        "Does the job, but the reporting could be better.",
        "Good product, onboarding of new users is still slow.",
        "Solid, though some features feel half finished.",
        "Fine for our needs; would like better integrations.",
    ),
    "promoter": (
        "Automations save my team hours every week.",
        "Great support and the dashboards are loved by leadership.",
        "Easy to roll out, our whole department uses it daily.",
        "Best tool we have bought this year.",
    ),
}
_CSAT_COMMENTS: dict[str, tuple[str, ...]] = {
    "low": (
        "Took far too long to resolve.",
        "Issue is not really fixed, just worked around.",
        "Had to chase several times for an update.",
    ),
    "mid": ("Resolved, but it took a while.", "OK in the end."),
    "high": (
        "Quick and helpful, thank you!",
        "Great support, fixed within the hour.",
        "Clear explanation and fast fix.",
    ),
}

_FEATURES = (
    ("Automations", "workflow builder live for the ops team"),
    ("Dashboards", "executive reporting shared with leadership"),
)
_SURPRISE_REASONS = (
    ("acquisition_announced", "Acquired by a larger group; parent company standardising tools",
     "Did not renew: acquired, consolidating onto the parent's vendor"),
    ("budget_cut", "Company-wide budget freeze announced; all non-core tools under review",
     "Did not renew: budget cut, tool deemed non-essential"),
)
_CHURN_REASONS = (
    "Did not renew: moved to a competitor",
    "Did not renew: low adoption, could not justify the spend",
    "Did not renew: building an in-house solution",
    "Did not renew: consolidated onto an existing platform",
)

# fmt: on


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent random stream per table (and chunk), so tables do not shift each other."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _day_number(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def _add_months(days: np.ndarray, months: np.ndarray | int) -> np.ndarray:
    """Day numbers moved by whole months, the day of month clipped to the month's length."""
    d = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    month = d.astype("datetime64[M]")
    dom = (d - month.astype("datetime64[D]")).astype(np.int64)
    target = month + np.asarray(months, dtype=np.int64)
    month_len = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(
        np.int64
    )
    return (target.astype("datetime64[D]") + np.minimum(dom, month_len - 1)).astype(np.int64)


def _weekday(days: np.ndarray) -> np.ndarray:
    """0 = Monday .. 6 = Sunday (1970-01-01 was a Thursday)."""
    return (days + 3) % 7


def _month_of(days: np.ndarray) -> np.ndarray:
    months_since_epoch = np.asarray(days, dtype="datetime64[D]").astype("datetime64[M]")
    return months_since_epoch.astype(np.int64) % 12 + 1


def _day_of_month(days: np.ndarray) -> np.ndarray:
    d = np.asarray(days, dtype="datetime64[D]")
    return (d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1


def _to_weekday(days: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Move weekend days to the next Monday, or back to Friday when Monday is out of range."""
    wd = _weekday(days)
    weekend = wd >= 5
    monday = days + (7 - wd)
    friday = days - (wd - 4)
    out = np.where(weekend & (monday <= hi), monday, days)
    return np.where(weekend & (monday > hi) & (friday >= lo), friday, out)


def _choice(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (rows, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return (u > cum).sum(axis=1)


def _pick(options: Sequence[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(list(options), dtype=pl.String).gather(np.asarray(idx, dtype=np.int64))


def _pick_grouped(
    lists: Sequence[Sequence[str]], group: np.ndarray, rng: np.random.Generator
) -> pl.Series:
    """For each row, a uniformly chosen string from the list its group names."""
    sizes = np.array([len(x) for x in lists])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.floor(rng.random(len(group)) * sizes[group]).astype(np.int64)
    return _pick([s for x in lists for s in x], offsets[group] + within)


def _ids(prefix: str, n: int, width: int) -> pl.Series:
    width = max(width, len(str(n)))
    numbers = pl.Series(np.arange(1, n + 1, dtype=np.int64)).cast(pl.String).str.zfill(width)
    return pl.select(pl.lit(prefix) + numbers).to_series()


def _dates(days: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(days, dtype=np.int32)).cast(pl.Date)


def _datetimes(micros: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(micros, dtype=np.int64)).cast(pl.Datetime("us"))


def _person_names(rng: np.random.Generator, n: int) -> pl.Series:
    first = rng.integers(0, len(_FIRST_NAMES), n)
    last = rng.integers(0, len(_LAST_NAMES), n)
    return pl.select(
        pl.format("{} {}", _pick(_FIRST_NAMES, first), _pick(_LAST_NAMES, last))
    ).to_series()


def _people_with_roles(rng: np.random.Generator, n: int) -> pl.Series:
    roles = _pick(_ROLES, rng.integers(0, len(_ROLES), n))
    return pl.select(pl.format("{}, {}", _person_names(rng, n), roles)).to_series()


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row index repeated `counts` times, and each copy's number within its row (0..c-1)."""
    counts = np.asarray(counts, dtype=np.int64)
    rows = np.repeat(np.arange(len(counts)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    within = np.arange(counts.sum()) - np.repeat(starts, counts)
    return rows, within


# ---------------------------------------------------------------------------------------
# Accounts and contract periods
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Book:
    """Account-level facts as numpy arrays (index i is account i) and the time frame."""

    first: int
    """First day of history (day number)."""
    end: int
    """Last day of history (day number)."""
    ids: pl.Series
    names: list[str]
    owners: list[str]
    owner: np.ndarray
    segment: np.ndarray
    region: np.ndarray
    industry: np.ndarray
    plan: np.ndarray
    start: np.ndarray
    seats: np.ndarray
    arr: np.ndarray
    contract_months: np.ndarray
    bill_months: np.ndarray
    golive: np.ndarray
    """Days from start to go-live."""
    engagement: np.ndarray
    """Share of seats active on an ordinary weekday once fully rolled out."""
    intensity: np.ndarray
    """Events per active user per day."""
    adopt_max: np.ndarray
    """(n, 2): the share of active users that eventually use each key feature."""
    adopt_days: np.ndarray
    """(n, 2): days after go-live when a feature reaches half its adoption."""
    frailty: np.ndarray
    """A persistent account-level risk: at-risk periods recur on frail accounts."""
    satisfaction: np.ndarray
    ticket_rate: np.ndarray
    """Ordinary tickets per month."""

    @property
    def n(self) -> int:
        return len(self.start)


def _company_names(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """Unique plausible company names and the industry each name suggests."""
    n_pairs = len(_PREFIXES) * len(_NOUNS)
    space = n_pairs * len(_LEGAL_SUFFIXES)
    if n > space:
        raise ValueError(f"the sample can name at most {space} accounts, asked for {n}")
    pool = n_pairs if n <= n_pairs // 2 else space
    picks = rng.choice(pool, size=n, replace=False)
    suffix, pair = np.divmod(picks, n_pairs)
    prefix, noun = np.divmod(pair, len(_NOUNS))
    names = [
        " ".join(w for w in (_PREFIXES[p], _NOUNS[q][0], _LEGAL_SUFFIXES[s]) if w)
        for p, q, s in zip(prefix.tolist(), noun.tolist(), suffix.tolist(), strict=True)
    ]
    industry = np.array([_NOUNS[q][1] for q in noun.tolist()], dtype=np.int64)
    return names, industry


def _owner_names(n_owners: int) -> list[str]:
    names = list(_CSMS[:n_owners])
    taken = set(names)
    for first in _FIRST_NAMES:
        for last in _LAST_NAMES:
            if len(names) >= n_owners:
                return names
            candidate = f"{first} {last}"
            if candidate not in taken:
                names.append(candidate)
                taken.add(candidate)
    return names


def _assign_owners(rng: np.random.Generator, segment: np.ndarray) -> tuple[list[str], np.ndarray]:
    """About 60 accounts per CSM; enterprise sits with the senior CSMs (the first ~30%)."""
    n_owners = max(4, round(len(segment) / 60))
    owners = _owner_names(n_owners)
    n_senior = max(1, round(n_owners * 0.3))
    senior = rng.integers(0, n_senior, len(segment))
    junior = rng.integers(n_senior, n_owners, len(segment))
    anyone = rng.integers(0, n_owners, len(segment))
    owner = np.where(segment == ENT, senior, np.where(segment == SMB, junior, anyone))
    return owners, owner


def _draw_accounts(rng: np.random.Generator, n: int, end: int) -> _Book:
    segment = _choice(rng, np.tile([0.55, 0.30, 0.15], (n, 1)))
    seat_lo = np.array([5, 50, 300])[segment]
    seat_hi = np.array([50, 300, 5000])[segment]
    seats = np.round(np.exp(rng.uniform(np.log(seat_lo), np.log(seat_hi)))).astype(np.int64)
    per_seat = np.array([560.0, 480.0, 330.0])[segment] * np.exp(rng.normal(0, 0.25, n))
    arr_lo = np.array([5_000, 30_000, 150_000])[segment]
    arr_hi = np.array([30_000, 150_000, 1_500_000])[segment]
    arr = np.round(np.clip(seats * per_seat, arr_lo, arr_hi), -2)

    term_options = np.array([[12, 12, 12], [12, 24, 24], [12, 24, 36]])
    term_probs = np.array([[1.0, 0, 0], [0.6, 0.4, 0], [0.4, 0.35, 0.25]])
    contract_months = term_options[segment, _choice(rng, term_probs[segment])]
    bill_options = np.array([[1, 1], [3, 12], [12, 12]])
    bill_months = bill_options[segment, (rng.random(n) < 0.5).astype(np.int64)]

    plan_probs = np.array([[0.7, 0.3, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 1.0]])
    plan = _choice(rng, plan_probs[segment])
    region = _choice(rng, np.tile([0.45, 0.30, 0.15, 0.10], (n, 1)))

    tenure = 14 + np.floor((_MAX_TENURE_DAYS - 14) * rng.random(n) ** 1.3).astype(np.int64)
    start = end - tenure
    frailty = rng.normal(0, 0.7, n)
    engagement = np.clip(0.62 - 0.07 * frailty + rng.normal(0, 0.1, n), 0.22, 0.92)
    adopt_max = np.clip(
        np.column_stack([rng.beta(2.2, 3.0, n), rng.beta(3.5, 2.5, n)]) - 0.05 * frailty[:, None],
        0.02,
        0.95,
    )
    names, industry = _company_names(rng, n)
    owners, owner = _assign_owners(rng, segment)
    return _Book(
        first=end - HISTORY_DAYS + 1,
        end=end,
        ids=_ids("ACC-", n, 5),
        names=names,
        owners=owners,
        owner=owner,
        segment=segment,
        region=region,
        industry=industry,
        plan=plan,
        start=start,
        seats=seats,
        arr=arr,
        contract_months=contract_months,
        bill_months=bill_months,
        golive=rng.integers(30, 91, n),
        engagement=engagement,
        intensity=np.exp(rng.normal(np.log(30), 0.35, n)),
        adopt_max=adopt_max,
        adopt_days=rng.uniform(20, 220, (n, 2)),
        frailty=frailty,
        satisfaction=rng.normal(0, 0.7, n) - 0.3 * frailty,
        ticket_rate=0.2 * seats**0.42 * np.exp(rng.normal(0, 0.35, n)),
    )


@dataclass(frozen=True)
class _Periods:
    """Contract periods per account as (n, _SLOTS) arrays; slot j follows slot j-1.

    Slot 0 is the period running on the first day of history (or the first period of an
    account that started later); the last valid slot is the current contract, or the one
    that ended in churn. Each slot has a "dip": a window [dip_start, dip_end] and a shape
    (DECLINE to renewal, RECOVER before renewal, or a TRANSIENT noise dip).
    """

    start: np.ndarray
    end: np.ndarray
    """The renewal day ending the slot; _FAR where the slot does not exist."""
    valid: np.ndarray
    arr: np.ndarray
    seats: np.ndarray
    at_risk: np.ndarray
    outcome: np.ndarray
    dip_kind: np.ndarray
    dip_start: np.ndarray
    dip_end: np.ndarray
    severity: np.ndarray
    churn_day: np.ndarray
    """(n,): the renewal day the account churned on, _FAR if still a customer."""
    last_day: np.ndarray
    """(n,): the last day the account was a customer within history."""
    usage_start: np.ndarray
    """(n,): the first day of history the account was a customer."""

    def depth(self, acc: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The slot and decline depth (0 = healthy, 1 = collapsed) of each (account, day)."""
        slot = np.minimum((day[:, None] >= self.end[acc]).sum(axis=1), _SLOTS - 1)
        kind = self.dip_kind[acc, slot]
        lo = self.dip_start[acc, slot]
        span = np.maximum(self.dip_end[acc, slot] - lo, 1)
        x = (day - lo) / span
        inside = np.clip(x, 0.0, 1.0)
        shape = np.select(
            [kind == DECLINE, kind == RECOVER, kind == TRANSIENT],
            [
                inside**0.8,
                np.where(inside < 0.55, inside / 0.55, 1 - 0.75 * (inside - 0.55) / 0.45),
                np.where(inside < 0.5, inside / 0.5, (1 - inside) / 0.5),
            ],
            0.0,
        )
        shape = np.where((x < 0) | ((kind == TRANSIENT) & (x > 1)), 0.0, shape)
        return slot, self.severity[acc, slot] * shape


_RISK_BASE = np.array([-1.95, -2.3, -3.1])
"""Logit of a period being at risk, per segment (smb, mid, enterprise)."""
_FIRST_TERM_LIFT = 1.2
"""Young accounts (first contract term) are at risk more often."""
_CURRENT_TERM_LIFT = 1.0
"""Extra risk for contracts still running today, so that ~10-20% of today's book is
mid-decline: a back-test needs past renewals, the app needs accounts in trouble now."""
_OUTCOME_AT_RISK = np.array(
    [[0.15, 0.03, 0.17, 0.65], [0.17, 0.03, 0.25, 0.55], [0.22, 0.03, 0.35, 0.40]]
)
_OUTCOME_HEALTHY = np.array(
    [[0.62, 0.27, 0.07, 0.04], [0.60, 0.30, 0.07, 0.03], [0.58, 0.35, 0.055, 0.015]]
)


@dataclass(frozen=True)
class _Story:
    """What happens in one contract period of every account (arrays of length n)."""

    at_risk: np.ndarray
    outcome: np.ndarray
    dip_kind: np.ndarray
    dip_start: np.ndarray
    dip_end: np.ndarray
    severity: np.ndarray
    arr_factor: np.ndarray
    """ARR after the renewal / before it (0 for churn)."""


def _draw_story(
    rng: np.random.Generator,
    book: _Book,
    p_start: np.ndarray,
    p_end: np.ndarray,
    first_term: np.ndarray,
    current: np.ndarray,
) -> _Story:
    """Latent risk -> decline story -> outcome, for the period [p_start, p_end).

    An at-risk period declines over its last 3-9 months and usually churns or downgrades;
    when it renews anyway, the decline bottoms out and recovers before the renewal. A
    healthy period sometimes has a transient dip (noise) and rarely churns without warning.
    """
    n = book.n
    logit = (
        _RISK_BASE[book.segment]
        + _FIRST_TERM_LIFT * first_term
        + _CURRENT_TERM_LIFT * current
        + book.frailty
    )
    at_risk = rng.random(n) < 1 / (1 + np.exp(-logit))
    probs = np.where(
        at_risk[:, None], _OUTCOME_AT_RISK[book.segment], _OUTCOME_HEALTHY[book.segment]
    )
    outcome = _choice(rng, probs)
    severity = np.select(
        [outcome == CHURNED, outcome == DOWNGRADED],
        [rng.uniform(0.6, 1.0, n), rng.uniform(0.35, 0.75, n)],
        rng.uniform(0.3, 0.65, n),
    )
    decline_start = np.maximum(p_end - rng.integers(90, 271, n), p_start + 45)
    transient = ~at_risk & (rng.random(n) < 0.12)
    room = np.maximum(p_end - p_start - 90, 1)
    transient_start = p_start + np.floor(rng.random(n) * room).astype(np.int64)
    transient_end = transient_start + rng.integers(30, 91, n)
    arr_factor = np.select(
        [outcome == RENEWED, outcome == EXPANDED, outcome == DOWNGRADED],
        [rng.uniform(1.0, 1.06, n), rng.uniform(1.12, 1.6, n), rng.uniform(0.55, 0.88, n)],
        0.0,
    )
    return _Story(
        at_risk=at_risk,
        outcome=outcome,
        dip_kind=np.select(
            [at_risk & (outcome <= EXPANDED), at_risk, transient],
            [RECOVER, DECLINE, TRANSIENT],
            NO_DIP,
        ),
        dip_start=np.where(at_risk, decline_start, transient_start),
        dip_end=np.where(at_risk, p_end, transient_end),
        severity=np.where(at_risk, severity, rng.uniform(0.2, 0.45, n)),
        arr_factor=arr_factor,
    )


def _renewal_grid(book: _Book) -> np.ndarray:
    """(n, k) renewal days: column 0 is the start, column k the k-th renewal."""
    terms = _MAX_TENURE_DAYS // 365 + _SLOTS + 1
    return np.column_stack(
        [_add_months(book.start, k * book.contract_months) for k in range(terms + 1)]
    )


def _draw_periods(rng: np.random.Generator, book: _Book) -> _Periods:
    """Walk each account's contract periods through history, slot by slot.

    A churn at a renewal inside history ends the account; an outcome changes ARR and seats
    for the next period; the period running at `end` is the current contract.
    """
    n, end = book.n, book.end
    rows = np.arange(n)
    renewals = _renewal_grid(book)
    first_slot_term = np.argmax(renewals[:, 1:] > book.first, axis=1) + 1
    columns = {
        "start": np.int64, "end": np.int64, "valid": bool, "arr": np.float64,
        "seats": np.int64, "at_risk": bool, "outcome": np.int64, "dip_kind": np.int64,
        "dip_start": np.int64, "dip_end": np.int64, "severity": np.float64,
    }  # fmt: skip
    p = {name: np.zeros((n, _SLOTS), dtype=dtype) for name, dtype in columns.items()}
    churn_day = np.full(n, _FAR, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    arr, seats = book.arr.astype(np.float64), book.seats.copy()
    for j in range(_SLOTS):
        term = first_slot_term + j
        p_start, p_end = renewals[rows, term - 1], renewals[rows, term]
        valid = alive & (p_start <= end)
        story = _draw_story(rng, book, p_start, p_end, term == 1, p_end > end)
        p["start"][:, j] = np.where(valid, p_start, _FAR)
        p["end"][:, j] = np.where(valid, p_end, _FAR)
        p["valid"][:, j] = valid
        p["arr"][:, j] = arr
        p["seats"][:, j] = seats
        p["at_risk"][:, j] = valid & story.at_risk
        p["outcome"][:, j] = story.outcome
        p["dip_kind"][:, j] = np.where(valid, story.dip_kind, NO_DIP)
        p["dip_start"][:, j] = story.dip_start
        p["dip_end"][:, j] = story.dip_end
        p["severity"][:, j] = story.severity

        renewed = valid & (p_end <= end)
        churned = renewed & (story.outcome == CHURNED)
        churn_day = np.where(churned, p_end, churn_day)
        alive = renewed & ~churned
        new_arr = np.round(arr * story.arr_factor, -2)
        seat_ratio = np.where(story.outcome == RENEWED, 1.0, new_arr / np.maximum(arr, 1))
        new_seats = np.maximum(np.round(seats * seat_ratio), 3).astype(np.int64)
        seats = np.where(alive, new_seats, seats)
        arr = np.where(alive, new_arr, arr)

    return _Periods(
        **p,
        churn_day=churn_day,
        last_day=np.minimum(end, churn_day - 1),
        usage_start=np.maximum(book.start, book.first),
    )


def _current_slot(per: _Periods) -> np.ndarray:
    """Each account's last valid slot: its current contract, or the one it churned at."""
    return per.valid.sum(axis=1) - 1


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------


def _accounts_frame(book: _Book, per: _Periods, seed: int) -> pl.DataFrame:
    rows = np.arange(book.n)
    cur = _current_slot(per)
    churned = per.churn_day < _FAR
    rng = _rng(seed, 9)
    crm_chars = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    crm_tail = np.ascontiguousarray(crm_chars[rng.integers(0, 62, (book.n, 15))]).view("<U15")
    owner_names = _pick(book.owners, book.owner)
    frame = pl.DataFrame(
        {
            "account_id": book.ids,
            "name": pl.Series(book.names, dtype=pl.String),
            "segment": _pick(SEGMENTS, book.segment),
            "owner": owner_names,
            "arr": np.where(churned, 0.0, per.arr[rows, cur]),
            "renewal_date": _dates(np.where(churned, per.churn_day, per.end[rows, cur])),
            "start_date": _dates(book.start),
            "crm_id": pl.Series(np.char.add("001", crm_tail.ravel()).tolist(), dtype=pl.String),
            "owner_email": owner_names.str.to_lowercase().str.replace_all(" ", ".")
            + "@example.com",
            "region": _pick(REGIONS, book.region),
            "industry": _pick(_INDUSTRIES, book.industry),
            "plan": _pick(PLANS, book.plan),
            "seats": per.seats[rows, cur].astype(np.int64),
            "contract_months": book.contract_months.astype(np.int64),
            "status": np.where(churned, "churned", "active"),
        }
    )
    return frame.select(_ACCOUNT_COLUMNS)


def _outcomes_frame(book: _Book, per: _Periods) -> pl.DataFrame:
    renewed = per.valid & (per.end <= book.end)
    acc, slot = np.nonzero(renewed)
    nxt = np.minimum(slot + 1, _SLOTS - 1)
    outcome = per.outcome[acc, slot]
    after = np.where(outcome == CHURNED, 0.0, per.arr[acc, nxt])
    return pl.DataFrame(
        {
            "account_id": book.ids.gather(acc),
            "renewal_date": _dates(per.end[acc, slot]),
            "outcome": _pick(OUTCOMES, outcome),
            "arr_before": per.arr[acc, slot],
            "arr_after": after,
        }
    ).sort("renewal_date", "account_id")


def _calendar(book: _Book) -> tuple[np.ndarray, np.ndarray]:
    """Per day of history: the weekday x holiday activity factor, and the month."""
    days = np.arange(book.first, book.end + 1)
    weekday = np.array([1.0, 1.02, 1.02, 0.98, 0.88, 0.16, 0.1])[_weekday(days)]
    month, dom = _month_of(days), _day_of_month(days)
    holiday = np.select(
        [
            ((month == 12) & (dom >= 21)) | ((month == 1) & (dom <= 1)),
            ((month == 12) & (dom >= 14)) | ((month == 1) & (dom <= 6)),
        ],
        [0.45, 0.85],
        1.0,
    )
    return weekday * holiday, month


def _usage_values(
    book: _Book, per: _Periods, acc: np.ndarray, day: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(rows, 4) metric values for each (account, day), in METRICS order."""
    calendar, month = _calendar(book)
    slot, depth = per.depth(acc, day)
    seats = per.seats[acc, slot].astype(np.float64)
    tenure = (day - book.start[acc]).astype(np.float64)
    golive = book.golive[acc].astype(np.float64)
    ramp = np.where(
        tenure < golive,
        0.08 + 0.3 * tenure / golive,
        np.minimum(1.0, 0.38 + 0.62 * (tenure - golive) / 75),
    )
    emea = book.region[acc] == REGIONS.index("EMEA")
    august_emea = np.where(emea & (month[day - book.first] == 8), 0.85, 1.0)
    wave = 1 + 0.06 * np.sin(2 * np.pi * (day / 47.0 + book.engagement[acc] * 7))
    share = (
        book.engagement[acc]
        * ramp
        * calendar[day - book.first]
        * august_emea
        * wave
        * (1 - 0.85 * depth)
        * np.exp(rng.normal(0, 0.08, len(day)))
    )
    share = np.clip(share, 0.0, 1.0)
    active = np.clip(
        np.round(seats * share + np.sqrt(seats * share * (1 - share)) * rng.normal(size=len(day))),
        0,
        seats,
    )
    events = np.round(
        active * book.intensity[acc] * (1 - 0.4 * depth) * np.exp(rng.normal(0, 0.25, len(day)))
    )
    out = np.empty((len(day), 4))
    out[:, 0], out[:, 1] = active, events
    for f in range(2):
        since = tenure - golive - book.adopt_days[acc, f]
        frac = book.adopt_max[acc, f] / (1 + np.exp(-since / 18)) * (1 - 0.9 * depth)
        users = active * frac + np.sqrt(active * frac * (1 - frac)) * rng.normal(size=len(day))
        out[:, 2 + f] = np.clip(np.round(users), 0, active)
    return out


_USAGE_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("date", pa.date32()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)


def _usage_chunks(book: _Book, per: _Periods, seed: int) -> Iterator[pa.Table]:
    """Daily usage, `_USAGE_CHUNK` accounts at a time, zeros included while a customer."""
    ids = pa.array(book.ids.to_list(), type=pa.string())
    metrics = pa.array(list(METRICS), type=pa.string())
    for chunk, lo in enumerate(range(0, book.n, _USAGE_CHUNK)):
        idx = np.arange(lo, min(lo + _USAGE_CHUNK, book.n))
        lengths = np.maximum(per.last_day[idx] - per.usage_start[idx] + 1, 0)
        rows, within = _expand(lengths)
        acc = idx[rows]
        day = per.usage_start[acc] + within
        values = _usage_values(book, per, acc, day, _rng(seed, 3, chunk))
        yield pa.table(
            {
                "account_id": ids.take(pa.array(np.repeat(acc, 4))),
                "date": pa.array(np.repeat(day, 4).astype("datetime64[D]")),
                "metric": metrics.take(pa.array(np.tile(np.arange(4), len(day)))),
                "value": pa.array(values.ravel()),
            },
            schema=_USAGE_SCHEMA,
        )


@dataclass(frozen=True)
class _Buckets:
    """Account x 30-day bucket cells while the account was a customer."""

    acc: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    exposure: np.ndarray
    depth: np.ndarray

    def days(self, cell: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn day inside each given cell."""
        return self.lo[cell] + np.floor(rng.random(len(cell)) * self.exposure[cell]).astype(
            np.int64
        )


def _buckets(book: _Book, per: _Periods, width: int = 30) -> _Buckets:
    n_buckets = -(-HISTORY_DAYS // width)
    b_lo = book.first + width * np.arange(n_buckets)
    acc = np.repeat(np.arange(book.n), n_buckets)
    lo = np.maximum(np.tile(b_lo, book.n), per.usage_start[acc])
    hi = np.minimum(np.tile(b_lo + width - 1, book.n), per.last_day[acc])
    keep = hi >= lo
    acc, lo, hi = acc[keep], lo[keep], hi[keep]
    _, depth = per.depth(acc, (lo + hi) // 2)
    return _Buckets(acc, lo, hi, hi - lo + 1, depth)


def _ticket_days(
    book: _Book, cells: _Buckets, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(account, day, is_burst) per ticket: a Poisson stream that swells with the decline
    and during onboarding, plus rare incident bursts of 3-6 tickets in a few days (noise
    that hits healthy and declining accounts alike)."""
    onboarding = (cells.lo - book.start[cells.acc]) < 90
    lam = (
        book.ticket_rate[cells.acc]
        * (cells.exposure / 30)
        * (1 + 3.5 * cells.depth)
        * np.where(onboarding, 1.8, 1.0)
    )
    regular, _ = _expand(rng.poisson(lam))
    bursts = np.nonzero(rng.random(len(cells.acc)) < 0.012 * cells.exposure / 30)[0]
    burst_rows, _ = _expand(rng.integers(3, 7, len(bursts)))
    burst_cell = bursts[burst_rows]
    burst_day = cells.days(bursts, rng)[burst_rows] + rng.integers(0, 3, len(burst_rows))
    acc = cells.acc[np.concatenate([regular, burst_cell])]
    day = np.concatenate([cells.days(regular, rng), np.minimum(burst_day, cells.hi[burst_cell])])
    is_burst = np.arange(len(acc)) >= len(regular)
    return acc, day, is_burst


def _ticket_priority(
    depth: np.ndarray, is_burst: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """0..3 for P1..P4; a declining account's tickets skew to P1/P2, incidents are P1/P2."""
    regular = np.column_stack(
        [0.03 + 0.12 * depth, 0.14 + 0.26 * depth, 0.45 - 0.14 * depth, 0.38 - 0.24 * depth]
    )
    incident = np.tile([0.4, 0.5, 0.1, 0.0], (len(depth), 1))
    return _choice(rng, np.where(is_burst[:, None], incident, regular))


def _ticket_times(
    per: _Periods,
    acc: np.ndarray,
    day: np.ndarray,
    prio: np.ndarray,
    depth: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opened and closed (microseconds) and resolution hours.

    Tickets open in business hours on weekdays, except P1s, which come any time. A ticket
    still unresolved when a customer churns is closed on the churn day.
    """
    m = len(acc)
    day = np.where(prio == 0, day, _to_weekday(day, per.usage_start[acc], per.last_day[acc]))
    after_hours = (prio == 0) & (rng.random(m) < 0.3)
    seconds = np.where(
        after_hours, rng.integers(0, 86_400, m), rng.integers(8 * 3600, 18 * 3600, m)
    )
    opened = day * _DAY_US + seconds * 1_000_000
    median_hours = np.array([5.0, 22.0, 60.0, 140.0])[prio]
    hours = median_hours * np.exp(rng.normal(0, 0.8, m)) * (1 + depth)
    closed = opened + np.round(hours * 3600).astype(np.int64) * 1_000_000
    churn_noon = per.churn_day[acc] * _DAY_US + 12 * 3600 * 1_000_000
    closed = np.where(per.churn_day[acc] < _FAR, np.minimum(closed, churn_noon), closed)
    return opened, closed, hours


def _tickets_frame(book: _Book, per: _Periods, cells: _Buckets, seed: int) -> pl.DataFrame:
    """Tickets with two private columns the CSAT survey reads: `_acc` and `_hours`."""
    rng = _rng(seed, 4)
    acc, day, is_burst = _ticket_days(book, cells, rng)
    _, depth = per.depth(acc, day)
    prio = _ticket_priority(depth, is_burst, rng)
    opened, closed, hours = _ticket_times(per, acc, day, prio, depth, rng)
    still_open = closed >= (book.end + 1) * _DAY_US
    escalation = np.array([0.45, 0.18, 0.04, 0.01])[prio] + 0.35 * depth + 0.15 * is_burst
    mood = 0.35 - 1.0 * depth - np.array([0.3, 0.15, 0.0, -0.05])[prio] - 0.25 * is_burst
    groups = [_SUBJECTS[p] for p in PRIORITIES] + [_SUBJECTS["incident"]]
    frame = pl.DataFrame(
        {
            "account_id": book.ids.gather(acc),
            "opened_at": _datetimes(opened),
            "priority": _pick(PRIORITIES, prio),
            "closed_at": _datetimes(closed),
            "status": np.where(still_open, "open", "closed"),
            "sentiment": np.clip(rng.normal(mood, 0.28), -1, 1).round(2),
            "escalated": rng.random(len(acc)) < escalation,
            "subject": _pick_grouped(groups, np.where(is_burst, len(PRIORITIES), prio), rng),
            "_acc": acc,
            "_hours": hours,
        }
    ).with_columns(
        closed_at=pl.when(pl.col("status") == "closed").then(pl.col("closed_at")),
    )
    frame = frame.sort("opened_at", "account_id", maintain_order=True)
    return frame.select(_ids("T-", frame.height, 6).alias("ticket_id"), *frame.columns)


def _invoices_frame(book: _Book, per: _Periods, seed: int) -> pl.DataFrame:
    rng = _rng(seed, 5)
    acc, slot = np.nonzero(per.valid)
    bill = book.bill_months[acc]
    counts = book.contract_months[acc] // bill
    rows, number = _expand(counts)
    acc, slot, bill = acc[rows], slot[rows], bill[rows]
    issued = _add_months(per.start[acc, slot], number * bill)
    keep = (issued >= book.first) & (issued <= per.last_day[acc]) & (issued < per.end[acc, slot])
    acc, slot, bill, issued = acc[keep], slot[keep], bill[keep], issued[keep]
    m = len(acc)

    _, depth = per.depth(acc, issued)
    late = rng.random(m) < 0.07 + 0.55 * depth
    never = rng.random(m) < 0.01 + 0.25 * depth
    delay = np.where(
        late,
        31 + rng.exponential(20, m).astype(np.int64),
        rng.triangular(2, 16, 29, m).astype(np.int64),
    )
    paid = issued + delay
    unpaid = never | (paid > book.end) | (paid > per.churn_day[acc])
    due = issued + 30
    status = np.where(~unpaid, "paid", np.where(due < book.end, "overdue", "open"))
    frame = pl.DataFrame(
        {
            "account_id": book.ids.gather(acc),
            "issued_at": _dates(issued),
            "due_date": _dates(due),
            "amount": np.round(per.arr[acc, slot] * bill / 12, 2),
            "paid_at": _dates(paid),
            "status": status,
        }
    ).with_columns(paid_at=pl.when(pl.col("status") == "paid").then(pl.col("paid_at")))
    frame = frame.sort("issued_at", "account_id", maintain_order=True)
    return frame.with_columns(invoice_id=_ids("INV-", frame.height, 6)).select(
        TABLES["invoices"].polars_schema().names()
    )


def _nps_responses(book: _Book, per: _Periods, rng: np.random.Generator) -> pl.DataFrame:
    """Quarterly NPS campaigns; each answering account sends 1-3 responses over 3 weeks."""
    campaigns = book.first + 40 + 91 * np.arange(HISTORY_DAYS // 91)
    acc = np.repeat(np.arange(book.n), len(campaigns))
    camp = np.tile(campaigns, book.n)
    answers = rng.random(len(acc)) < np.array([0.5, 0.6, 0.7])[book.segment[acc]]
    max_people = np.array([2, 3, 4])[book.segment[acc]]
    people = np.where(answers, rng.integers(1, max_people), 0)
    rows, _ = _expand(people)
    acc = acc[rows]
    day = camp[rows] + rng.integers(0, 22, len(rows))
    keep = (day >= per.usage_start[acc]) & (day <= per.last_day[acc])
    acc, day = acc[keep], day[keep]
    _, depth = per.depth(acc, day)
    score = np.clip(np.round(rng.normal(8.3 - 7.5 * depth + book.satisfaction[acc], 1.3)), 0, 10)
    band = np.select([score <= 6, score <= 8], [0, 1], 2)
    comment = _pick_grouped(list(_NPS_COMMENTS.values()), band, rng)
    return pl.DataFrame(
        {
            "account_id": book.ids.gather(acc),
            "responded_at": _dates(day),
            "kind": "nps",
            "score": score,
            "comment": comment,
            "respondent": _people_with_roles(rng, len(acc)),
            "_blank": rng.random(len(acc)) < 0.25,
        }
    )


def _csat_responses(
    book: _Book, per: _Periods, tickets: pl.DataFrame, rng: np.random.Generator
) -> pl.DataFrame:
    """CSAT after about a fifth of closed tickets, from the person who raised it."""
    closed = tickets.filter(pl.col("closed_at").is_not_null())
    closed = closed.filter(pl.Series(rng.random(closed.height) < 0.22))
    acc = closed["_acc"].to_numpy()
    day = closed["closed_at"].dt.date().cast(pl.Int32).to_numpy().astype(np.int64) + rng.integers(
        0, 4, closed.height
    )
    keep = day <= per.last_day[acc]
    acc, day, closed = acc[keep], day[keep], closed.filter(pl.Series(keep))
    sentiment = closed["sentiment"].to_numpy()
    slow = closed["_hours"].to_numpy() > 72
    score = np.clip(
        np.round(4.1 + 1.3 * sentiment - 0.6 * slow + rng.normal(0, 0.7, len(acc))), 1, 5
    )
    band = np.select([score <= 2, score <= 3], [0, 1], 2)
    return pl.DataFrame(
        {
            "account_id": book.ids.gather(acc),
            "responded_at": _dates(day),
            "kind": "csat",
            "score": score,
            "comment": _pick_grouped(list(_CSAT_COMMENTS.values()), band, rng),
            "respondent": _people_with_roles(rng, len(acc)),
            "_blank": rng.random(len(acc)) < 0.4,
        }
    )


def _surveys_frame(book: _Book, per: _Periods, tickets: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = _rng(seed, 6)
    frame = pl.concat([_nps_responses(book, per, rng), _csat_responses(book, per, tickets, rng)])
    frame = frame.with_columns(
        pl.when(pl.col("_blank")).then(None).otherwise(pl.col("comment")).alias("comment")
    ).sort("responded_at", "account_id", maintain_order=True)
    return frame.with_columns(response_id=_ids("S-", frame.height, 6)).select(
        TABLES["surveys"].polars_schema().names()
    )


CALL, QBR, EXEC_MEETING, ONBOARDING = 0, 1, 2, 3
"""Touchpoint kinds, indexes into _NOTE_KINDS."""


def _meetings_by_month(
    book: _Book, cells: _Buckets, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calls (more of them when an account struggles) and exec meetings (which lapse)."""
    seg = book.segment[cells.acc]
    months = cells.exposure / 30
    calls, _ = _expand(
        rng.poisson(np.array([0.5, 1.0, 1.5])[seg] * months * (1 + 0.8 * cells.depth))
    )
    execs, _ = _expand(
        rng.poisson(np.array([0.1, 1.5, 4.0])[seg] / 12 * months * (1 - 0.85 * cells.depth))
    )
    acc = np.concatenate([cells.acc[calls], cells.acc[execs]])
    day = np.concatenate([cells.days(calls, rng), cells.days(execs, rng)])
    kind = np.concatenate([np.full(len(calls), CALL), np.full(len(execs), EXEC_MEETING)])
    return acc, day, kind


def _quarterly_reviews(
    book: _Book, per: _Periods, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One QBR slot a quarter per account (mid and enterprise hold most, smb rarely);
    a declining account skips them more often."""
    quarters = np.arange(HISTORY_DAYS // 91)
    acc = np.repeat(np.arange(book.n), len(quarters))
    phase = rng.integers(0, 91, book.n)[acc]
    day = np.minimum(book.first + phase + 91 * np.tile(quarters, book.n), book.end)
    _, depth = per.depth(acc, day)
    held_share = np.array([0.12, 0.85, 0.95])[book.segment[acc]] * (1 - 0.65 * depth)
    held = rng.random(len(acc)) < held_share
    return acc[held], day[held]


def _onboarding_sessions(book: _Book, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Four onboarding sessions in the first five weeks of accounts that start in history."""
    newcomers = np.nonzero(book.start >= book.first)[0]
    acc = np.repeat(newcomers, 4)
    offsets = np.tile([2, 9, 21, 35], len(newcomers)) + rng.integers(0, 4, len(acc))
    return acc, book.start[acc] + offsets


def _touchpoints_frame(book: _Book, per: _Periods, cells: _Buckets, seed: int) -> pl.DataFrame:
    rng = _rng(seed, 7)
    m_acc, m_day, m_kind = _meetings_by_month(book, cells, rng)
    q_acc, q_day = _quarterly_reviews(book, per, rng)
    o_acc, o_day = _onboarding_sessions(book, rng)
    acc = np.concatenate([m_acc, q_acc, o_acc])
    day = np.concatenate([m_day, q_day, o_day])
    kind = np.concatenate([m_kind, np.full(len(q_acc), QBR), np.full(len(o_acc), ONBOARDING)])
    day = _to_weekday(day, per.usage_start[acc], per.last_day[acc])
    keep = (day >= per.usage_start[acc]) & (day <= per.last_day[acc])
    acc, day, kind = acc[keep], day[keep], kind[keep]

    _, depth = per.depth(acc, day)
    onboarding = kind == ONBOARDING
    worried = ~onboarding & (rng.random(len(acc)) < np.clip(0.04 + 1.3 * depth, 0, 0.95))
    note_lists = [_NOTES[f"{k}/{mood}"] for k in _NOTE_KINDS[:3] for mood in ("ok", "worried")]
    note_lists.append(_NOTES["onboarding/ok"])
    note_group = np.where(onboarding, len(note_lists) - 1, 2 * kind + worried)
    frame = pl.DataFrame(
        {
            "account_id": book.ids.gather(acc),
            "at": _dates(day),
            "kind": _pick(_NOTE_KINDS, kind),
            "notes": _pick_grouped(note_lists, note_group, rng),
            "csm": _pick(book.owners, book.owner[acc]),
            "contact": _people_with_roles(rng, len(acc)),
        }
    ).with_columns(participants=pl.format("{} (CSM); {}", "csm", "contact"))
    frame = frame.sort("at", "account_id", maintain_order=True)
    return frame.with_columns(touchpoint_id=_ids("TP-", frame.height, 6)).select(
        TABLES["touchpoints"].polars_schema().names()
    )


@dataclass
class _Events:
    """Milestones collected kind by kind, then filtered to the customer's lifetime."""

    acc: list[np.ndarray] = field(default_factory=list)
    day: list[np.ndarray] = field(default_factory=list)
    kind: list[pl.Series] = field(default_factory=list)
    text: list[pl.Series] = field(default_factory=list)

    def add(self, acc: np.ndarray, day: np.ndarray, kind: str, text: pl.Series | str) -> None:
        self.acc.append(np.asarray(acc, dtype=np.int64))
        self.day.append(np.asarray(day, dtype=np.int64))
        self.kind.append(pl.Series([kind] * len(acc), dtype=pl.String))
        if isinstance(text, str):
            text = pl.Series([text] * len(acc), dtype=pl.String)
        self.text.append(text)


def _lifecycle_milestones(book: _Book, ev: _Events) -> None:
    everyone = np.arange(book.n)
    ev.add(everyone, book.start, "kickoff", "Kickoff call; success plan and rollout agreed")
    went_live = pl.select(pl.format("Went live with {} seats", pl.Series(book.seats)))
    ev.add(everyone, book.start + book.golive, "go_live", went_live.to_series())
    for f, (feature, detail) in enumerate(_FEATURES):
        adopted = np.nonzero(book.adopt_max[:, f] >= 0.2)[0]
        day = book.start[adopted] + book.golive[adopted] + np.round(book.adopt_days[adopted, f])
        ev.add(adopted, day, "feature_adopted", f"{feature} adopted: {detail}")


@dataclass(frozen=True)
class _SlotView:
    """The valid contract periods flattened to one row each."""

    acc: np.ndarray
    slot: np.ndarray
    at_risk: np.ndarray
    outcome: np.ndarray
    start: np.ndarray
    end: np.ndarray
    dip_start: np.ndarray
    recovering: np.ndarray

    @classmethod
    def of(cls, per: _Periods) -> _SlotView:
        acc, slot = np.nonzero(per.valid)
        return cls(
            acc=acc,
            slot=slot,
            at_risk=per.at_risk[acc, slot],
            outcome=per.outcome[acc, slot],
            start=per.start[acc, slot],
            end=per.end[acc, slot],
            dip_start=per.dip_start[acc, slot],
            recovering=per.dip_kind[acc, slot] == RECOVER,
        )


def _people_text(template: str, rng: np.random.Generator, n: int) -> pl.Series:
    return pl.select(pl.format(template, _people_with_roles(rng, n))).to_series()


def _relationship_milestones(v: _SlotView, ev: _Events, rng: np.random.Generator) -> None:
    """The champion leaving usually opens a decline story (and is sometimes just noise);
    a replacement appears in healthy periods and where the account recovers."""
    m = len(v.acc)
    left = np.where(v.at_risk, rng.random(m) < 0.6, rng.random(m) < 0.05)
    anywhere = v.start + np.floor(rng.random(m) * np.maximum(v.end - v.start, 1)).astype(np.int64)
    left_day = np.where(v.at_risk, v.dip_start - rng.integers(0, 22, m), anywhere)
    text = _people_text("Champion {} left the company", rng, int(left.sum()))
    ev.add(v.acc[left], left_day[left], "champion_left", text)

    replaced = left & (~v.at_risk | v.recovering)
    recovery_day = v.dip_start + (0.55 * (v.end - v.dip_start)).astype(np.int64)
    replaced_day = np.where(v.at_risk, recovery_day, left_day + rng.integers(14, 46, m))
    text = _people_text("New champion identified: {}", rng, int(replaced.sum()))
    ev.add(v.acc[replaced], replaced_day[replaced], "new_champion", text)

    sponsor = np.where(v.at_risk, rng.random(m) < 0.25, rng.random(m) < 0.04)
    sponsor_day = np.where(v.at_risk, v.dip_start, v.start) + rng.integers(0, 60, m)
    ev.add(
        v.acc[sponsor],
        sponsor_day[sponsor],
        "exec_sponsor_changed",
        "Executive sponsor changed; new sponsor not yet engaged",
    )


def _renewal_milestones(
    book: _Book, per: _Periods, v: _SlotView, ev: _Events, rng: np.random.Generator
) -> None:
    """Churn with its reason; surprise churns announce theirs (acquisition, budget freeze)
    a few weeks ahead; other renewals are signed in the last three weeks."""
    m = len(v.acc)
    closed = v.end <= book.end
    surprise = closed & ~v.at_risk & (v.outcome == CHURNED)
    reason = rng.integers(0, len(_SURPRISE_REASONS), m)
    for r, (kind, warning, _) in enumerate(_SURPRISE_REASONS):
        hit = surprise & (reason == r)
        ev.add(v.acc[hit], v.end[hit] - rng.integers(20, 76, int(hit.sum())), kind, warning)

    churned = closed & (v.outcome == CHURNED)
    texts = [r[2] for r in _SURPRISE_REASONS] + list(_CHURN_REASONS)
    ordinary = len(_SURPRISE_REASONS) + rng.integers(0, len(_CHURN_REASONS), m)
    why = np.where(surprise, reason, ordinary)
    ev.add(v.acc[churned], v.end[churned], "churned", _pick(texts, why[churned]))

    signed = closed & (v.outcome != CHURNED)
    arr_after = per.arr[v.acc, np.minimum(v.slot + 1, _SLOTS - 1)]
    verbs = ("Renewed", "Renewed with expansion", "Renewed with reduced scope")
    texts = [
        f"{verbs[o]} for {months} months at ${arr:,.0f} ARR"
        for o, months, arr in zip(
            v.outcome[signed].tolist(),
            book.contract_months[v.acc[signed]].tolist(),
            arr_after[signed].tolist(),
            strict=True,
        )
    ]
    signed_day = v.end[signed] - rng.integers(0, 22, int(signed.sum()))
    ev.add(v.acc[signed], signed_day, "renewal_signed", pl.Series(texts, dtype=pl.String))


def _milestones_frame(book: _Book, per: _Periods, seed: int) -> pl.DataFrame:
    rng = _rng(seed, 8)
    ev = _Events()
    view = _SlotView.of(per)
    _lifecycle_milestones(book, ev)
    _relationship_milestones(view, ev, rng)
    _renewal_milestones(book, per, view, ev, rng)
    acc = np.concatenate(ev.acc)
    day = np.concatenate(ev.day)
    keep = (day <= book.end) & (day <= per.churn_day[acc])
    frame = pl.DataFrame(
        {
            "account_id": book.ids.gather(acc),
            "at": _dates(day),
            "kind": pl.concat(ev.kind),
            "description": pl.concat(ev.text),
        }
    ).filter(pl.Series(keep))
    return frame.sort("at", "account_id", maintain_order=True)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    book: _Book
    periods: _Periods
    seed: int


def _plan(n_accounts: int, seed: int, end_date: dt.date) -> _Plan:
    if n_accounts < 1:
        raise ValueError(f"n_accounts must be at least 1, got {n_accounts}")
    book = _draw_accounts(_rng(seed, 1), n_accounts, _day_number(end_date))
    return _Plan(book, _draw_periods(_rng(seed, 2), book), seed)


def _small_tables(plan: _Plan) -> dict[str, pl.DataFrame]:
    """Every table but usage, in canonical column order and types."""
    book, per, seed = plan.book, plan.periods, plan.seed
    cells = _buckets(book, per)
    tickets = _tickets_frame(book, per, cells, seed)
    tables = {
        "accounts": _accounts_frame(book, per, seed),
        "tickets": tickets.drop("_acc", "_hours"),
        "invoices": _invoices_frame(book, per, seed),
        "surveys": _surveys_frame(book, per, tickets, seed),
        "touchpoints": _touchpoints_frame(book, per, cells, seed),
        "milestones": _milestones_frame(book, per, seed),
        "outcomes": _outcomes_frame(book, per),
    }
    return {name: _conform(name, frame) for name, frame in tables.items()}


def _conform(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    schema = TABLES[name].polars_schema()
    extra = [c for c in frame.columns if c not in schema]
    return frame.select(*[pl.col(c).cast(dtype) for c, dtype in schema.items()], *extra)


def generate(
    n_accounts: int = DEFAULT_ACCOUNTS, seed: int = DEFAULT_SEED, end_date: dt.date = END_DATE
) -> dict[str, pl.DataFrame]:
    """The whole sample book in memory: the eight canonical tables, canonical dtypes.

    `accounts` also carries `status` ("active" or "churned"); a churned account keeps its
    row with arr 0.0 and renewal_date = the day it churned.
    """
    plan = _plan(n_accounts, seed, end_date)
    tables = _small_tables(plan)
    usage = pl.from_arrow(pa.concat_tables(_usage_chunks(plan.book, plan.periods, seed)))
    tables["usage"] = _conform("usage", usage)
    return {name: tables[name] for name in TABLE_NAMES}


def _manifest(n_accounts: int, seed: int) -> dict[str, Any]:
    return {
        "accounts": n_accounts,
        "seed": seed,
        "end_date": END_DATE.isoformat(),
        "version": SAMPLE_VERSION,
    }


def _write_into(folder: Path, n_accounts: int, seed: int) -> None:
    """Write every table into an existing empty folder; usage streams chunk by chunk."""
    plan = _plan(n_accounts, seed, END_DATE)
    with pq.ParquetWriter(folder / "usage.parquet", _USAGE_SCHEMA) as writer:
        for chunk in _usage_chunks(plan.book, plan.periods, seed):
            writer.write_table(chunk, row_group_size=1_000_000)
    for name, frame in _small_tables(plan).items():
        frame.write_parquet(folder / f"{name}.parquet")
    (folder / "manifest.json").write_text(json.dumps(_manifest(n_accounts, seed), indent=2) + "\n")


def _temp_sibling(out_dir: Path, label: str) -> Path:
    return out_dir.parent / f".{out_dir.name}.{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _generate_to_temp(out_dir: Path, n_accounts: int, seed: int) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(out_dir, "tmp")
    tmp.mkdir()
    try:
        _write_into(tmp, n_accounts, seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move `tmp` to `out_dir`, moving any existing `out_dir` aside first (two renames)."""
    if out_dir.exists():
        old = _temp_sibling(out_dir, "old")
        try:
            out_dir.rename(old)
        except FileNotFoundError:
            old = None
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


def write(out_dir: Path, n_accounts: int = DEFAULT_ACCOUNTS, seed: int = DEFAULT_SEED) -> Path:
    """Generate the book and write `<table>.parquet` x 8 plus `manifest.json` into out_dir.

    Everything is written into a temporary sibling folder first and renamed into place, so
    a crash never leaves half a book. Usage is generated and written in chunks of accounts,
    so 100k accounts fit in a few GB.
    """
    out_dir = Path(out_dir)
    tmp = _generate_to_temp(out_dir, n_accounts, seed)
    try:
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _is_current(folder: Path, n_accounts: int, seed: int) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    files_ok = all((folder / f"{name}.parquet").is_file() for name in TABLE_NAMES)
    return files_ok and manifest == _manifest(n_accounts, seed)


def ensure_sample(
    out_dir: Path = Path(DEFAULT_PATH),
    n_accounts: int = DEFAULT_ACCOUNTS,
    seed: int = DEFAULT_SEED,
    force: bool = False,
) -> Path:
    """Generate the sample book into out_dir unless an identical one is already there.

    Safe when several processes call it at once: each generates into its own temporary
    folder; whoever renames first wins, and a later caller that finds a matching book in
    place keeps it and discards its own.
    """
    out_dir = Path(out_dir)
    if not force and _is_current(out_dir, n_accounts, seed):
        return out_dir
    tmp = _generate_to_temp(out_dir, n_accounts, seed)
    try:
        if not force and _is_current(out_dir, n_accounts, seed):
            return out_dir
        try:
            _replace_dir(tmp, out_dir)
        except OSError:
            if not _is_current(out_dir, n_accounts, seed):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


@dataclass
class SampleSource:
    """The generated sample book, read from Parquet and validated like any other source."""

    name: str
    path: Path
    n_accounts: int = DEFAULT_ACCOUNTS
    seed: int = DEFAULT_SEED

    def describe(self) -> str:
        return f"Sample book: {self.n_accounts} accounts (seed {self.seed}), generated"

    def load(self) -> LoadResult:
        from health.contract import validate

        folder = ensure_sample(self.path, self.n_accounts, self.seed)
        raw = {name: pl.read_parquet(folder / f"{name}.parquet") for name in TABLE_NAMES}
        return validate(raw, source=self.name)


_SETTINGS = ("accounts", "seed", "path")


def _int_setting(name: str, settings: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SourceConfigError(
            f"Source {name!r} (kind sample): `{key}` must be a whole number of at least "
            f"{minimum}, got {value!r}."
        )
    return value


@register("sample")
def make_sample_source(name: str, settings: dict[str, Any], *, base_dir: str) -> SampleSource:
    """Build the sample source from its `sources.yaml` settings: accounts, seed, path."""
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise SourceConfigError(
            f"Source {name!r} (kind sample) has unknown setting(s) "
            f"{', '.join(map(repr, unknown))}. Allowed settings are: {', '.join(_SETTINGS)}."
        )
    path = settings.get("path", DEFAULT_PATH)
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise SourceConfigError(
            f"Source {name!r} (kind sample): `path` must be a folder path, got {path!r}."
        )
    return SampleSource(
        name=name,
        path=Path(base_dir) / Path(path),
        n_accounts=_int_setting(name, settings, "accounts", DEFAULT_ACCOUNTS, 1),
        seed=_int_setting(name, settings, "seed", DEFAULT_SEED, 0),
    )
