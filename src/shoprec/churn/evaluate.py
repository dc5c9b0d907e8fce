"""Churn evaluation: the model against honest baselines on the test snapshot, and the gate.

Baselines:
    recency    days since the user's last event (longer silence = more risk)
    frequency  minus the user's all-time event count (fewer events = more risk)
Their ranking metrics (ROC-AUC, PR-AUC) use the raw score. For calibration (Brier, reliability)
each baseline's score is turned into a probability by quantile bins fitted on the training rows
(the churn rate of each bin), so its Brier score is that of the best this one signal can say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from shoprec.churn.metrics import average_precision, brier, paired_bootstrap, reliability_table, roc_auc
from shoprec.features import names as N

MODEL = "churn_mlp"
RECENCY = "recency"
FREQUENCY = "frequency"
ALL_TIME_COUNTS = tuple(f"{N.EVENT_PLURAL[kind]}_all" for kind in N.EVENT_PLURAL)


def recency_score(frame: pd.DataFrame) -> np.ndarray:
    return frame[N.DAYS_SINCE_LAST_EVENT].to_numpy(dtype=np.float64)


def frequency_score(frame: pd.DataFrame) -> np.ndarray:
    return -frame[list(ALL_TIME_COUNTS)].sum(axis=1).to_numpy(dtype=np.float64)


BASELINES = {RECENCY: recency_score, FREQUENCY: frequency_score}


@dataclass(frozen=True)
class BinnedCalibration:
    """A score -> probability map: quantile bins of the training scores, each bin's churn rate."""

    edges: np.ndarray
    rates: np.ndarray

    @classmethod
    def fit(cls, score: np.ndarray, y: np.ndarray, bins: int = 10) -> "BinnedCalibration":
        edges = np.unique(np.quantile(score, np.linspace(0, 1, bins + 1))[1:-1])
        index = np.searchsorted(edges, score, side="right")
        overall = float(np.mean(y))
        rates = np.array([float(np.mean(y[index == b])) if (index == b).any() else overall
                          for b in range(len(edges) + 1)])
        return cls(edges, rates)

    def __call__(self, score: np.ndarray) -> np.ndarray:
        return self.rates[np.searchsorted(self.edges, score, side="right")]


def metric_row(y: np.ndarray, score: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    return {"roc_auc": roc_auc(y, score), "pr_auc": average_precision(y, score),
            "brier": brier(y, probability), "churn_rate": float(np.mean(y)), "rows": int(len(y))}


def evaluate_churn(
    y_test: np.ndarray,
    model_probability: np.ndarray,
    test: pd.DataFrame,
    train: pd.DataFrame,
    y_train: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of the model and each baseline on the test rows, paired bootstrap intervals of the
    model minus each baseline (PR-AUC and ROC-AUC), and reliability tables.

    Returns a JSON-able dict: {"models": {name: metrics}, "paired": {baseline: {metric: interval}},
    "reliability": {name: rows}}.
    """
    scores = {MODEL: (model_probability, model_probability)}
    for name, scorer in BASELINES.items():
        raw = scorer(test)
        calibrate = BinnedCalibration.fit(scorer(train), y_train)
        scores[name] = (raw, calibrate(raw))
    models = {name: metric_row(y_test, raw, prob) for name, (raw, prob) in scores.items()}
    paired = {
        name: {"pr_auc": paired_bootstrap(y_test, model_probability, scores[name][0], average_precision,
                                          resamples, seed=seed).to_dict(),
               "roc_auc": paired_bootstrap(y_test, model_probability, scores[name][0], roc_auc,
                                           resamples, seed=seed).to_dict()}
        for name in BASELINES
    }
    reliability = {name: reliability_table(y_test, prob).to_dict("records") for name, (_, prob) in scores.items()}
    return {"primary": MODEL, "models": models, "paired": paired, "reliability": reliability}


@dataclass(frozen=True)
class ChurnGateDecision:
    """Whether the model may be promoted: its PR-AUC must beat the recency baseline's with the
    paired bootstrap interval of the difference entirely above zero."""

    passed: bool
    reason: str
    delta: float
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def churn_gate(evaluation: dict[str, Any], baseline: str = RECENCY, metric: str = "pr_auc") -> ChurnGateDecision:
    interval = evaluation["paired"][baseline][metric]
    delta, low, high = float(interval["delta"]), float(interval["low"]), float(interval["high"])
    passed = bool(low > 0)
    verdict = "beats" if passed else "does not clearly beat"
    reason = (f"{MODEL} {verdict} {baseline} on {metric}: delta {delta:+.4f}, "
              f"{interval['confidence']:.0%} paired interval [{low:+.4f}, {high:+.4f}]")
    return ChurnGateDecision(passed, reason, delta, low, high)


def headline(evaluation: dict[str, Any], names: Sequence[str] = ("roc_auc", "pr_auc", "brier")) -> dict[str, float]:
    """The model's headline test metrics (what the registry records with the version)."""
    row = evaluation["models"][evaluation["primary"]]
    return {name: float(row[name]) for name in names}
