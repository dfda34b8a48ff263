"""E-mail actions through a real local SMTP server (aiosmtpd) — plain, and STARTTLS with
login over a trustme certificate — via the outbox: sent once, logged in the CRM once."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from email import message_from_bytes
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from health.actions import ActionStore, Backoff, action_key, sync
from health.crm import Mail, MailError, MemorySink
from sources.smtp_mailer import SmtpConfig, SmtpMailer
from sources.writeback import build_mailer, parse_crm_config

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN201
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"cs-bot" and auth_data.password == b"mail-pass"
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 235 / 535 itself


@pytest.fixture
def plain_smtp():
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, inbox
    ctl.stop()


@pytest.fixture
def tls_smtp(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(sctx)
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    inbox = Inbox()
    ctl = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), tls_context=sctx, require_starttls=True,
        authenticator=authenticator, auth_require_tls=True,
    )
    ctl.start()
    yield ctl, inbox, cctx
    ctl.stop()


ACCOUNT = {"account_id": "ACC-1", "name": "Acme", "owner": "Carlos Mendes", "crm_id": "001000000000001AAA"}


def email_action(store, roles, playbooks, nonce="m1"):
    user = roles.user("carlos.mendes@example.com")
    return store.create_action(
        user, ACCOUNT, action_type="email", key=action_key("ACC-1", "training_offer", nonce), playbooks=playbooks,
        play="training_offer",
        payload={"subject": "A training for your team", "body": "Two dates: Tue or Thu.", "to": ["admin@acme.test"]},
    ).record


def test_email_action_is_sent_once_and_logged_once(tmp_path, plain_smtp, roles, playbooks):
    ctl, inbox = plain_smtp
    mailer = SmtpMailer(SmtpConfig(enabled=True, host="127.0.0.1", port=ctl.port, starttls=False,
                                   sender="CS <cs@example.com>"), environ={})
    store = ActionStore(tmp_path / "s.db")
    sink = MemorySink()
    a = email_action(store, roles, playbooks)
    assert sync(store, sink, mailer).synced == [a.id]
    assert len(inbox.messages) == 1
    mail_from, rcpt, raw = inbox.messages[0]
    msg = message_from_bytes(raw)
    assert mail_from == "cs@example.com" and rcpt == ["admin@acme.test"]
    assert msg["Subject"] == "A training for your team" and msg["Reply-To"] == "carlos.mendes@example.com"
    assert msg["Message-ID"] == f"<{a.key}@customer-health.local>"
    assert "Two dates" in msg.get_payload()
    stored = store.get(a.id)
    assert stored.mail_id == msg["Message-ID"] and stored.status == "synced"
    assert sink.records[a.key][1].kind == "email"
    # A forced rerun neither resends nor relogs.
    assert sync(store, sink, mailer, force=True).claimed == 0
    assert len(inbox.messages) == 1 and sink.calls == 1


def test_mail_is_not_resent_when_only_the_crm_failed(tmp_path, plain_smtp, roles, playbooks):
    from health.crm import CrmUnavailable

    ctl, inbox = plain_smtp
    mailer = SmtpMailer(SmtpConfig(enabled=True, host="127.0.0.1", port=ctl.port, starttls=False), environ={})
    store = ActionStore(tmp_path / "s.db")
    sink = MemorySink()
    sink.fail_with = CrmUnavailable("Salesforce is down")
    a = email_action(store, roles, playbooks)
    sync(store, sink, mailer)
    assert store.get(a.id).status == "failed" and store.get(a.id).mailed_at is not None
    sink.fail_with = None
    assert sync(store, sink, mailer, force=True).synced == [a.id]
    assert len(inbox.messages) == 1


def test_smtp_down_keeps_the_action_and_sends_later(tmp_path, roles, playbooks):
    port = free_port()
    mailer = SmtpMailer(SmtpConfig(enabled=True, host="127.0.0.1", port=port, starttls=False, timeout_seconds=2),
                        environ={})
    store = ActionStore(tmp_path / "s.db", backoff=Backoff(base=dt.timedelta(seconds=0)))
    sink = MemorySink()
    a = email_action(store, roles, playbooks)
    sync(store, sink, mailer)
    got = store.get(a.id)
    assert got.status == "failed" and got.error_kind == "mail" and f"127.0.0.1:{port}" in got.last_error
    assert sink.calls == 0  # nothing is logged as sent before it was sent
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        assert sync(store, sink, mailer, force=True).synced == [a.id]
        assert len(inbox.messages) == 1 and sink.calls == 1
    finally:
        ctl.stop()


def test_starttls_and_login(tls_smtp):
    ctl, inbox, client_ctx = tls_smtp
    cfg = SmtpConfig(enabled=True, host="127.0.0.1", port=ctl.port, starttls=True)
    mailer = SmtpMailer(cfg, {"username": "cs-bot", "password": "mail-pass"}, environ={}, ssl_context=client_ctx)
    mail = Mail(to=("a@acme.test",), subject="hello", body="hi", message_id="<k1@customer-health.local>")
    assert mailer.send(mail) == "<k1@customer-health.local>"
    assert len(inbox.messages) == 1
    wrong = SmtpMailer(cfg, {"username": "cs-bot", "password": "nope"}, environ={}, ssl_context=client_ctx)
    with pytest.raises(MailError, match="refused the login") as err:
        wrong.send(mail)
    assert "nope" not in str(err.value) and "nope" not in repr(wrong)


def test_password_from_env_and_build_mailer():
    cfg = parse_crm_config("smtp:\n  enabled: true\n  host: mail.example.com\n  port: 465\n  ssl: true\n  starttls: false\n")
    m = build_mailer(cfg, None, environ={"CHI_SMTP_USERNAME": "u", "CHI_SMTP_PASSWORD": "p"})
    assert isinstance(m, SmtpMailer) and repr(m) == "SmtpMailer(mail.example.com:465, ssl, auth)"
    assert build_mailer(parse_crm_config("smtp: { enabled: false }\n")) is None
