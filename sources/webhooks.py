"""Alert channels (`health.notify.Notifier`): Slack and Microsoft Teams incoming webhooks
over HTTP (urllib, no extra dependency), and e-mail over SMTP (`sources.smtp_mailer`).

Webhook URLs are secrets (the URL *is* the credential): they come from
`.streamlit/secrets.toml` ([alert_webhooks] <channel> = "https://...") or the environment
variable the channel names, never from config/alerts.yaml — and they never appear in a
log line, an error message, a repr or the state database. Errors name the channel, not
the URL.

    notifiers, not_configured = build_notifiers(alerts, secrets, crm_config)

Slack: a JSON body with `text` (the fallback / notification line) and Block Kit `blocks`
(a header, one section per alert with a link button to the Account page). Teams: the
"Post to a channel when a webhook request is received" workflow (and the retired
Office 365 connector) accept a `message` with one Adaptive Card attachment.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Mapping
from urllib.parse import urlsplit

from health.alerts import ChannelDef, LoadedAlerts
from health.crm import Mail, MailError, Mailer
from health.notify import Notice, Notifier, NotifyError

SECRETS_SECTION = "alert_webhooks"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_ITEMS_PER_POST = 40
"""Slack allows 50 blocks per message; a longer digest says how many more there are."""


# ------------------------------------------------------------------------------ payloads


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notice: Notice) -> dict[str, Any]:
    items = notice.items[:MAX_ITEMS_PER_POST]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": notice.subject.removeprefix("[Customer health] ")[:150]}}
    ]
    for it in items:
        lines = [f"*<{it.link}|{_mrkdwn_escape(it.account)}>* — {_mrkdwn_escape(it.title)} ({it.severity})"]
        lines.append(f"Score *{it.score_text}* ({it.tier_words})" + (f" · {_mrkdwn_escape(it.reason)}" if it.reason else ""))
        if it.drivers:
            lines.append(f"Top drivers: {_mrkdwn_escape(it.drivers)}")
        blocks.append({
            "type": "section",
            "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]},
            "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Open account"}, "url": it.link},
        })
    if len(notice.items) > len(items):
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"… and {len(notice.items) - len(items)} more"}]})
    first = notice.items[0] if notice.items else None
    text = notice.subject if notice.digest or first is None else f"{first.headline()}: score {first.score_text} ({first.tier_words})"
    return {"text": text, "blocks": blocks}


def teams_payload(notice: Notice) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": True,
         "text": notice.subject.removeprefix("[Customer health] ")},
    ]
    items = notice.items[:MAX_ITEMS_PER_POST]
    for it in items:
        body.append({"type": "TextBlock", "wrap": True, "weight": "Bolder", "separator": True,
                     "text": f"[{it.account}]({it.link}) — {it.title} ({it.severity})"})
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in it.facts()]})
    if len(notice.items) > len(items):
        body.append({"type": "TextBlock", "text": f"… and {len(notice.items) - len(items)} more", "isSubtle": True})
    actions = [{"type": "Action.OpenUrl", "title": "Open account", "url": notice.items[0].link}] if len(notice.items) == 1 else []
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": actions,
    }
    return {
        "type": "message",
        "summary": notice.subject,
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}],
    }


# ------------------------------------------------------------------------------ notifiers

RETRY_AFTER_MAX = 5.0


class _RateLimited(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


class WebhookNotifier:
    """POST a JSON payload to an incoming webhook. `kind`: slack or teams."""

    def __init__(self, name: str, kind: str, url: str, *, timeout: float = 10.0):
        if kind not in ("slack", "teams"):
            raise ValueError(f"unknown webhook kind {kind!r}")
        self.name = name
        self.kind = kind
        self._url = url
        self.timeout = timeout
        host = urlsplit(url).hostname or ""
        # a loopback target never goes through a proxy; others follow the usual *_proxy variables
        proxies: dict[str, str] | None = {} if host in LOOPBACK else None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.name!r}, {self.kind})"

    def payload(self, notice: Notice) -> dict[str, Any]:
        return slack_payload(notice) if self.kind == "slack" else teams_payload(notice)

    def send(self, notice: Notice) -> str:
        """POST the notice. A 429 (rate limited: Slack allows about one message a second
        per webhook) is retried once after its Retry-After (at most RETRY_AFTER_MAX
        seconds); then it fails and the next run retries it."""
        try:
            return self._post(notice)
        except _RateLimited as exc:
            time.sleep(min(max(exc.retry_after, 0.0), RETRY_AFTER_MAX))
            try:
                return self._post(notice)
            except _RateLimited:
                raise NotifyError(f"the {self.kind.capitalize()} webhook of channel '{self.name}' is rate limiting (HTTP 429)",
                                  hint="kept and retried by the next run; a digest (recipients: {<channel>: {digest: true}}) sends fewer messages",
                                  retryable=True) from None

    def _post(self, notice: Notice) -> str:
        data = json.dumps(self.payload(notice)).encode("utf-8")
        req = urllib.request.Request(
            self._url, data=data, method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "customer-health-alerts/1"},
        )
        what = f"the {self.kind.capitalize()} webhook of channel '{self.name}'"
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status = resp.status
                body = resp.read(2000).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            if exc.code == 429:
                try:
                    after = float(exc.headers.get("Retry-After") or 1)
                except ValueError:
                    after = 1.0
                raise _RateLimited(after) from None
            detail = ""
            try:
                detail = exc.read(300).decode("utf-8", "replace").strip()
            except Exception:  # noqa: BLE001 - the body is only a hint
                pass
            hint = None
            if exc.code in (403, 404, 410):
                hint = "the webhook may have been removed or its URL is wrong: check the secret / env var of the channel"
            elif exc.code == 400:
                hint = "the service refused the message format"
            raise NotifyError(f"{what} answered HTTP {exc.code}" + (f": {detail[:200]}" if detail else ""),
                              hint=hint, retryable=exc.code >= 500 or exc.code == 429) from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NotifyError(f"cannot reach {what} ({type(reason).__name__ if not isinstance(reason, str) else reason})",
                              retryable=True) from None
        if not 200 <= status < 300:
            raise NotifyError(f"{what} answered HTTP {status}")
        if self.kind == "slack" and body and body.strip() not in ("ok", ""):
            # Slack answers 200 "ok"; anything else is an error text like "invalid_payload"
            raise NotifyError(f"{what} refused the message: {body.strip()[:200]}", retryable=False)
        return f"{self.kind}:{status}"


class EmailNotifier:
    """Alerts by e-mail to a person, through a `health.crm.Mailer` (SMTP)."""

    def __init__(self, name: str, mailer: Mailer):
        self.name = name
        self.mailer = mailer

    def __repr__(self) -> str:
        return f"EmailNotifier({self.name!r}, {self.mailer!r})"

    def send(self, notice: Notice) -> str:
        mail = Mail(to=(notice.recipient,), subject=notice.subject, body=notice.text,
                    message_id=f"<{notice.key}@customer-health.local>")
        try:
            return self.mailer.send(mail)
        except MailError as exc:
            raise NotifyError(f"e-mail to {notice.recipient}: {exc.message}", hint=exc.hint, retryable=exc.retryable) from None


# ------------------------------------------------------------------------------- wiring


def webhook_url(name: str, channel: ChannelDef, secrets: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The channel's webhook URL from the secrets ([alert_webhooks] <secret>) or the
    environment (`env:`, default CHI_WEBHOOK_<NAME>); None when neither has it."""
    env = os.environ if environ is None else environ
    section = (secrets or {}).get(SECRETS_SECTION)
    if isinstance(section, Mapping):
        v = section.get(channel.secret_key(name))
        if v:
            return str(v)
    return env.get(channel.env_name(name)) or None


