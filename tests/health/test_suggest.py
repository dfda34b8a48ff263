"""Suggested weights: a ridge logistic fit on sub-scores, only ever a draft."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from health.model_loader import parse_model
from health.suggest import fit_logistic, suggest_weights

MODEL = """
# the comment ops wrote
signals:
  usage: {label: Usage, table: accounts, measure: column, column: seats, score: [[0, 0], [100, 100]]}
  noise: {label: Noise, table: accounts, measure: column, column: arr, score: [[0, 0], [100, 100]]}
segments:
  small:
    when: "segment = 'small'"
    weights: {usage: 1, noise: 1}
  default:
    weights: {usage: 1, noise: 1}   # keep me
tiers: {at_risk: 40, watch: 70}
"""


def test_fit_logistic_recovers_known_coefficients():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20_000, 2))
    true = np.array([-0.5, 1.5, -1.0])
    p = 1 / (1 + np.exp(-(true[0] + x @ true[1:])))
    y = (rng.random(len(p)) < p).astype(float)
    beta = fit_logistic(x, y, l2=0.0)
    assert beta == pytest.approx(true, abs=0.08)


def _rows(n: int, segment: str, rng) -> pl.DataFrame:
    usage = rng.uniform(0, 100, n)
    noise = rng.uniform(0, 100, n)
    churn_p = 1 / (1 + np.exp((usage - 35) / 8))  # low usage -> churn
    bad = rng.random(n) < churn_p
    return pl.DataFrame(
        {
            "status": ["scored"] * n,
            "health_segment": [segment] * n,
            "bad": bad,
            "score": (usage + noise) / 2,
            "usage__score": usage,
            "noise__score": noise,
        }
    )


def test_the_signal_that_predicts_churn_gets_the_weight():
    rng = np.random.default_rng(7)
    rows = pl.concat([_rows(600, "default", rng), _rows(12, "small", rng)])
    loaded = parse_model(MODEL)
    s = suggest_weights(loaded.text, loaded.model, SimpleNamespace(rows=rows))
    fits = {f.segment: f for f in s.fits}
    default = fits["default"]
    assert default.weights["usage"] > 4 * max(default.weights["noise"], 0.25)
    assert sum(default.weights.values()) == pytest.approx(2.0, abs=0.5)  # scaled to the old total
    # the cross-validated AUC of the blend beats the published (half-noise) score
    assert default.cv_auc > default.published_auc
    # a segment with a dozen renewals keeps its weights, and says why
    assert fits["small"].weights == {"usage": 1, "noise": 1}
    assert "too few" in fits["small"].note


def test_the_draft_is_valid_model_text_with_comments_kept():
    rng = np.random.default_rng(3)
    loaded = parse_model(MODEL)
    s = suggest_weights(loaded.text, loaded.model, SimpleNamespace(rows=_rows(600, "default", rng)))
    draft = parse_model(s.text)
    assert "# the comment ops wrote" in s.text and "# keep me" in s.text
    assert draft.model.segments["default"].weights["usage"] > draft.model.segments["default"].weights["noise"]
