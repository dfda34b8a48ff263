"""Chart builders: the score history marks model changes inside its time range only."""

from __future__ import annotations

import datetime as dt

import polars as pl

from health.model import Tiers
from ui.charts import score_history

D = dt.date


def _history() -> pl.DataFrame:
    days = [D(2026, 1, 5) + dt.timedelta(days=7 * k) for k in range(10)]
    return pl.DataFrame({"as_of": days, "score": [70.0 - k for k in range(10)], "tier": ["watch"] * 10})


def test_model_changes_inside_the_range_are_marked():
    fig = score_history(
        _history(),
        Tiers(at_risk=40, watch=70),
        (D(2026, 1, 1), D(2026, 3, 31)),
        [(D(2026, 2, 2), "model v2"), (D(2025, 6, 1), "model v1b"), (D(2026, 6, 1), "model v3")],
    )
    texts = [a.text for a in fig.layout.annotations]
    assert "model v2" in texts
    assert "model v1b" not in texts and "model v3" not in texts
    dotted = [s for s in fig.layout.shapes if s.type == "line" and s.line.dash == "dot"]
    assert len(dotted) == 1


def test_no_model_changes_no_markers():
    fig = score_history(_history(), Tiers(at_risk=40, watch=70), (D(2026, 1, 1), D(2026, 3, 31)))
    assert not [s for s in fig.layout.shapes if s.type == "line"]


def test_stored_daily_scores_are_drawn_next_to_the_recomputed_line():
    stored = pl.DataFrame(
        {"as_of": [D(2026, 2, 2)], "score": [55.0], "tier": ["at_risk"], "model_hash": ["abc123"]}
    )
    fig = score_history(_history(), Tiers(at_risk=40, watch=70), (D(2026, 1, 1), D(2026, 3, 31)), stored=stored)
    names = [t.name for t in fig.data]
    assert names == ["Health score", "As scored on the day"]
    assert list(fig.data[1].y) == [55.0] and fig.data[1].customdata[0][1] == "abc123"
