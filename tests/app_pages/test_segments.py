"""Segments (leadership): distribution, ARR at risk over time, movement, renewals, drill-through."""

from __future__ import annotations

import json

from tests.app_pages.conftest import figures, follow, grid, open_page, texts, titles


def test_segments_page_renders():
    at = open_page("app_pages/segments.py")
    assert not at.exception
    assert titles(at) == ["Segments"]
    labels = [m.label for m in at.metric]
    assert labels == ["ARR at risk", "Accounts at risk", "Newly at risk (4 weeks)", "At risk, renewing in 90 days"]
    assert len(figures(at)) == 5  # by segment, by owner, over time, movement, renewals
    body = texts(at)
    assert "today's ARR" in body


def test_movement_matrix_counts_every_account(book):
    at = open_page("app_pages/segments.py")
    heat = next(f for f in figures(at) if f["data"][0]["type"] == "heatmap")
    assert sum(sum(row) for row in heat["data"][0]["z"]) == book.summary.height


def test_drill_through_to_a_filtered_at_risk_list():
    at = open_page("app_pages/segments.py")
    link = next(l for l in at.get("page_link") if l.proto.label.startswith("smb:"))
    follow(at, link)
    assert not at.exception
    assert titles(at) == ["At-risk accounts"]
    rows = grid(at)
    assert set(rows["segment"]) == {"smb"} and set(rows["tier"]) == {"🔴 At risk"}
    assert f"{rows.height} at risk" in link.proto.label


def test_renewal_drill_through():
    at = open_page("app_pages/segments.py")
    link = next(l for l in at.get("page_link") if "renew in the next 90 days" in l.proto.label)
    follow(at, link)
    rows = grid(at)
    assert rows["renewal_in_days"].max() <= 90 and set(rows["tier"]) == {"🔴 At risk"}
    assert link.proto.label.startswith(f"{rows.height} at-risk accounts")


def test_measure_toggle():
    at = open_page("app_pages/segments.py")
    at.get("button_group")[0].set_value("Accounts").run()
    bars = figures(at)[0]
    assert bars["layout"]["xaxis"]["title"]["text"] == "Accounts"
