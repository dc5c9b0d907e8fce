"""Churn labels and features on a hand-made timeline, through a real Feast store (DuckDB offline
store, historical retrieval): features are as of the snapshot, a later purchase never leaks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.churn.features import churn_feature_tables, historical_churn_features, publish_churn_store
from shoprec.churn.labels import CHURNED, churn_labels, snapshot_times
from shoprec.errors import DataSourceError
from shoprec.features.settings import FeatureStoreSettings

DAY0 = pd.Timestamp("2024-01-01", tz="UTC")
SNAPSHOT = DAY0 + pd.Timedelta(days=20)


def event(user: str, day: float, kind: str = S.PURCHASE, item: str = "i1") -> dict:
    return {S.USER_ID: user, S.ITEM_ID: item, S.EVENT_TYPE: kind, S.TIMESTAMP: DAY0 + pd.Timedelta(days=day)}


def timeline(with_return: bool) -> pd.DataFrame:
    rows = [
        event("u1", 0), event("u1", 5, S.VIEW, "i2"), event("u1", 10, item="i2"),
        event("u2", 2),                       # never back: churned
        event("u3", 22),                      # first seen after the snapshot: not labelled
        event("u4", 15, S.VIEW), event("u4", 60),  # back only after the 30-day window: churned
    ]
    if with_return:
        rows.append(event("u1", 25, item="i3"))  # inside (s, s+30]: u1 stayed
    return pd.DataFrame(rows)


def features_at_snapshot(events: pd.DataFrame, home: Path) -> pd.DataFrame:
    labels = churn_labels(events, [SNAPSHOT], horizon_days=30)
    store = publish_churn_store(churn_feature_tables(events, None, [SNAPSHOT]), FeatureStoreSettings(home=home))
    return historical_churn_features(store, labels).set_index(S.USER_ID)


@pytest.mark.integration
def test_labels_and_features_are_as_of_the_snapshot(tmp_path: Path) -> None:
    joined = features_at_snapshot(timeline(with_return=True), tmp_path / "a")
    assert sorted(joined.index) == ["u1", "u2", "u4"]  # u3 had no activity by the snapshot
    assert joined[CHURNED].to_dict() == {"u1": 0, "u2": 1, "u4": 1}
    u1 = joined.loc["u1"]
    # As of day 20: two purchases and a view, the last on day 10; not the day-25 purchase.
    assert (u1["purchases_all"], u1["views_all"], u1["distinct_items"]) == (2, 1, 2)
    assert u1["days_since_last_event"] == pytest.approx(10.0)
    # Window counts are current at the snapshot, not at the last event: (day 13, day 20] is empty.
    assert (u1["purchases_7d"], u1["purchases_30d"]) == (0, 2)
    assert joined.loc["u2", "days_since_last_event"] == pytest.approx(18.0)
    assert joined.loc["u4", "purchases_all"] == 0  # the day-60 purchase is in the future


@pytest.mark.integration
def test_a_purchase_after_the_snapshot_changes_the_label_never_the_features(tmp_path: Path) -> None:
    stayed = features_at_snapshot(timeline(with_return=True), tmp_path / "a")
    left = features_at_snapshot(timeline(with_return=False), tmp_path / "b")
    features = [c for c in stayed.columns if c not in (S.TIMESTAMP, CHURNED)]
    pd.testing.assert_frame_equal(stayed.loc[["u1"], features], left.loc[["u1"], features])
    assert (stayed.loc["u1", CHURNED], left.loc["u1", CHURNED]) == (0, 1)


def test_snapshots_leave_room_for_the_label_window() -> None:
    events = timeline(with_return=True)  # day 0 .. day 60
    found = snapshot_times(events, horizon_days=30, count=5, step_days=10)
    assert found[-1] == DAY0 + pd.Timedelta(days=30)
    assert found == [DAY0 + pd.Timedelta(days=d) for d in (0, 10, 20, 30)]  # none before the first event
    with pytest.raises(DataSourceError, match="not known yet"):
        churn_labels(events, [DAY0 + pd.Timedelta(days=40)], horizon_days=30)
