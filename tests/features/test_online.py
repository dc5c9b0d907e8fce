"""The online store, on SQLite and on a real Redis: online equals offline, pushes, unknown users."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.errors import FeatureStoreUnavailable
from shoprec.features import names as N
from shoprec.features.online import MISSING_FLAG, USER_DEFAULTS, online_user_features, push_events
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import apply_definitions, materialize
from shoprec.features.tables import build_feature_tables

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "redis"])
def settings(request, tmp_path) -> FeatureStoreSettings:
    if request.param == "redis":
        return FeatureStoreSettings(home=tmp_path, online_store="redis", redis=request.getfixturevalue("clean_redis"))
    return FeatureStoreSettings(home=tmp_path)


@pytest.fixture
def loaded(settings):
    """ML-100K, 40 users: tables built, applied and materialized into the online store."""
    data = limit_to_users(load_movielens_100k(), 40)
    tables = build_feature_tables(data.events, data.items, max_len=10, history_len=30)
    tables.write(settings.features_dir)
    store = apply_definitions(settings)
    summary = materialize(store, settings)
    assert summary.end == tables.as_of
    return store, tables


def test_online_values_equal_the_latest_offline_values(settings, loaded):
    store, tables = loaded
    offline_stats = pd.read_parquet(settings.features_dir / "user_stats.parquet")
    offline_recent = pd.read_parquet(settings.features_dir / "user_recent_items.parquet")
    users = sorted(offline_stats[S.USER_ID].unique())[::4]  # 10 sampled users
    online = online_user_features(store, users, settings=settings).set_index(S.USER_ID)

    assert not online[MISSING_FLAG].any()
    for user in users:
        stats = offline_stats[offline_stats[S.USER_ID] == user].sort_values(N.FEATURE_TIMESTAMP).iloc[-1]
        recent = offline_recent[offline_recent[S.USER_ID] == user].sort_values(N.FEATURE_TIMESTAMP).iloc[-1]
        assert stats[N.FEATURE_TIMESTAMP] == tables.as_of  # the latest row is the snapshot
        for name in N.USER_STATS_FEATURES:
            want, got = stats[name], online.loc[user, name]
            if isinstance(want, float) and math.isnan(want):
                assert isinstance(got, float) and math.isnan(got), (user, name, got)
            else:
                assert got == pytest.approx(want) if isinstance(want, float) else got == want, (user, name)
        assert online.loc[user, N.RECENT_ITEMS] == list(recent[N.RECENT_ITEMS])
        assert len(online.loc[user, N.RECENT_ITEMS]) <= 10


def test_a_pushed_event_shows_up_in_the_next_read(settings, loaded):
    store, _ = loaded
    user = "1"
    before = online_user_features(store, [user], settings=settings).iloc[0]
    assert len(before[N.RECENT_ITEMS]) == 10 and len(before[N.HISTORY_ITEMS]) == 30
    assert before[N.HISTORY_ITEMS][-10:] == before[N.RECENT_ITEMS]  # the window is the history's tail
    now = pd.Timestamp.now(tz="UTC")
    pushed = pd.DataFrame(
        {S.USER_ID: [user, user, "brand-new"], S.ITEM_ID: ["9002", "9001", "77"],
         S.TIMESTAMP: [now, now - pd.Timedelta(seconds=5), now]}
    )
    summary = push_events(store, pushed, settings)
    assert (summary.users, summary.events) == (2, 3)

    after = online_user_features(store, [user, "brand-new"], settings=settings).set_index(S.USER_ID)
    assert after.loc[user, N.RECENT_ITEMS] == (before[N.RECENT_ITEMS] + ["9001", "9002"])[-10:]  # time order
    assert after.loc[user, N.HISTORY_ITEMS] == (before[N.HISTORY_ITEMS] + ["9001", "9002"])[-30:]
    assert summary.history_items[user] == after.loc[user, N.HISTORY_ITEMS]
    assert after.loc["brand-new", N.RECENT_ITEMS] == after.loc["brand-new", N.HISTORY_ITEMS] == ["77"]
    assert not after.loc["brand-new", MISSING_FLAG]  # known now, through the push alone
    assert after.loc["brand-new", "views_all"] == 0  # its stats still take the defaults


def test_an_unknown_user_gets_defaults_and_the_missing_flag(settings, loaded):
    store, _ = loaded
    got = online_user_features(store, ["1", "no-such-user"], settings=settings).set_index(S.USER_ID)
    assert not got.loc["1", MISSING_FLAG]
    assert got.loc["no-such-user", MISSING_FLAG]
    for name, default in USER_DEFAULTS.items():
        value = got.loc["no-such-user", name]
        assert (math.isnan(value) and math.isnan(default)) if isinstance(default, float) and math.isnan(default) \
            else value == default, name


def test_redis_down_is_a_named_error(tmp_path, timeline):
    events, items = timeline
    settings = FeatureStoreSettings(home=tmp_path, online_store="redis", redis="127.0.0.1:1")
    build_feature_tables(events, items).write(settings.features_dir)
    with pytest.raises(FeatureStoreUnavailable, match=r"online store unavailable \(online=redis at 127.0.0.1:1"):
        store = apply_definitions(settings)
        online_user_features(store, ["u1"], settings=settings)


def test_a_redis_that_never_answers_times_out_instead_of_holding_the_reader(tmp_path, timeline):
    """A port that accepts connections and never replies (a hung Redis): the read fails with
    the named error after the socket timeout, so no thread waits forever."""
    import socket
    import time

    from shoprec.features.settings import redis_connection_string

    assert redis_connection_string("h:1,socket_timeout=5") == "h:1,socket_timeout=5,socket_connect_timeout=1,retry=null"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    events, items = timeline
    try:
        settings = FeatureStoreSettings(home=tmp_path, online_store="redis", redis=f"127.0.0.1:{port}")
        build_feature_tables(events, items).write(settings.features_dir)
        store = apply_definitions(settings)
        began = time.monotonic()
        with pytest.raises(FeatureStoreUnavailable, match="online store unavailable"):
            online_user_features(store, ["u1"], settings=settings)
        # Bounded: 1 s socket timeouts and one immediate retry (about 2 s), not forever.
        assert time.monotonic() - began < 60
    finally:
        listener.close()
