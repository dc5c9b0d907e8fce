"""Materialization in bounded memory (DuckDB over the Parquet tables, record batches into the
online store) writes exactly what Feast's own `materialize` writes, for the whole history and
for a window, and records the interval in the registry as Feast does."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.features import names as N
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import _feast_materialize, apply_definitions, materialize
from shoprec.features.tables import build_feature_tables

pytestmark = pytest.mark.integration
VIEWS = (N.USER_STATS, N.ITEM_STATS, N.USER_RECENT_ITEMS, N.USER_HISTORY)


@pytest.fixture(scope="module")
def tables():
    data = limit_to_users(load_movielens_100k(), 30)
    return build_feature_tables(data.events, data.items, max_len=10)


def _store(tmp_path, name, tables):
    settings = FeatureStoreSettings(home=tmp_path / name)
    tables.write(settings.features_dir)
    return apply_definitions(settings), settings


def _online_rows(settings) -> dict[str, list[tuple]]:
    """Every row of the SQLite online store, per view, in key order (the serialized values)."""
    with sqlite3.connect(settings.features_dir / "online_store.db") as db:
        return {
            view: db.execute(
                f'SELECT entity_key, feature_name, value, event_ts FROM "{N.PROJECT}_{view}" '
                "ORDER BY entity_key, feature_name"
            ).fetchall()
            for view in VIEWS
        }


@pytest.mark.parametrize("window", ["all", "middle"])
def test_batched_materialization_writes_what_feast_writes(tmp_path, tables, window):
    start, end = None, None
    if window == "middle":  # a window that cuts through the history: its latest rows only
        stamps = tables.user_stats[N.FEATURE_TIMESTAMP].sort_values()
        start, end = stamps.iloc[len(stamps) // 3], stamps.iloc[2 * len(stamps) // 3]
    feast_store, feast_settings = _store(tmp_path, "feast", tables)
    begin = start.to_pydatetime() if start is not None else None
    finish = end.to_pydatetime() if end is not None else tables.as_of.to_pydatetime()
    feast_store.materialize(start_date=begin or datetime(1970, 1, 1, tzinfo=timezone.utc), end_date=finish)
    ours_store, ours_settings = _store(tmp_path, "ours", tables)
    summary = materialize(ours_store, ours_settings, end=end, start=start, batch_rows=7)  # many small batches

    want, got = _online_rows(feast_settings), _online_rows(ours_settings)
    # user_history is one row per user at as_of: a window ending before it holds none of it.
    snapshot_in_window = window == "all"
    assert all(bool(want[view]) == (view != N.USER_HISTORY or snapshot_in_window) for view in VIEWS)
    assert got == want
    assert sorted(summary.views) == sorted(VIEWS)
    for view in VIEWS:  # the registry knows the interval, as after `feast materialize`
        intervals = ours_store.registry.get_feature_view(view, ours_store.project).materialization_intervals
        assert [(a, b) for a, b in intervals] == [(summary.start, summary.end)]


def test_feast_fallback_pulls_the_latest_rows_only(tmp_path, tables):
    """A view whose table DuckDB cannot read here goes through Feast, told to pull the latest
    rows and write in batches: the same online rows again."""
    feast_store, feast_settings = _store(tmp_path, "feast", tables)
    feast_store.materialize(start_date=tables.as_of.to_pydatetime() - timedelta(days=10_000),
                            end_date=tables.as_of.to_pydatetime())
    ours_store, ours_settings = _store(tmp_path, "fallback", tables)
    before = ours_store.config.materialization_config
    for view in VIEWS:
        _feast_materialize(ours_store, view, tables.as_of.to_pydatetime() - timedelta(days=10_000),
                           tables.as_of.to_pydatetime(), batch_rows=7)
    assert ours_store.config.materialization_config == before  # the store's own setting is back
    assert _online_rows(ours_settings) == _online_rows(feast_settings)
