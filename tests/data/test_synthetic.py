"""The synthetic shop log: seeded, the size asked for, shaped like a shop, valid for the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.gate import run_gate
from shoprec.data.loaders import load_dataset
from shoprec.data.report import ReportPaths
from shoprec.data.synthetic import (
    EVENT_SCHEMA, ShopShape, format_count, parse_count, write_shop_log,
)

ROWS = 30_000


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory):
    return write_shop_log(tmp_path_factory.mktemp("shop"), ROWS, seed=7)


@pytest.fixture(scope="module")
def events(log) -> pd.DataFrame:
    return pd.read_parquet(log.events_path)


def test_the_rows_and_scale_asked_for(log, events: pd.DataFrame) -> None:
    items = pd.read_parquet(log.items_path)
    assert log.rows == len(events) == ROWS
    assert log.shape == ShopShape.scaled(ROWS, seed=7)
    assert events[S.USER_ID].nunique() == log.shape.users == ROWS // 50
    assert len(items) == items[S.ITEM_ID].nunique() == log.shape.items == ROWS // 100
    assert set(events[S.ITEM_ID]) <= set(items[S.ITEM_ID])
    assert events[S.SESSION_ID].nunique() == log.sessions
    # The measurement: 5M events -> about 100k users and 50k items.
    big = ShopShape.scaled(5_000_000)
    assert (big.users, big.items) == (100_000, 50_000)


def test_columns_and_types(log, events: pd.DataFrame) -> None:
    assert pq.read_schema(log.events_path).remove_metadata() == EVENT_SCHEMA
    assert list(events.columns) == list(S.EVENT_COLUMNS)
    for column in (S.USER_ID, S.ITEM_ID, S.SESSION_ID):
        assert all(isinstance(v, str) for v in events[column].iloc[:100])
    assert set(events[S.EVENT_TYPE]) == set(S.EVENT_TYPES)
    assert str(events[S.TIMESTAMP].dt.tz) == "UTC"
    assert (events[S.PRICE] > 0).all() and (events[S.QUANTITY] >= 1).all()
    items = pd.read_parquet(log.items_path)
    assert list(items.columns) == [S.ITEM_ID, S.TITLE, S.CATEGORY, S.PRICE]
    assert items[[S.TITLE, S.CATEGORY]].notna().all().all()


def test_passes_the_validation_gate_with_nothing_quarantined(log, tmp_path: Path) -> None:
    data = load_dataset(str(log.events_path), str(log.items_path))  # as `shoprec run --dataset`
    report = ReportPaths(tmp_path / "report.json", tmp_path / "report.md")
    outcome = run_gate(data, ValidationConfig(), tmp_path / "clean", tmp_path / "quarantine", report)
    assert outcome.report.passed
    assert outcome.report.rows_clean == ROWS and not any(outcome.report.quarantined.values())


def test_same_seed_same_log_other_seed_other_log(log, events: pd.DataFrame, tmp_path: Path) -> None:
    again = write_shop_log(tmp_path / "again", ROWS, seed=7)
    assert again.events_path.read_bytes() == log.events_path.read_bytes()
    assert again.items_path.read_bytes() == log.items_path.read_bytes()
    other = pd.read_parquet(write_shop_log(tmp_path / "other", ROWS, seed=8).events_path)
    assert len(other) == ROWS and not other[S.ITEM_ID].equals(events[S.ITEM_ID])


def test_chunked_writing_gives_the_same_data_as_one_chunk(tmp_path: Path) -> None:
    rows = 200_000  # several generation blocks
    whole = write_shop_log(tmp_path / "whole", rows, seed=3, chunk_rows=10**9)
    chunked = write_shop_log(tmp_path / "chunked", rows, seed=3, chunk_rows=30_000)
    assert whole.chunks == 1 and chunked.chunks == 7
    assert pq.ParquetFile(chunked.events_path).metadata.num_row_groups == 7
    pd.testing.assert_frame_equal(pd.read_parquet(whole.events_path), pd.read_parquet(chunked.events_path))
    assert chunked.sessions == whole.sessions


def test_item_popularity_is_zipf_like_and_users_heavy_tailed(events: pd.DataFrame, log) -> None:
    per_item = events[S.ITEM_ID].value_counts()
    top = per_item.iloc[: max(1, log.shape.items // 100)].sum() / len(events)
    assert top > 0.25  # the top 1% of items hold a large share of all events
    per_user = events[S.USER_ID].value_counts()
    assert per_user.max() > 10 * per_user.median()
    assert per_user.min() >= 1


def test_funnel_sessions_and_time(events: pd.DataFrame) -> None:
    shares = events[S.EVENT_TYPE].value_counts(normalize=True)
    assert shares[S.VIEW] > 0.7 and shares[S.VIEW] > shares[S.CART] > shares[S.PURCHASE] > 0.01
    # A cart or a purchase is of the item of the event just before it, in the same session.
    previous = events.groupby(S.SESSION_ID, sort=False)[S.ITEM_ID].shift()
    later = events[S.EVENT_TYPE] != S.VIEW
    assert (events.loc[later, S.ITEM_ID] == previous[later]).all()
    # Sessions open with a view and last minutes, not days; a user's events are in time order.
    first = events.groupby(S.SESSION_ID, sort=False)[S.EVENT_TYPE].first()
    assert (first == S.VIEW).all()
    spans = events.groupby(S.SESSION_ID)[S.TIMESTAMP].agg(lambda t: t.max() - t.min())
    assert spans.median() < pd.Timedelta(minutes=30)
    assert events.groupby(S.USER_ID, sort=False)[S.TIMESTAMP].is_monotonic_increasing.all()
    stamps = events[S.TIMESTAMP]
    assert stamps.min() >= pd.Timestamp("2025-01-01", tz="UTC")
    assert stamps.max() - stamps.min() > pd.Timedelta(days=300)
    assert stamps.max() < pd.Timestamp("2026-01-02", tz="UTC")


def test_prices_and_categories_belong_to_items(log, events: pd.DataFrame) -> None:
    items = pd.read_parquet(log.items_path).set_index(S.ITEM_ID)
    np.testing.assert_array_equal(events[S.PRICE].to_numpy(), items.loc[events[S.ITEM_ID], S.PRICE].to_numpy())
    assert items[S.CATEGORY].nunique() == log.shape.categories
    counts = items[S.CATEGORY].value_counts()
    assert counts.iloc[0] > 1.5 * counts.median()  # category sizes are skewed too


def test_counts_with_suffixes() -> None:
    assert [parse_count(t) for t in ("30000", "30k", "50K", "1M", "1.5M", "2G", "1_000")] == [
        30_000, 30_000, 50_000, 1_000_000, 1_500_000, 2_000_000_000, 1_000]
    assert [format_count(n) for n in (30_000, 5_000_000, 1_500_000, 1234)] == ["30k", "5M", "1.5M", "1234"]
    with pytest.raises(ValueError):
        parse_count("lots")


def test_shape_is_checked() -> None:
    with pytest.raises(ValueError):
        ShopShape.scaled(0)
    with pytest.raises(ValueError):
        ShopShape.scaled(100, users=200)
