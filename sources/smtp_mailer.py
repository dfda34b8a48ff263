"""E-mail over SMTP (`health.crm.Mailer`), with STARTTLS / implicit TLS and login when
configured in config/crm.yaml (`smtp:`). The password comes from the caller's secrets
(`st.secrets["smtp"]`) or the environment variable named in the config — never from
the YAML file, and never into a log or an error message.

Each message carries the action's `Message-ID` (derived from its idempotency key), so a
mail resent after a crash between "sent" and "recorded" can be recognised downstream.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Mapping

from pydantic import Field, model_validator

from health.crm import Mail, MailError
from health.model import Strict


class SmtpCredentialNames(Strict):
    secrets_section: str = "smtp"
    env: dict[str, str] = Field(default_factory=lambda: {"username": "CHI_SMTP_USERNAME", "password": "CHI_SMTP_PASSWORD"})


class SmtpConfig(Strict):
    enabled: bool = False
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = False
    """Implicit TLS (SMTPS, usually port 465) instead of STARTTLS."""
    sender: str = "Customer Success <cs@example.com>"
    timeout_seconds: float = Field(default=15, gt=0, le=300)
    credentials: SmtpCredentialNames = Field(default_factory=SmtpCredentialNames)

    @model_validator(mode="after")
    def _tls(self) -> "SmtpConfig":
        if self.ssl and self.starttls:
            raise ValueError("choose one of `ssl: true` (implicit TLS) and `starttls: true`")
        return self


class SmtpMailer:
    """Send `Mail` through one SMTP server (a new connection per message: actions are few)."""

    name = "smtp"

    def __init__(
        self,
        config: SmtpConfig,
        credentials: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.config = config
        env = os.environ if environ is None else environ
        creds = dict(credentials or {})
        for k, name in config.credentials.env.items():
            if not creds.get(k) and env.get(name):
                creds[k] = env[name]
        self._username = creds.get("username") or None
        self._password = creds.get("password") or None
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        auth = "auth" if self._username else "no auth"
        tls = "ssl" if self.config.ssl else "starttls" if self.config.starttls else "plain"
        return f"SmtpMailer({self.config.host}:{self.config.port}, {tls}, {auth})"

    def message(self, mail: Mail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = mail.sender or self.config.sender
        msg["To"] = ", ".join(mail.to)
        if mail.cc:
            msg["Cc"] = ", ".join(mail.cc)
        if mail.reply_to:
            msg["Reply-To"] = mail.reply_to
        msg["Subject"] = mail.subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = mail.message_id
        msg.set_content(mail.body or "")
        return msg

    def send(self, mail: Mail) -> str:
        if not mail.to:
            raise MailError("the e-mail has no recipient")
        cfg = self.config
        where = f"{cfg.host}:{cfg.port}"
        context = self._ssl_context or ssl.create_default_context()
        try:
            if cfg.ssl:
                server: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=context)
            else:
                server = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds)
            with server:
                server.ehlo()
                if cfg.starttls and not cfg.ssl:
                    server.starttls(context=context)
                    server.ehlo()
                if self._username:
                    server.login(self._username, self._password or "")
                refused = server.send_message(self.message(mail))
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(
                f"the SMTP server {where} refused the login ({exc.smtp_code})",
                hint="check the SMTP username/password in [smtp] of .streamlit/secrets.toml or CHI_SMTP_* env vars",
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise MailError(f"the SMTP server {where} does not support {exc}",
                            hint="turn starttls off, or login off, in config/crm.yaml smtp:") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise MailError(f"the SMTP server {where} refused every recipient: {', '.join(exc.recipients)}") from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, ConnectionError, socket.timeout, OSError) as exc:
            raise MailError(
                f"cannot reach the SMTP server {where} ({type(exc).__name__})",
                hint="the action is kept and retried; check smtp.host / smtp.port in config/crm.yaml",
                retryable=True,
            ) from None
        except smtplib.SMTPException as exc:
            raise MailError(f"the SMTP server {where} refused the message: {exc}", retryable=True) from None
        if refused:
            raise MailError(f"the SMTP server {where} refused: {', '.join(refused)}")
        return mail.message_id


__all__ = ["SmtpConfig", "SmtpCredentialNames", "SmtpMailer"]
