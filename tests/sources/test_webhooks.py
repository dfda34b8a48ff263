"""Slack / Teams incoming webhooks over real HTTP on loopback (tests/sources/webhook_stub.py),
e-mail alerts through a real local SMTP server (aiosmtpd): payloads, failures (HTTP 500,
server stopped) recorded and retried, secrets never in errors or reprs."""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller

from health.alerts import AlertStore, LoadedAlerts, alert_history, deliver, evaluate, parse_alerts
from health.model_loader import load_model
from health.notify import AlertItem, NotifyError, alert_notice, digest_notice
from sources.smtp_mailer import SmtpConfig, SmtpMailer
from sources.webhooks import EmailNotifier, WebhookNotifier, build_notifiers, webhook_url
from sources.writeback import parse_crm_config
from tests.sources.webhook_stub import WebhookStub, free_port

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET_PATH = "/slack/T0001/B0002/XyZsecretTOKEN"
TEAMS_PATH = "/teams/webhookb2/secret-teams-token"
DAY = dt.date(2026, 11, 30)


def item(account_id: str = "ACC-00042", severity: str = "critical", alert_id: int = 1) -> AlertItem:
    return AlertItem(
        alert_id=alert_id, rule="entered_at_risk", title="Entered at risk", severity=severity,
        account_id=account_id, account=f"Acme {account_id}", score=31.4, tier="at_risk",
        drivers="Invoice 74 days overdue; Active users −35% vs the prior 28 days",
        reason="Now at risk (4 weeks ago: watch)", link=f"https://chi.example.com/account?account={account_id}",
        as_of=DAY, owner="Carlos Mendes", arr=120000.0, renewal_date=dt.date(2027, 2, 1),
    )


@pytest.fixture
def hook():
    with WebhookStub() as stub:
        yield stub


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001, ANN201 - aiosmtpd's hook
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, inbox
    ctl.stop()


def test_slack_post_carries_account_score_tier_drivers_and_the_deep_link(hook):
    n = WebhookNotifier("cs_slack", "slack", hook.url(SECRET_PATH))
    receipt = n.send(alert_notice("cs_slack", "cs_slack", item(), "k1"))
    assert receipt == "slack:200"
    (post,) = hook.received(SECRET_PATH)
    assert post["headers"]["Content-Type"].startswith("application/json")
    body = post["json"]
    assert "Acme ACC-00042" in body["text"] and "31" in body["text"]
    section = body["blocks"][1]
    text = section["text"]["text"]
    assert "<https://chi.example.com/account?account=ACC-00042|Acme ACC-00042>" in text
    assert "Score *31* (at risk)" in text
    assert "Invoice 74 days overdue" in text
    assert section["accessory"]["url"] == "https://chi.example.com/account?account=ACC-00042"


