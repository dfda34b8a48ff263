"""Segments (leadership): distribution, ARR at risk over time, movement, renewals, drill-through."""

from __future__ import annotations


from tests.app_pages.conftest import figures, follow, grid, open_page, texts, titles


def test_segments_page_renders():
    at = open_page("app_pages/segments.py")
    assert not at.exception
    assert titles(at) == ["Segments"]
    labels = [m.label for m in at.metric]
    assert labels[:4] == ["ARR at risk", "Accounts at risk", "Newly at risk (4 weeks)", "At risk, renewing in 90 days"]
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


def test_leadership_calibration_matches_the_back_test(book):
    """The reliability section shows the published model's back-test on past renewals:
    the figures on the page are the back-test's, recomputed here independently."""
    from health.backtest import run_backtest

    at = open_page("app_pages/segments.py")
    assert not at.exception
    metrics = {m.label: m for m in at.metric}
    result = run_backtest(book.tables, book.model, lead_days=90, snap="week", resamples=50)
    m = result.overall
    assert metrics["Past renewals checked"].value == str(m.n)
    flagged = round(m.recall_flagged * m.bad)
    assert metrics["Churned accounts flagged 90 days ahead"].value == f"{flagged} of {m.bad}"
    at_risk = next(b for b in m.tiers if b.label == "at_risk")
    assert metrics["Churn rate when “at risk”"].value == f"{at_risk.rate:.0%}"
    # An at-risk account churned more often than the average one (the model is not noise).
    assert at_risk.rate > m.base_rate
