"""Churn metrics against hand-computed values, the gate's rule, and the time split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.churn.evaluate import BinnedCalibration, churn_gate
from shoprec.churn.metrics import average_precision, brier, paired_bootstrap, reliability_table, roc_auc
from shoprec.churn.train import split_by_time, split_users


def test_roc_auc_and_average_precision_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4
    assert roc_auc(y, s) == pytest.approx(0.75)
    # ranked: 0.8 (1) P=1 R=.5; 0.4 (0); 0.35 (1) P=2/3 R=1 -> .5*1 + .5*2/3
    assert average_precision(y, s) == pytest.approx(0.5 + 1 / 3)


def test_ties_count_as_one_threshold() -> None:
    y = np.array([0, 1])
    s = np.array([0.5, 0.5])
    assert roc_auc(y, s) == pytest.approx(0.5)
    assert average_precision(y, s) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_brier_and_reliability() -> None:
    assert brier(np.array([0, 1]), np.array([0.1, 0.8])) == pytest.approx((0.01 + 0.04) / 2)
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.12, 0.95, 0.91])
    table = reliability_table(y, p)
    assert table["rows"].sum() == 5
    top = table[table["bin"] == "0.9-1.0"].iloc[0]
    assert top["rows"] == 2 and top["observed"] == 1.0 and top["predicted"] == pytest.approx(0.93)
    low = table[table["bin"] == "0.1-0.2"].iloc[0]
    assert low["rows"] == 2 and low["observed"] == 0.5


def test_paired_bootstrap_sees_a_real_difference_and_none_between_equals() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    good = y + rng.normal(0, 0.5, 300)
    noise = rng.normal(0, 1, 300)
    better = paired_bootstrap(y, good, noise, average_precision, resamples=300)
    assert better.low > 0 and better.delta > 0
    same = paired_bootstrap(y, good, good, average_precision, resamples=100)
    assert same.delta == 0 and same.low == 0 and same.high == 0


def test_gate_needs_the_whole_interval_above_zero() -> None:
    def evaluation(low: float, high: float) -> dict:
        return {"paired": {"recency": {"pr_auc": {"delta": (low + high) / 2, "low": low, "high": high,
                                                   "confidence": 0.95, "resamples": 10}}}}

    assert churn_gate(evaluation(0.01, 0.05)).passed
    assert not churn_gate(evaluation(-0.001, 0.05)).passed
    assert "does not clearly beat" in churn_gate(evaluation(-0.02, -0.01)).reason


def test_binned_calibration_maps_scores_to_training_rates() -> None:
    score = np.arange(100, dtype=float)
    y = (score >= 50).astype(float)
    calibrate = BinnedCalibration.fit(score, y, bins=4)
    assert calibrate(np.array([0.0, 99.0])).tolist() == [0.0, 1.0]


def test_time_split_keeps_training_label_windows_out_of_the_test_period() -> None:
    times = pd.to_datetime(["2024-01-01", "2024-01-20", "2024-02-01", "2024-03-02"], utc=True)
    frame = pd.DataFrame({S.USER_ID: ["a", "a", "a", "a"], S.TIMESTAMP: times, "churned": [0, 1, 0, 1]})
    train, test = split_by_time(frame, horizon_days=30)
    assert list(test[S.TIMESTAMP]) == [times[3]]
    # 2024-02-01 + 30 days = 2024-03-02 <= test: kept; all earlier ones too
    assert len(train) == 3
    train, test = split_by_time(frame.iloc[:3], horizon_days=30)  # test 02-01: only 01-01 closes by then
    assert list(train[S.TIMESTAMP]) == [times[0]]


def test_validation_users_are_held_out_whole() -> None:
    frame = pd.DataFrame({S.USER_ID: [f"u{i % 50}" for i in range(200)], "x": range(200)})
    fit, valid = split_users(frame, 0.2)
    assert set(fit[S.USER_ID]).isdisjoint(valid[S.USER_ID])
    assert 0 < valid[S.USER_ID].nunique() < 50
