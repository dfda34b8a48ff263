"""Suggested weights: what past renewals say each segment's weights should be.

For every model segment with enough past renewals, a ridge-regularised logistic
regression of "churned" on the signals' sub-scores at the lead time (the back-test's
rows: point-in-time, nothing after the as-of date) gives each signal's pull on churn.
A signal whose higher sub-score goes with *less* churn gets a weight in proportion to
that pull; one that does not help gets 0. The weights are scaled to the segment's
current total and rounded to halves, so the draft reads like a person wrote it.

It is only ever a **draft**: the result is model text that the Model page loads into
the editor, where ops see the tier migration and the back-test next to the published
model and decide. The figure to trust is the cross-validated AUC (each renewal scored by
a fit that never saw it); the draft's own back-test is in-sample and flatters it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from health.backtest import BacktestResult, auc
from health.model import HealthModel
from health.model_versions import SetWeight, edit_weights


@dataclass(frozen=True)
class SegmentFit:
    segment: str
    n: int
    bad: int
    weights: dict[str, float]
    """Suggested weight per signal (0 = the signal does not help in this segment)."""
    cv_auc: float | None
    """Cross-validated AUC of the fitted blend (out-of-fold); None when not fitted."""
    published_auc: float | None
    """AUC of the published score on the same renewals."""
    note: str = ""


@dataclass
class Suggestion:
    fits: list[SegmentFit]
    text: str
    """The model text with the suggested weights (comments and order kept)."""
    changes: list[SetWeight] = field(default_factory=list)

    def table(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "segment": [f.segment for f in self.fits],
                "renewals": [f.n for f in self.fits],
                "churned": [f.bad for f in self.fits],
                "published AUC": [f.published_auc for f in self.fits],
                "suggested AUC (cross-validated)": [f.cv_auc for f in self.fits],
                "note": [f.note for f in self.fits],
            },
            schema_overrides={"published AUC": pl.Float64, "suggested AUC (cross-validated)": pl.Float64},
        )


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> np.ndarray:
    """Ridge logistic regression by Newton's method; returns [intercept, coefficients...].
    The intercept is not penalised."""
    n, k = x.shape
    design = np.hstack([np.ones((n, 1)), x])
    beta = np.zeros(k + 1)
    penalty = np.diag([0.0] + [l2] * k)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -30, 30)))
        gradient = design.T @ (y - p) - penalty @ beta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta


def _matrix(rows: pl.DataFrame, signals: list[str]) -> tuple[np.ndarray, list[str]]:
    cols = [f"{s}__score" for s in signals]
    x = rows.select([pl.col(c).fill_null(50.0).cast(pl.Float64) for c in cols]).to_numpy()
    keep = [i for i in range(x.shape[1]) if np.std(x[:, i]) > 1e-9]
    return x[:, keep], [signals[i] for i in keep]


def _weights_from(beta: np.ndarray, sd: np.ndarray, names: list[str]) -> dict[str, float]:
    # Standardised coefficients back to "per sub-score point"; churn falls as health rises,
    # so a helpful signal has a negative coefficient.
    pull = np.maximum(0.0, -beta[1:] / sd)
    return dict(zip(names, pull.tolist()))


def _cross_validated_auc(x: np.ndarray, y: np.ndarray, l2: float, folds: int, seed: int) -> float | None:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    risk = np.empty(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        if y[train].sum() == 0 or y[train].sum() == len(train):
            return None
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
        sd[sd < 1e-9] = 1.0
        beta = fit_logistic((x[train] - mu) / sd, y[train], l2)
        risk[test] = ((x[test] - mu) / sd) @ beta[1:] + beta[0]
    return auc(-risk, y.astype(bool))


def suggest_weights(
    model_text: str,
    model: HealthModel,
    backtest: BacktestResult,
    *,
    l2: float = 20.0,
    min_outcomes: int = 40,
    min_bad: int = 8,
    folds: int = 5,
    seed: int = 0,
) -> Suggestion:
    """Per-segment suggested weights from the back-test's renewals (see the module doc)."""
    scored = backtest.rows.filter(pl.col("status") == "scored")
    signals = list(model.signals)
    fits: list[SegmentFit] = []
    changes: list[SetWeight] = []
    for seg_name, seg in model.segments.items():
        rows = scored.filter(pl.col("health_segment") == seg_name)
        y = rows["bad"].cast(pl.Int64).to_numpy() if rows.height else np.array([], dtype=np.int64)
        n, bad = len(y), int(y.sum())
        published = auc(rows["score"].to_numpy(), y.astype(bool)) if n and 0 < bad < n else None
        if n < min_outcomes or bad < min_bad:
            fits.append(SegmentFit(seg_name, n, bad, dict(seg.weights), None, published,
                                   f"too few renewals to fit (need {min_outcomes} and {min_bad} churned): weights kept"))  # fmt: skip
            continue
        x, names = _matrix(rows, signals)
        mu, sd = x.mean(axis=0), x.std(axis=0)
        beta = fit_logistic((x - mu) / sd, y.astype(float), l2)
        pull = _weights_from(beta, sd, names)
        total = sum(seg.weights.values())
        strength = sum(pull.values())
        if strength <= 0:
            fits.append(SegmentFit(seg_name, n, bad, dict(seg.weights), None, published,
                                   "no signal separates churn here: weights kept"))  # fmt: skip
            continue
        weights = {s: round(2 * total * pull.get(s, 0.0) / strength) / 2 for s in signals}
        cv = _cross_validated_auc(x, y.astype(float), l2, folds, seed)
        fits.append(SegmentFit(seg_name, n, bad, weights, cv, published))
        for s, w in weights.items():
            if w > 0 or s in seg.weights:
                changes.append(SetWeight(seg_name, s, w))
    text = edit_weights(model_text, changes) if changes else model_text
    return Suggestion(fits, text, changes)
