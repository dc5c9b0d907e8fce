"""Feature tables on a hand-built timeline: every expected value is written out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.errors import FeatureTableError
from shoprec.features import names as N
from shoprec.features.tables import build_feature_tables, build_table_frames

from .conftest import AS_OF, T1, T2, T3, T5, T_U2, ts


def _row(table: pd.DataFrame, key: str, value: str, at: pd.Timestamp) -> dict:
    match = table[(table[key] == value) & (table[N.FEATURE_TIMESTAMP] == at)]
    assert len(match) == 1, f"expected one {key}={value} row at {at}, got {len(match)}"
    return match.iloc[0].to_dict()


def test_user_stats_rows_follow_the_timeline(timeline):
    events, items = timeline
    users = build_feature_tables(events, items, as_of=AS_OF).user_stats

    # u1 has rows at t1, t2, t3 (t3 and t4 share a second: one row), t5 and the snapshot AS_OF.
    assert list(users[users[S.USER_ID] == "u1"][N.FEATURE_TIMESTAMP]) == [T1, T2, T3, T5, AS_OF]
    assert users[N.FEATURE_TIMESTAMP].max() == AS_OF  # the event after AS_OF is left out

    at_t3 = _row(users, S.USER_ID, "u1", T3)
    expected_t3 = {
        # (Jan 13 10:00, Jan 20 10:00]: the view of B and the cart of C at t3
        "views_7d": 1, "carts_7d": 1, "purchases_7d": 0,
        # (Dec 21 10:00, Jan 20 10:00]: everything so far
        "views_30d": 2, "carts_30d": 1, "purchases_30d": 1,
        "views_all": 2, "carts_all": 1, "purchases_all": 1,
        "distinct_items": 3, "days_since_last_event": 0.0, "mean_price": 10.0,
        # toys 1 (t1), books 1 (t2: a tie keeps toys), books 2 (t3 B), toys 2 (t3 C: tie keeps books)
        "top_category": "books",
    }
    assert {k: at_t3[k] for k in expected_t3} == expected_t3

    at_snapshot = _row(users, S.USER_ID, "u1", AS_OF)
    expected_snapshot = {
        # (Feb 13 00:00, Feb 20 00:00] and (Jan 21 00:00, Feb 20 00:00]: only the t5 purchase
        "views_7d": 0, "carts_7d": 0, "purchases_7d": 1,
        "views_30d": 0, "carts_30d": 0, "purchases_30d": 1,
        "views_all": 2, "carts_all": 1, "purchases_all": 2,
        "distinct_items": 3, "mean_price": 15.0, "top_category": "toys",  # toys 3 at t5
    }
    assert {k: at_snapshot[k] for k in expected_snapshot} == expected_snapshot
    assert at_snapshot["days_since_last_event"] == pytest.approx(4 + 14 / 24)  # Feb 15 10:00 -> Feb 20

    u2 = _row(users, S.USER_ID, "u2", T_U2)
    assert (u2["views_all"], u2["distinct_items"], u2["top_category"]) == (1, 1, "toys")
    assert math.isnan(u2["mean_price"])  # no priced event: unknown, not zero


def test_item_stats_rows_follow_the_timeline(timeline):
    events, items = timeline
    stats = build_feature_tables(events, items, as_of=AS_OF).item_stats

    assert list(stats[stats[S.ITEM_ID] == "B"][N.FEATURE_TIMESTAMP]) == [T2, T3, AS_OF]
    b_t2 = _row(stats, S.ITEM_ID, "B", T2)
    assert (b_t2["events_all"], b_t2["purchase_share"], b_t2["price"], b_t2["category"]) == (1, 1.0, 10.0, "books")
    b_t3 = _row(stats, S.ITEM_ID, "B", T3)
    assert (b_t3["events_7d"], b_t3["events_all"], b_t3["users_all"], b_t3["purchase_share"]) == (1, 2, 1, 0.5)
    b_now = _row(stats, S.ITEM_ID, "B", AS_OF)
    assert (b_now["events_7d"], b_now["events_30d"], b_now["events_all"]) == (0, 0, 2)
    c_t3 = _row(stats, S.ITEM_ID, "C", T3)
    assert (c_t3["events_all"], c_t3["users_all"], c_t3["purchase_share"]) == (2, 2, 0.0)
    assert math.isnan(c_t3["price"])
    assert "D" not in set(stats[S.ITEM_ID])  # only bought after AS_OF


def test_purchase_share_is_null_in_a_single_type_log(timeline):
    events, items = timeline
    views_only = events.assign(**{S.EVENT_TYPE: S.VIEW})
    stats = build_feature_tables(views_only, items, as_of=AS_OF).item_stats
    assert stats[N.PURCHASE_SHARE].isna().all()


def test_recent_items_hold_the_last_n_in_order(timeline):
    events, items = timeline
    recent = build_feature_tables(events, items, as_of=AS_OF, max_len=2).user_recent_items
    u1 = recent[recent[S.USER_ID] == "u1"]
    assert list(u1[N.FEATURE_TIMESTAMP]) == [T1, T2, T3, T5, AS_OF]
    assert [list(v) for v in u1[N.RECENT_ITEMS]] == [["A"], ["A", "B"], ["B", "C"], ["C", "A"], ["C", "A"]]


def test_bad_input_is_named(timeline):
    events, items = timeline
    with pytest.raises(FeatureTableError, match=r"lacks column\(s\) \['timestamp'\]"):
        build_feature_tables(events.drop(columns=[S.TIMESTAMP]), items)
    with pytest.raises(FeatureTableError, match="no events at or before"):
        build_feature_tables(events, items, as_of="2000-01-01")


def test_a_selection_of_tables_is_built_as_the_whole_set(timeline):
    events, items = timeline
    whole = build_feature_tables(events, items, as_of=AS_OF)
    some, cutoff = build_table_frames(events, items, AS_OF, (N.ITEM_STATS, N.USER_STATS))
    assert list(some) == [N.ITEM_STATS, N.USER_STATS] and cutoff == whole.as_of == AS_OF
    for name in some:
        pd.testing.assert_frame_equal(some[name], whole.frame(name))
    with pytest.raises(FeatureTableError, match=r"no feature table named \['user_lists'\]"):
        build_table_frames(events, items, AS_OF, (N.USER_STATS, "user_lists"))


# A day of sessions, written out by hand. The minutes after 10:00 of each event and its session id.
_DAY = ts("2024-03-01 10:00")
_SESSIONS = [
    # user "ids": session ids on every event but one
    ("ids", "A", 0, "s1"),      # the first event ever: opens
    ("ids", "B", 10, "s1"),     # same id: continues
    ("ids", "C", 200, "s1"),    # same id, 3 h later: continues (the ids decide, not the gap)
    ("ids", "D", 201, "s2"),    # a new id a minute later: opens
    ("ids", "E", 202, None),    # no id: the gap decides (1 min): continues
    ("ids", "F", 240, "s2"),    # the event before has no id: the gap decides (38 min): opens
    ("ids", "G", 240, "s3"),    # same time, a new id: opens
    # user "gaps": no session id at all
    ("gaps", "A", 0, None),     # first: opens
    ("gaps", "B", 30, None),    # exactly 30 min: not more than the gap, continues
    ("gaps", "C", 61, None),    # 31 min: opens
    ("gaps", "D", 61, None),    # the same minute: continues
    ("gaps", "E", 90, None),    # 29 min: continues
]


def _session_events() -> pd.DataFrame:
    rows = [(user, item, S.VIEW, _DAY + pd.Timedelta(minutes=minute), session)
            for user, item, minute, session in _SESSIONS]
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP, S.SESSION_ID])


def _history(frame: pd.DataFrame, user: str) -> dict:
    return frame[frame[S.USER_ID] == user].iloc[0].to_dict()


def test_history_flags_where_each_item_opens_a_session():
    # The users' events interleaved, by time; F and G (the same minute) stay in file order.
    events = _session_events().sort_values(S.TIMESTAMP, kind="stable")
    history = build_feature_tables(events, max_len=2, history_len=10).user_history

    ids = _history(history, "ids")
    assert ids[N.HISTORY_ITEMS] == ["A", "B", "C", "D", "E", "F", "G"]
    assert ids[N.HISTORY_SESSION_STARTS] == [True, False, False, True, False, True, True]
    assert all(type(flag) is bool for flag in ids[N.HISTORY_SESSION_STARTS])
    assert ids[N.HISTORY_LAST_EVENT_NS] == (_DAY + pd.Timedelta(minutes=240)).value
    assert ids[N.HISTORY_LAST_SESSION] == "s3"
    gaps = _history(history, "gaps")
    assert gaps[N.HISTORY_ITEMS] == ["A", "B", "C", "D", "E"]
    assert gaps[N.HISTORY_SESSION_STARTS] == [True, False, True, False, False]
    assert gaps[N.HISTORY_LAST_SESSION] == ""  # no session id: empty text, not null
    assert history[N.HISTORY_LAST_EVENT_NS].dtype == "int64"

    # Cut to the newest 3, the oldest kept item keeps the flag its true predecessor gives it:
    # "ids"' E continues D's session, "gaps"' C opens one 31 min after B (neither is a first).
    cut = build_feature_tables(events, max_len=2, history_len=3).user_history
    assert _history(cut, "ids")[N.HISTORY_ITEMS] == ["E", "F", "G"]
    assert _history(cut, "ids")[N.HISTORY_SESSION_STARTS] == [False, True, True]
    assert _history(cut, "gaps")[N.HISTORY_ITEMS] == ["C", "D", "E"]
    assert _history(cut, "gaps")[N.HISTORY_SESSION_STARTS] == [True, False, False]
    assert _history(cut, "ids")[N.HISTORY_LAST_SESSION] == "s3"

    # Without the column every event goes by the gap: "ids"' C (3 h after B) opens, D (1 min) does not.
    bare = build_feature_tables(events.drop(columns=[S.SESSION_ID]), max_len=2, history_len=10).user_history
    assert _history(bare, "ids")[N.HISTORY_SESSION_STARTS] == [True, False, True, False, False, True, False]
    assert _history(bare, "ids")[N.HISTORY_LAST_SESSION] == ""


def test_history_flags_are_those_of_the_model_sequences():
    """The flags are `sequences.session_starts`' over the same log (the model's training input)."""
    from shoprec.sequences import FlatSequences, build_vocab, session_starts

    events = _session_events()
    seqs = FlatSequences.from_events(events, build_vocab(events), with_rows=True)
    opens = session_starts(events, seqs.rows, seqs.offsets)
    history = build_feature_tables(events, max_len=2, history_len=10).user_history
    for n, user in enumerate(seqs.users):
        want = opens[seqs.offsets[n]:seqs.offsets[n + 1]].tolist()
        assert _history(history, str(user))[N.HISTORY_SESSION_STARTS] == want, user
