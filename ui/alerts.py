"""The Streamlit side of alerts: the alert store (the same state database as the actions,
`store:` in config/crm.yaml or $CHI_STATE_DB) and the account timeline's "Alerts" lane.
Permissions (who may acknowledge) are enforced by `health.alerts.acknowledge`."""

from __future__ import annotations

import polars as pl
import streamlit as st

from health.alerts import AlertStore, alert_timeline
from sources.writeback import store_path
from ui import actions


@st.cache_resource(show_spinner=False)
def _store(path: str) -> AlertStore:
    return AlertStore(path)


def get_alert_store() -> AlertStore:
    """One AlertStore per process and state file (raises ConfigError for a broken crm.yaml)."""
    return _store(str(store_path(actions.crm_config())))


def account_rows(account_id: str) -> pl.DataFrame | None:
    """The account's alerts as timeline rows (lane "alerts"), or None when the state
    database cannot be opened (the page then shows the timeline without them)."""
    try:
        return alert_timeline(get_alert_store(), account_id)
    except Exception:  # noqa: BLE001 - a missing / broken store must not break the account page
        return None


def stored_scores(account_id: str) -> pl.DataFrame:
    """The scores the daily run stored for this account (as scored on the day, with the
    model then in force); empty when there are none or the store cannot be opened."""
    try:
        return get_alert_store().snapshots(account_id).sort("as_of")
    except Exception:  # noqa: BLE001 - the chart simply goes without them
        return pl.DataFrame()