def test_teams_post_is_an_adaptive_card_with_facts_and_an_open_link(hook):
    n = WebhookNotifier("lead", "teams", hook.url(TEAMS_PATH))
    n.send(alert_notice("lead", "lead", item(), "k1"))
    (post,) = hook.received(TEAMS_PATH)
    body = post["json"]
    assert body["type"] == "message"
    card = body["attachments"][0]["content"]
    assert body["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["type"] == "AdaptiveCard"
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Score"] == "31 (at risk)"
    assert facts["Top drivers"].startswith("Invoice 74 days overdue")
    assert card["actions"][0]["url"] == "https://chi.example.com/account?account=ACC-00042"


def test_a_digest_is_one_post_with_every_alert_most_severe_first(hook):
    n = WebhookNotifier("cs_slack", "slack", hook.url(SECRET_PATH))
    notice = digest_notice("cs_slack", "cs_slack", [item("ACC-1", "info", 1), item("ACC-2", "critical", 2)], "d1")
    n.send(notice)
    (post,) = hook.received()
    sections = [b for b in post["json"]["blocks"] if b["type"] == "section"]
    assert len(sections) == 2
    assert "ACC-2" in sections[0]["text"]["text"]  # critical first
    assert "2 alerts on 2 accounts" in post["json"]["text"]


def test_http_500_and_a_stopped_server_raise_without_leaking_the_url(hook):
    hook.status[SECRET_PATH] = 500
    n = WebhookNotifier("cs_slack", "slack", hook.url(SECRET_PATH))
    with pytest.raises(NotifyError) as err:
        n.send(alert_notice("cs_slack", "cs_slack", item(), "k"))
    assert "HTTP 500" in str(err.value) and err.value.retryable
    assert "secretTOKEN" not in str(err.value) and "secretTOKEN" not in repr(n)
    hook.stop()
    with pytest.raises(NotifyError) as err:
        n.send(alert_notice("cs_slack", "cs_slack", item(), "k"))
    assert "cannot reach" in str(err.value) and "secretTOKEN" not in str(err.value)


def test_rate_limited_is_retried_once_after_retry_after_then_reported(hook):
    hook.status[SECRET_PATH] = 429
    n = WebhookNotifier("cs_slack", "slack", hook.url(SECRET_PATH))
    with pytest.raises(NotifyError) as err:
        n.send(alert_notice("cs_slack", "cs_slack", item(), "k"))
    assert "rate limiting (HTTP 429)" in str(err.value) and err.value.retryable
    assert len(hook.received(SECRET_PATH)) == 2


def test_slack_error_text_and_a_gone_webhook_say_what_to_fix(hook):
    hook.status[SECRET_PATH] = 404
    hook.bodies[SECRET_PATH] = "no_service"
    n = WebhookNotifier("cs_slack", "slack", hook.url(SECRET_PATH))
    with pytest.raises(NotifyError) as err:
        n.send(alert_notice("cs_slack", "cs_slack", item(), "k"))
    assert "HTTP 404: no_service" in str(err.value) and "removed" in str(err.value)
    assert not err.value.retryable


def test_webhook_urls_come_from_secrets_or_the_environment_never_the_yaml():
    model = load_model(ROOT / "weights.yaml").model
    alerts = parse_alerts(
        "channels:\n  cs_slack: { kind: slack }\n  lead: { kind: teams, env: LEAD_HOOK }\n  email: { kind: email }\n"
        "rules:\n  r: { falling: true, notify: [cs_slack] }\n",
        model,
    )
    ch = alerts.spec.channels
    assert webhook_url("cs_slack", ch["cs_slack"], {"alert_webhooks": {"cs_slack": "https://h/1"}}, {}) == "https://h/1"
    assert webhook_url("cs_slack", ch["cs_slack"], {}, {"CHI_WEBHOOK_CS_SLACK": "https://h/2"}) == "https://h/2"
    notifiers, missing = build_notifiers(alerts, {}, parse_crm_config("crm: none\n"), environ={"LEAD_HOOK": "https://h/3"})
    assert set(notifiers) == {"lead"}
    assert "CHI_WEBHOOK_CS_SLACK" in missing["cs_slack"] and "smtp.enabled" in missing["email"]
    notifiers, missing = build_notifiers(alerts, {}, None, environ={"CHI_WEBHOOK_CS_SLACK": "file:///etc/passwd"})
    assert "not an http(s) URL" in missing["cs_slack"] and "passwd" not in missing["cs_slack"]


def test_email_alert_through_a_real_smtp_server(smtp):
    ctl, inbox = smtp
    mailer = SmtpMailer(SmtpConfig(enabled=True, host="127.0.0.1", port=ctl.port, starttls=False, sender="CHI <chi@example.com>"))
    n = EmailNotifier("email", mailer)
    n.send(alert_notice("email", "carlos.mendes@example.com", item(), "chi-alert-1-1"))
    (sender, rcpts, raw), = inbox.messages
    msg = message_from_bytes(raw, policy=policy.default)
    assert rcpts == ["carlos.mendes@example.com"]
    assert msg["Message-ID"] == "<chi-alert-1-1@customer-health.local>"
    assert "Entered at risk" in msg["Subject"]
    body = msg.get_content()
    assert "https://chi.example.com/account?account=ACC-00042" in body and "Invoice 74 days overdue" in body


def test_email_to_a_server_that_is_down_is_a_retryable_notify_error():
    mailer = SmtpMailer(SmtpConfig(enabled=True, host="127.0.0.1", port=free_port(), starttls=False, timeout_seconds=2))
    with pytest.raises(NotifyError) as err:
        EmailNotifier("email", mailer).send(alert_notice("email", "x@example.com", item(), "k"))
    assert err.value.retryable and "cannot reach" in str(err.value)


# ---- the whole chain: evaluate -> deliver over real HTTP, a channel down, retried, nothing lost


ALERTS = """
base_url: https://chi.example.com
channels:
  cs_slack: { kind: slack }
  lead: { kind: teams }
rules:
  low:
    title: Low score
    condition: "score < 40"
    cooldown_days: 0
    notify: [cs_slack, lead]
"""


def _summary():
    import polars as pl

    return pl.DataFrame({
        "account_id": ["A1", "A2", "A3"], "name": ["Alpha", "Beta", "Gamma"], "score": [20.0, 35.0, 80.0],
        "tier": ["at_risk", "at_risk", "healthy"], "health_segment": ["default"] * 3, "owner": ["Carlos Mendes"] * 3,
        "renewal_date": [dt.date(2027, 1, 1)] * 3, "drivers": ["d1", "d2", "d3"],
    })


def test_a_channel_down_is_recorded_failed_and_retried_next_run_while_the_other_goes_out(tmp_path, hook):
    model = load_model(ROOT / "weights.yaml").model
    alerts: LoadedAlerts = parse_alerts(ALERTS, model)
    store = AlertStore(tmp_path / "state.db")
    hook.status[TEAMS_PATH] = 500
    notifiers, missing = build_notifiers(alerts, {"alert_webhooks": {"cs_slack": hook.url(SECRET_PATH), "lead": hook.url(TEAMS_PATH)}}, None)
    assert not missing
    ev = evaluate(_summary(), model, alerts, store, DAY)
    assert ev.fired == {"low": 2} and ev.deliveries == 4
    rep = deliver(store, alerts, notifiers)
    assert rep.delivered == 2 and len(rep.failed) == 2
    assert all("HTTP 500" in err for _, _, err in rep.failed)
    assert len(hook.received(SECRET_PATH)) == 2
    hist = alert_history(store)
    failed = hist.filter(hist["channel"] == "lead")
    assert failed["status"].to_list() == ["failed", "failed"] and failed["error"].str.contains("HTTP 500").all()
    assert not hist["error"].fill_null("").str.contains("secret").any()

    hook.status[TEAMS_PATH] = 200
    rep = deliver(store, alerts, notifiers)  # the next run
    assert rep.delivered == 2 and not rep.failed
    assert len(hook.received(TEAMS_PATH)) == 4 and len(hook.received(SECRET_PATH)) == 2  # slack not sent twice
    hist = alert_history(store)
    assert set(hist["status"]) == {"delivered"}
    assert hist.filter(hist["channel"] == "lead")["attempts"].to_list() == [2, 2]
    rep = deliver(store, alerts, notifiers)
    assert rep.messages == 0 and len(hook.posts) == 6


def test_a_stopped_server_then_back_up_loses_nothing(tmp_path):
    model = load_model(ROOT / "weights.yaml").model
    alerts = parse_alerts(ALERTS, model)
    store = AlertStore(tmp_path / "state.db")
    port = free_port()
    url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    notifiers, _ = build_notifiers(alerts, {"alert_webhooks": {"cs_slack": url}}, None)
    evaluate(_summary(), model, alerts, store, DAY)
    rep = deliver(store, alerts, notifiers, {"lead": "no URL"})
    assert len(rep.failed) == 2 and "cannot reach" in rep.failed[0][2]
    assert rep.waiting == {"lead": 2}
    with WebhookStub(port) as hook:
        rep = deliver(store, alerts, notifiers, {"lead": "no URL"})
        assert rep.delivered == 2 and len(hook.received()) == 2
    assert alert_history(store, status="pending")["channel"].to_list() == ["lead", "lead"]
