"""Binary-classification metrics for churn, in numpy (the platform carries no scikit-learn).

Scores are "higher = more likely to churn"; ties are handled the way scikit-learn does (a tied
group is one threshold), so figures compare with the usual definitions. Labels are 0/1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

Metric = Callable[[np.ndarray, np.ndarray], float]


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-d and equal in length, got {y.shape} and {s.shape}")
    return y, s


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Probability that a random churner scores above a random stayer (ties count half):
    the Mann-Whitney statistic over average ranks. NaN when one class is absent."""
    y, s = _check(y, score)
    positives = y.sum()
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()  # ties share their mean rank
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """PR-AUC as average precision: sum over distinct thresholds of (recall step) x precision.
    NaN when there is no positive."""
    y, s = _check(y, score)
    positives = y.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # The last index of each tied group: one threshold per distinct score.
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    true_pos = np.cumsum(y_sorted)[last]
    predicted = last + 1
    precision = true_pos / predicted
    recall = true_pos / positives
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * precision))


def brier(y: np.ndarray, probability: np.ndarray) -> float:
    """Mean squared error of the probabilities (lower is better; 0.25 is a coin at 50 %)."""
    y, p = _check(y, probability)
    return float(np.mean((p - y) ** 2))


def reliability_table(y: np.ndarray, probability: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Calibration by equal-width probability bins: rows, mean predicted, observed churn rate
    (empty bins are left out). A calibrated model has predicted ~= observed in every bin."""
    y, p = _check(y, probability)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "rows": int(inside.sum()),
                         "predicted": float(p[inside].mean()), "observed": float(y[inside].mean())})
    return pd.DataFrame(rows, columns=["bin", "rows", "predicted", "observed"])


@dataclass(frozen=True)
class PairedInterval:
    """metric(a) - metric(b) on the same rows, and its bootstrap percentile interval."""

    delta: float
    low: float
    high: float
    resamples: int
    confidence: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_bootstrap(
    y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, metric: Metric,
    resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> PairedInterval:
    """Resample rows with replacement, the same rows for both scorers, and take the percentile
    interval of metric(a) - metric(b): pairing removes the rows' shared difficulty from the
    spread, so a real difference shows with fewer rows than two separate intervals need."""
    y, a = _check(y, score_a)
    _, b = _check(y, score_b)
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        deltas[i] = metric(y[rows], a[rows]) - metric(y[rows], b[rows])
    deltas = deltas[~np.isnan(deltas)]  # a resample with one class only has no AUC
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail]) if len(deltas) else (np.nan, np.nan)
    return PairedInterval(metric(y, a) - metric(y, b), float(low), float(high), len(deltas), confidence)