def build_notifiers(
    alerts: LoadedAlerts,
    secrets: Mapping[str, Any] | None = None,
    crm_config: Any = None,
    *,
    environ: Mapping[str, str] | None = None,
    mailer: Mailer | None = None,
) -> tuple[dict[str, Notifier], dict[str, str]]:
    """(channel -> Notifier for every configured channel, channel -> why the others are
    not configured). `crm_config`: the loaded config/crm.yaml (`smtp:` for e-mail
    channels); `mailer` overrides it."""
    from sources.writeback import build_mailer, plain_secrets

    plain = plain_secrets(secrets)
    notifiers: dict[str, Notifier] = {}
    missing: dict[str, str] = {}
    for name, ch in alerts.spec.channels.items():
        if ch.kind == "email":
            m = mailer
            if m is None and crm_config is not None:
                m = build_mailer(crm_config, plain, environ=environ)
            if m is None:
                missing[name] = "SMTP is not enabled in config/crm.yaml (smtp.enabled)"
            else:
                notifiers[name] = EmailNotifier(name, m)
            continue
        url = webhook_url(name, ch, plain, environ)
        if not url:
            missing[name] = f"no webhook URL: set [{SECRETS_SECTION}] {ch.secret_key(name)} in secrets.toml or ${ch.env_name(name)}"
        elif urlsplit(url).scheme not in ("http", "https"):
            missing[name] = f"the webhook URL of '{name}' is not an http(s) URL"
        else:
            notifiers[name] = WebhookNotifier(name, ch.kind, url, timeout=ch.timeout_seconds)
    return notifiers, missing


__all__ = [
    "EmailNotifier",
    "SECRETS_SECTION",
    "WebhookNotifier",
    "build_notifiers",
    "slack_payload",
    "teams_payload",
    "webhook_url",
]
