"""The at-risk view: order, filters (URL and widgets), headline, row -> account, export."""

from __future__ import annotations

import polars as pl

from health.segments import TIERS
from tests.app_pages.conftest import app, grid, texts, titles


def _run(query=None):
    at = app(query)
    at.run()
    assert not at.exception
    return at


def test_lists_every_active_account_most_at_risk_first(book):
    at = _run()
    rows = grid(at)
    assert rows.height == book.summary.height
    scores = rows["score"].drop_nulls()
    assert scores.is_sorted()
    assert rows["tier"][0].endswith("At risk")
    for col in ("name", "segment", "owner", "arr", "renewal_in_days", "score", "tier", "change_4w", "spark", "coverage", "drivers"):
        assert col in rows.columns
    assert rows["drivers"][0]  # the reason, in words


def test_headline_metrics(book):
    at = _run()
    labels = [m.label for m in at.metric]
    at_risk = book.summary.filter(pl.col("tier") == "at_risk").height
    moved = book.summary["moved_into_at_risk"].sum()
    assert labels[0] == f"🔴 At risk · {at_risk:,} accounts"
    assert labels[3] == f"Newly at risk · {moved:,} accounts"
    assert at.metric[0].value.startswith("$")


def test_url_filters_change_the_rows(book):
    assert set(grid(_run({"tier": "At risk"}))["tier"]) == {"🔴 At risk"}
    assert set(grid(_run({"tier": ["At risk", "Watch"]}))["tier"]) == {"🔴 At risk", "🟠 Watch"}
    assert set(grid(_run({"segment": "enterprise"}))["segment"]) == {"enterprise"}
    assert set(grid(_run({"owner": "Maya Patel"}))["owner"]) == {"Maya Patel"}
    soon = grid(_run({"renewal": "30 days"}))
    assert soon.height > 0 and soon["renewal_in_days"].max() <= 30
    falling = grid(_run({"falling": "true"}))
    assert 0 < falling.height < book.summary.height and all(w.startswith("↘") for w in falling["warning"])
    found = grid(_run({"q": "ironwood"}))
    assert found.height >= 1 and all("ironwood" in n.lower() for n in found["name"])


def test_widgets_change_the_rows(book):
    at = _run()
    at.selectbox(key="segment").select("smb").run()
    assert set(grid(at)["segment"]) == {"smb"}
    at.multiselect(key="tier").select("At risk").run()
    rows = grid(at)
    assert set(rows["tier"]) == {"🔴 At risk"} and set(rows["segment"]) == {"smb"}
    at.toggle(key="falling").set_value(True).run()
    assert grid(at).height <= rows.height
    at.button(key="reset").click().run()
    assert grid(at).height == book.summary.height


def test_my_accounts(monkeypatch):
    monkeypatch.setenv("CHI_USER", "daniel.okafor@example.com")
    rows = grid(_run({"owner": "My accounts"}))
    assert rows.height > 0 and set(rows["owner"]) == {"Daniel Okafor"}


def test_my_accounts_when_nobody_is_signed_in():
    at = _run({"owner": "My accounts"})
    assert any("needs to know who you are" in i.value for i in at.info)


def test_signed_in_user_email_decides_my_accounts():
    at = app({"owner": "My accounts"})
    at.user = {"is_logged_in": True, "email": "Priya.Raman@example.com", "name": "Priya"}
    at.run()
    assert set(grid(at)["owner"]) == {"Priya Raman"}


def test_empty_state():
    at = _run({"q": "no such account zzz"})
    assert any("No accounts match these filters" in i.value for i in at.info)
    assert not at.dataframe


def test_selecting_a_row_opens_the_account():
    at = _run({"tier": "At risk"})
    second = grid(at).row(1, named=True)
    at.session_state["grid"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    assert titles(at) == [second["name"]]
    assert at.query_params["account"] == second["account_id"]


def test_csv_export_is_the_filtered_table(book):
    at = _run({"segment": "enterprise"})
    button = at.get("download_button")[0]
    assert "Download CSV" in button.proto.label
    n = book.summary.filter(pl.col("segment") == "enterprise").height
    assert f"{n:,} of {book.summary.height:,} accounts" in texts(at)


def test_tier_words_cover_every_tier():
    at = _run()
    options = at.multiselect(key="tier").options
    assert len(options) == len(TIERS)
