"""Loaders read the real packaged data sets into the canonical model."""

from __future__ import annotations

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.data.loaders import (
    INSTACART_ANCHOR,
    load_dataset,
    load_event_files,
    load_instacart,
    load_movielens_100k,
)
from shoprec.data.validation import validate
from shoprec.errors import DataSourceError


@pytest.fixture(scope="module")
def instacart() -> EventData:
    return load_instacart()


@pytest.fixture(scope="module")
def movielens() -> EventData:
    return load_movielens_100k()


def test_instacart_counts_and_schema(instacart: EventData) -> None:
    events = instacart.events
    assert len(events) == 150_000  # every row of the packaged sample, one event per basket line
    assert events[S.USER_ID].nunique() == 593
    assert events[S.SESSION_ID].nunique() == 15_183  # one session per order
    assert events[S.ITEM_ID].nunique() == 14_190
    assert set(events[S.EVENT_TYPE]) == {S.PURCHASE}
    assert str(events[S.TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert list(events.columns[:7]) == list(S.EVENT_COLUMNS)
    assert instacart.items is not None and set(instacart.items[S.ITEM_ID]) == set(events[S.ITEM_ID])
    assert instacart.info["repeat_purchase"] is True


def test_instacart_times_follow_orders_and_baskets(instacart: EventData) -> None:
    events = instacart.events
    assert events[S.TIMESTAMP].min() >= INSTACART_ANCHOR
    # Each user's events move forward in time, and a basket keeps its add-to-cart order.
    assert events.groupby(S.USER_ID)[S.TIMESTAMP].apply(lambda t: t.is_monotonic_increasing).all()
    first_user = events[events[S.USER_ID] == "1"]
    first_order = first_user[first_user[S.SESSION_ID] == "2539329"]
    assert list(first_order[S.ITEM_ID]) == ["196", "14084", "12427", "26088", "26405"]
    # User 1's first order is on order_dow 2 (Tuesday) at 08:00 of the anchor week.
    assert first_order[S.TIMESTAMP].iloc[0] == pd.Timestamp("2017-01-03T08:00:00Z")
    # Order 2 came 15 days later at 07:00 (days_since_prior_order=15, order_hour_of_day=7).
    second = first_user[first_user[S.SESSION_ID] == "2398795"][S.TIMESTAMP].iloc[0]
    assert second == pd.Timestamp("2017-01-18T07:00:00Z")


def test_movielens_counts_and_attributes(movielens: EventData) -> None:
    events = movielens.events
    assert len(events) == 100_000
    assert events[S.USER_ID].nunique() == 943
    assert events[S.ITEM_ID].nunique() == 1_682
    assert set(events[S.EVENT_TYPE]) == {S.VIEW}
    assert events["rating"].between(1, 5).all()
    items = movielens.items.set_index(S.ITEM_ID)
    assert items.loc["1", S.TITLE] == "Toy Story"
    assert items.loc["1", S.CATEGORY] == "Animation"
    assert items.loc["1", "genres"] == "Animation|Children's|Comedy"
    users = movielens.users.set_index(S.USER_ID)
    assert users.loc["1", "age"] == 24 and users.loc["1", "occupation"] == "technician"
    assert movielens.info["repeat_purchase"] is False


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_user_file_round_trips(tmp_path, good_events: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"events{suffix}"
    items = pd.DataFrame({S.ITEM_ID: ["i1", "i2", "i3"], S.TITLE: ["a", "b", "c"]})
    items_path = tmp_path / f"items{suffix}"
    if suffix == ".csv":
        good_events.to_csv(path, index=False)
        items.to_csv(items_path, index=False)
    else:
        good_events.to_parquet(path)
        items.to_parquet(items_path)

    data = load_dataset(str(path), str(items_path))
    outcome = validate(data)

    assert outcome.report.passed
    clean = outcome.clean.events
    pd.testing.assert_frame_equal(clean[good_events.columns], good_events)
    assert list(outcome.clean.items[S.ITEM_ID]) == ["i1", "i2", "i3"]


def test_integer_ids_in_a_file_become_text(tmp_path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({S.USER_ID: [7, 8], S.ITEM_ID: [70, 80], S.EVENT_TYPE: ["view", "view"],
                  S.TIMESTAMP: [1_700_000_000, 1_700_000_100]}).to_parquet(path)
    outcome = validate(load_event_files(path))
    assert outcome.report.passed
    assert list(outcome.clean.events[S.ITEM_ID]) == ["70", "80"]
    assert outcome.clean.events[S.TIMESTAMP].iloc[0] == pd.Timestamp("2023-11-14T22:13:20Z")


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(DataSourceError, match="events file not found: .*nope.csv"):
        load_dataset(str(tmp_path / "nope.csv"))


def test_limit_users_keeps_a_real_slice() -> None:
    data = load_dataset("ml-100k", limit_users=10)
    assert data.events[S.USER_ID].nunique() == 10
    assert len(data.users) == 10
