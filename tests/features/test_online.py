"""The online store, on SQLite and on a real Redis: online equals offline, pushes, unknown users."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.errors import FeatureStoreUnavailable
from shoprec.features import names as N
from shoprec.features.online import (
    MISSING_FLAG, USER_DEFAULTS, online_user_features, push_events, user_feature_refs,
)
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import apply_definitions, materialize
from shoprec.features.tables import build_feature_tables

from .conftest import AFTER, AS_OF

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
    # The service's features and the last-event fields pushes read (not in the service).
    refs = user_feature_refs(store) + [f"{N.USER_HISTORY}:{name}" for name in N.HISTORY_LAST_FEATURES]
    got = online_user_features(store, ["1", "no-such-user"], refs=refs, settings=settings).set_index(S.USER_ID)
    assert not got.loc["1", MISSING_FLAG]
    assert got.loc["no-such-user", MISSING_FLAG]
    assert set(USER_DEFAULTS) == set(got.columns) - {MISSING_FLAG}  # a default for every feature read
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


# --- session flags ------------------------------------------------------------------------------

_DAY = pd.Timestamp("2024-03-01 10:00", tz="UTC")
_HISTORY_REFS = [f"{N.USER_HISTORY}:{name}" for name in
                 (N.HISTORY_ITEMS, N.HISTORY_SESSION_STARTS, N.HISTORY_LAST_EVENT_NS, N.HISTORY_LAST_SESSION)]


def _at(minutes: float) -> pd.Timestamp:
    return _DAY + pd.Timedelta(minutes=minutes)


def _events(rows: list[tuple]) -> pd.DataFrame:
    """(user, item, minutes after _DAY, session id or None) rows as events."""
    return pd.DataFrame([(u, i, S.VIEW, _at(m), s) for u, i, m, s in rows],
                        columns=[S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP, S.SESSION_ID])


@pytest.fixture
def sessions(settings):
    """Three users with sessions, built with history_len 4 as of minute 40 (the last event),
    applied and materialized. Pushes come later than that: Redis keeps a newer row over a push."""
    events = _events([
        ("a", "A", 0, "s1"), ("a", "B", 5, "s1"), ("a", "C", 30, "s2"),  # opens, continues, a new id
        ("b", "A", 0, None), ("b", "B", 40, None),  # no ids: 40 minutes apart, two sessions
        # five events a minute apart: the oldest kept of the newest 4 continues the session
        *[("c", item, m, None) for m, item in enumerate("PQRST")],
    ])
    build_feature_tables(events, max_len=2, history_len=4).write(settings.features_dir)
    store = apply_definitions(settings)
    materialize(store, settings)
    return store


def _history(store, settings, users: list[str]) -> pd.DataFrame:
    return online_user_features(store, users, refs=_HISTORY_REFS, settings=settings).set_index(S.USER_ID)


def test_materialized_history_flags_are_bools_online(settings, sessions):
    got = _history(sessions, settings, ["a", "b", "c", "nobody"])
    assert got.loc["a", N.HISTORY_SESSION_STARTS] == [True, False, True]
    assert got.loc["b", N.HISTORY_SESSION_STARTS] == [True, True]
    assert got.loc["c", N.HISTORY_ITEMS] == ["Q", "R", "S", "T"]
    assert got.loc["c", N.HISTORY_SESSION_STARTS] == [False, False, False, False]
    assert all(type(flag) is bool for flags in got[N.HISTORY_SESSION_STARTS] for flag in flags)
    assert (got.loc["a", N.HISTORY_LAST_EVENT_NS], got.loc["a", N.HISTORY_LAST_SESSION]) == (_at(30).value, "s2")
    assert (got.loc["b", N.HISTORY_LAST_EVENT_NS], got.loc["b", N.HISTORY_LAST_SESSION]) == (_at(40).value, "")
    nobody = got.loc["nobody"]
    assert nobody[MISSING_FLAG] and nobody[N.HISTORY_SESSION_STARTS] == []
    assert (nobody[N.HISTORY_LAST_EVENT_NS], nobody[N.HISTORY_LAST_SESSION]) == (0, "")
    # The service carries the flags (serving reads them), not the last-event fields.
    service = online_user_features(sessions, ["a"], settings=settings)
    assert service[N.HISTORY_SESSION_STARTS][0] == [True, False, True]
    assert N.HISTORY_LAST_EVENT_NS not in service and N.HISTORY_LAST_SESSION not in service


def test_pushed_events_open_sessions_by_id_and_by_gap(settings, sessions):
    pushed = _events([
        ("b", "W", 100, None),  # (given first, pushed in time order) 40 minutes after Z: opens
        ("a", "X", 70, "s2"),   # the id on record, 40 minutes on: the id decides, continues
        ("a", "Y", 71, "s3"),   # a new id a minute later: opens
        ("b", "Z", 60, None),   # no id, 20 minutes after the 40th on record: continues
        ("new", "N", 50, "s9"),  # a user without history: the first event opens
    ])
    summary = push_events(sessions, pushed, settings)
    got = _history(sessions, settings, ["a", "b", "new"])
    # Cut with the items to history_len 4: a's A and its opening flag leave together.
    assert got.loc["a", N.HISTORY_ITEMS] == ["B", "C", "X", "Y"]
    assert got.loc["a", N.HISTORY_SESSION_STARTS] == [False, True, False, True]
    assert got.loc["b", N.HISTORY_ITEMS] == ["A", "B", "Z", "W"]
    assert got.loc["b", N.HISTORY_SESSION_STARTS] == [True, True, False, True]
    assert got.loc["new", N.HISTORY_SESSION_STARTS] == [True]
    assert summary.history_session_starts == {user: got.loc[user, N.HISTORY_SESSION_STARTS]
                                              for user in ("a", "b", "new")}
    assert summary.history_items["a"] == got.loc["a", N.HISTORY_ITEMS]
    last = {user: (got.loc[user, N.HISTORY_LAST_EVENT_NS], got.loc[user, N.HISTORY_LAST_SESSION]) for user in got.index}
    assert last == {"a": (_at(71).value, "s3"), "b": (_at(100).value, ""), "new": (_at(50).value, "s9")}

    # A second push goes on from the last events the first recorded.
    again = push_events(sessions, _events([
        ("a", "V", 72, "s3"),     # the id the last push recorded: continues
        ("b", "U", 101, "s5"),    # an id after an event without one: the gap decides (1 minute)
        ("new", "M", 100, None),  # no id, 50 minutes after its pushed event: opens
    ]), settings)
    assert again.history_session_starts == {"a": [True, False, True, False], "b": [True, False, True, False],
                                            "new": [True, True]}
    got = _history(sessions, settings, ["a", "b", "new"])
    assert got.loc["b", N.HISTORY_ITEMS] == ["B", "Z", "W", "U"]
    assert got.loc["b", N.HISTORY_SESSION_STARTS] == [True, False, True, False]
    assert got.loc["b", N.HISTORY_LAST_SESSION] == "s5"
    assert got.loc["new", N.HISTORY_SESSION_STARTS] == [True, True]


def test_pushed_events_without_session_ids_go_by_the_gap(settings, sessions):
    pushed = pd.DataFrame({S.USER_ID: ["a", "a", "c"], S.ITEM_ID: ["X", "Y", "Z"],
                           S.TIMESTAMP: [_at(60), _at(90) + pd.Timedelta(microseconds=1), _at(41)]})
    summary = push_events(sessions, pushed, settings)
    # a: X 30 minutes after its last event (s2 at 30): not more than the gap, continues; Y 30
    # minutes and 1 µs after X: opens. c: 37 minutes after its last event: opens.
    assert summary.history_session_starts == {"a": [False, True, False, True], "c": [False, False, False, True]}
    got = _history(sessions, settings, ["a", "c"])
    assert got.loc["a", N.HISTORY_LAST_SESSION] == "" and got.loc["c", N.HISTORY_ITEMS] == ["R", "S", "T", "Z"]
    assert got.loc["a", N.HISTORY_SESSION_STARTS] == summary.history_session_starts["a"]


def test_a_push_to_a_history_view_without_the_session_fields_pushes_the_items(tmp_path, timeline):
    """A repo applied before the session fields: its user_history holds the items alone, and a
    push (with session ids) writes those as before."""
    import shutil

    from shoprec.features.settings import default_repo_dir

    repo = tmp_path / "old_repo"
    shutil.copytree(default_repo_dir(), repo, ignore=shutil.ignore_patterns("__pycache__"))
    definitions = repo / "shoprec_features.py"
    text = definitions.read_text()
    for new_part, old_part in [
        ("        Field(name=N.HISTORY_SESSION_STARTS, dtype=Array(Bool)),\n"
         "        Field(name=N.HISTORY_LAST_EVENT_NS, dtype=Int64),\n"
         "        Field(name=N.HISTORY_LAST_SESSION, dtype=String),\n", ""),
        ("user_history_fv[[N.HISTORY_ITEMS, N.HISTORY_SESSION_STARTS]]", "user_history_fv"),
    ]:
        assert text.count(new_part) == 1, new_part
        text = text.replace(new_part, old_part)
    definitions.write_text(text)
    settings = FeatureStoreSettings(home=tmp_path / "home", repo=repo)
    events, items = timeline
    build_feature_tables(events, items, as_of=AS_OF).write(settings.features_dir)
    store = apply_definitions(settings)
    assert [f.name for f in store.get_feature_view(N.USER_HISTORY).features] == [N.HISTORY_ITEMS]
    materialize(store, settings)

    pushed = pd.DataFrame({S.USER_ID: ["u1", "u9"], S.ITEM_ID: ["Z", "Y"], S.TIMESTAMP: [AFTER, AFTER],
                           S.SESSION_ID: ["s1", None]})
    summary = push_events(store, pushed, settings)
    assert summary.history_items == {"u1": ["A", "B", "B", "C", "A", "Z"], "u9": ["Y"]}
    assert summary.history_session_starts == {}
    got = online_user_features(store, ["u1", "u9"], settings=settings).set_index(S.USER_ID)
    assert got.loc["u1", N.HISTORY_ITEMS] == ["A", "B", "B", "C", "A", "Z"]
    assert got.loc["u9", N.HISTORY_ITEMS] == ["Y"]
    assert N.HISTORY_SESSION_STARTS not in got


def test_a_blank_pushed_session_id_is_none_as_validation_reads_it(settings, sessions):
    # "" or spaces after an event without an id: no id on either side, so the gap decides
    # (as `history_last_session` records a missing id as ""), not a change of id.
    summary = push_events(sessions, _events([("b", "W", 61, ""), ("b", "V", 62, "  ")]), settings)
    assert summary.history_session_starts["b"][-2:] == [False, False]
    assert _history(sessions, settings, ["b"]).loc["b", N.HISTORY_LAST_SESSION] == ""
