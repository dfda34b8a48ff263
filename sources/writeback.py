"""Wiring for write-backs: read config/crm.yaml, build the CRM sink, the mailer and the
local action store. Used by the composition roots only (app.py / pages, `python -m
health sync`); the engine (`health.actions`) sees the ports, never this module.

    cfg = load_crm_config("config/crm.yaml")
    store = open_store(cfg)
    sink = build_sink(cfg, secrets=st.secrets.get("salesforce"))   # None: no CRM
    mailer = build_mailer(cfg, secrets=st.secrets.get("smtp"))     # None: no SMTP
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, ValidationError

from health.actions import ActionStore
from health.crm import CrmSink, Mailer
from health.model import Strict
from health.yaml_config import ConfigError, parse_yaml, plain, read_text
from sources.hubspot import HubSpotConfig, HubSpotSink, hubspot_credentials
from sources.salesforce import SalesforceConfig, SalesforceSink, _has_password, _has_session, credentials_from
from sources.servicenow import ServiceNowConfig, ServiceNowSink, servicenow_credentials
from sources.smtp_mailer import SmtpConfig, SmtpMailer

STATE_DB_ENV = "CHI_STATE_DB"
ROOT = Path(__file__).resolve().parents[1]
"""The project root: relative `store:` paths are read from here (as config/ is)."""


class CrmFile(Strict):
    version: int | str | None = None
    description: str | None = None
    crm: Literal["auto", "salesforce", "hubspot", "servicenow", "none"] = "auto"
    """auto: Salesforce when credentials are found, else none (actions stay local);
    hubspot / servicenow: always that CRM (sources/hubspot.py, sources/servicenow.py)."""
    store: str = "data/state.db"
    salesforce: SalesforceConfig = Field(default_factory=SalesforceConfig)
    hubspot: HubSpotConfig = Field(default_factory=HubSpotConfig)
    servicenow: ServiceNowConfig = Field(default_factory=ServiceNowConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)


def parse_crm_config(text: str, file: str = "config/crm.yaml") -> CrmFile:
    """Validate crm.yaml text; raise `ConfigError` listing every problem with its line."""
    what = "the CRM settings"
    doc, col = parse_yaml(text, file, what)
    data = plain(doc) if doc is not None else {}
    if not col.top_level(data, CrmFile, ()):
        col.raise_if_errors()
    parsed: dict[str, Any] = {}
    for key, value in data.items():
        if key == "salesforce":
            got = col.one((key,), value or {}, SalesforceConfig)
        elif key == "smtp":
            got = col.one((key,), value or {}, SmtpConfig)
        elif key == "hubspot":
            got = col.one((key,), value or {}, HubSpotConfig)
        elif key == "servicenow":
            got = col.one((key,), value or {}, ServiceNowConfig)
        elif key in CrmFile.model_fields:
            try:
                CrmFile.model_validate({key: value})
                got = value
            except ValidationError as exc:
                col.pydantic((), exc, CrmFile)
                got = None
        else:
            continue
        if got is not None:
            parsed[key] = got
    col.raise_if_errors()
    return CrmFile.model_validate(parsed)


def load_crm_config(path: str | Path = "config/crm.yaml") -> CrmFile:
    """The CRM settings; a missing file gives the defaults (no CRM, store in data/)."""
    if not Path(path).exists():
        return CrmFile()
    return parse_crm_config(read_text(path, "the CRM settings"), str(path))


def file_secrets(path: str | Path = ".streamlit/secrets.toml") -> dict[str, Any]:
    """The app's secrets file, for the command line (same credentials as the app)."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError([], f"{path} (not readable TOML: {type(exc).__name__})") from None


def plain_secrets(secrets: Any) -> dict[str, Any]:
    """A plain dict copy of a secrets mapping (st.secrets or a dict). `st.secrets` raises
    when no secrets file exists at all: that is simply no secrets here."""
    if secrets is None:
        return {}
    try:
        return {str(k): (plain_secrets(v) if hasattr(v, "items") else v) for k, v in secrets.items()}
    except Exception:  # noqa: BLE001 - StreamlitSecretNotFoundError and friends
        return {}


def _section(secrets: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    sec = secrets.get(name)
    return sec if isinstance(sec, Mapping) else None


def build_sink(
    config: CrmFile,
    secrets: Mapping[str, Any] | None = None,
    *,
    session: Any = None,
    environ: Mapping[str, str] | None = None,
) -> CrmSink | None:
    """The CRM sink, or None when no CRM is configured (`crm: none`, or `auto` without
    credentials). `secrets`: the [salesforce] section (st.secrets["salesforce"]) — or
    the whole secrets mapping, from which the configured section is taken."""
    if config.crm == "none":
        return None
    plain = plain_secrets(secrets)
    if config.crm == "hubspot":
        hs = config.hubspot
        section = _section(plain, hs.credentials.secrets_section) or plain
        return HubSpotSink(hs, hubspot_credentials(section, hs, environ), environ={})
    if config.crm == "servicenow":
        sn = config.servicenow
        section = _section(plain, sn.credentials.secrets_section) or plain
        return ServiceNowSink(sn, servicenow_credentials(section, sn, environ), session=session, environ={})
    sf = config.salesforce
    section = _section(plain, sf.credentials.secrets_section) or plain
    creds = credentials_from(section, sf, environ)
    if config.crm == "auto" and not (_has_password(creds) or _has_session(creds)):
        return None
    return SalesforceSink(sf, creds, session=session, environ={})


def score_writer(config: CrmFile, sink: CrmSink | None) -> Any:
    """The sink as a `health.crm.AccountHealthWriter` when the score write-back is on
    (`salesforce.account_health.enabled` and a Salesforce sink), else None."""
    if isinstance(sink, SalesforceSink) and config.salesforce.account_health.enabled:
        return sink
    return None


def build_mailer(
    config: CrmFile,
    secrets: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Mailer | None:
    """The SMTP mailer when `smtp.enabled`, else None (e-mail actions are then logged in
    the CRM as e-mail activities, but not sent by the app)."""
    if not config.smtp.enabled:
        return None
    plain = plain_secrets(secrets)
    section = _section(plain, config.smtp.credentials.secrets_section) or plain
    return SmtpMailer(config.smtp, section or None, environ=environ)


def store_path(config: CrmFile, base_dir: str | Path = ROOT) -> Path:
    override = os.environ.get(STATE_DB_ENV)
    p = Path(override or config.store)
    return p if p.is_absolute() else Path(base_dir) / p


def open_store(config: CrmFile, base_dir: str | Path = ROOT) -> ActionStore:
    """The local action store (SQLite; `store:` in config/crm.yaml, or $CHI_STATE_DB)."""
    return ActionStore(store_path(config, base_dir))


__all__ = [
    "CrmFile",
    "build_mailer",
    "build_sink",
    "file_secrets",
    "load_crm_config",
    "open_store",
    "parse_crm_config",
    "plain_secrets",
    "score_writer",
    "store_path",
]
