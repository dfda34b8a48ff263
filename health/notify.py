"""The notifier port and the neutral alert messages (with deep links into the app).

`health/` decides *what* to say and *to whom*; `sources/` decides how a channel says it
(`sources.webhooks`: Slack and Microsoft Teams incoming webhooks, e-mail over SMTP). The
port is one method:

    class Notifier(Protocol):
        name: str
        def send(self, notice: Notice) -> str: ...   # raises NotifyError

A `Notice` carries one or more `AlertItem`s (one for a single alert, several for a
digest), a subject and a plain-text body already written, so a channel that can only
do text (e-mail) needs nothing else, and a channel with rich layout (Slack blocks, Teams
adaptive cards) can lay the items out itself.

Every item has a deep link `<base_url>/account?account=<id>` (the Account page reads
the `account` query parameter). Messages never contain secrets: the webhook URLs live
in the adapters only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable
from urllib.parse import quote

SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
TIER_WORDS = {"at_risk": "at risk", "watch": "watch", "healthy": "healthy", "insufficient_data": "insufficient data"}


class NotifyError(Exception):
    """A notice could not be delivered. `retryable` is informative (every failed delivery
    is retried by the next run); `hint` says what to fix. Never contains a webhook URL."""

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool = True):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class ChannelNotConfigured(NotifyError):
    """The channel has no URL / server configured: deliveries wait (pending)."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message, hint=hint, retryable=True)


@dataclass(frozen=True)
class AlertItem:
    """One alert about one account, as a reader sees it."""

    alert_id: int
    rule: str
    title: str
    severity: str
    account_id: str
    account: str
    score: float | None
    tier: str | None
    drivers: str
    reason: str
    link: str
    as_of: dt.date
    owner: str | None = None
    arr: float | None = None
    renewal_date: dt.date | None = None
    owner_email: str | None = None

    @property
    def tier_words(self) -> str:
        return TIER_WORDS.get(self.tier or "", self.tier or "unknown")

    @property
    def score_text(self) -> str:
        return "n/a" if self.score is None else f"{self.score:.0f}"

    def headline(self) -> str:
        return f"{self.account} — {self.title}"

    def facts(self) -> list[tuple[str, str]]:
        out = [("Score", f"{self.score_text} ({self.tier_words})")]
        if self.reason:
            out.append(("Why", self.reason))
        if self.drivers:
            out.append(("Top drivers", self.drivers))
        if self.owner:
            out.append(("Owner", self.owner))
        if self.arr is not None:
            out.append(("ARR", f"{self.arr:,.0f}"))
        if self.renewal_date is not None:
            out.append(("Renewal", self.renewal_date.isoformat()))
        return out

    def text(self) -> str:
        lines = [f"[{self.severity}] {self.headline()}"]
        lines += [f"  {k}: {v}" for k, v in self.facts()]
        lines.append(f"  Open: {self.link}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Notice:
    """What one delivery sends: to `recipient` (an e-mail, or the channel's name) over
    `channel`. `key` is stable across retries (a Message-ID, a dedupe key)."""

    channel: str
    recipient: str
    subject: str
    text: str
    items: tuple[AlertItem, ...]
    key: str
    digest: bool = False
    as_of: dt.date | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Notifier(Protocol):
    """Delivers notices over one channel (a Slack / Teams webhook, SMTP, ...)."""

    name: str

    def send(self, notice: Notice) -> str:
        """Deliver `notice`; return a receipt (a message id, "ok"). Raises `NotifyError`."""
        ...


class MemoryNotifier:
    """A Notifier that keeps what it was given (tests, dry runs)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.sent: list[Notice] = []
        self.fail_with: NotifyError | None = None

    def send(self, notice: Notice) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(notice)
        return f"{self.name}-{len(self.sent)}"


# --------------------------------------------------------------------------- messages


def account_link(base_url: str, account_id: str) -> str:
    """The Account page for `account_id`: `<base_url>/account?account=<id>`."""
    return f"{base_url.rstrip('/')}/account?account={quote(str(account_id), safe='')}"


def _rank(sev: str) -> int:
    return SEVERITIES.index(sev) if sev in SEVERITIES else 0


def alert_notice(channel: str, recipient: str, item: AlertItem, key: str) -> Notice:
    """One alert, one message."""
    subject = f"[Customer health] {item.severity}: {item.account} — {item.title}"
    text = item.text() + "\n"
    return Notice(channel, recipient, subject, text, (item,), key, digest=False, as_of=item.as_of)


def digest_notice(channel: str, recipient: str, items: Sequence[AlertItem], key: str, as_of: dt.date | None = None) -> Notice:
    """Several alerts for one recipient in one message, most severe first."""
    ordered = tuple(sorted(items, key=lambda i: (-_rank(i.severity), i.score if i.score is not None else 999, i.account)))
    day = as_of or max(i.as_of for i in ordered)
    n = len(ordered)
    accounts = len({i.account_id for i in ordered})
    subject = f"[Customer health] digest {day.isoformat()}: {n} alert{'s' if n != 1 else ''} on {accounts} account{'s' if accounts != 1 else ''}"
    by_sev = {s: sum(1 for i in ordered if i.severity == s) for s in reversed(SEVERITIES)}
    head = ", ".join(f"{v} {k}" for k, v in by_sev.items() if v)
    text = f"{subject.removeprefix('[Customer health] ')} ({head})\n\n" + "\n\n".join(i.text() for i in ordered) + "\n"
    return Notice(channel, recipient, subject, text, ordered, key, digest=True, as_of=day)


__all__ = [
    "AlertItem",
    "ChannelNotConfigured",
    "MemoryNotifier",
    "Notice",
    "Notifier",
    "NotifyError",
    "SEVERITIES",
    "account_link",
    "alert_notice",
    "digest_notice",
]
