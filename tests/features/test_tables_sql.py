"""The DuckDB feature tables against the pandas implementation they replaced (the oracle):
row for row, the same columns, dtypes, values (floats within 1e-9) and order, on a random
log full of ties and gaps, on ML-100K and on the Instacart sample, in memory and through
the pipeline's Parquet-to-Parquet `build_features` (also with a memory limit that makes
DuckDB spill).

The oracle below is the pandas implementation of `shoprec.features.tables` as it was before
the tables moved to DuckDB SQL, kept verbatim (only its public names made private) as the
reference the SQL must keep matching. `user_history` came after it: its oracle computes the
session flags with `shoprec.sequences.session_starts`, what the model's training input uses.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.config import DEFAULT_HISTORY_LEN, DEFAULT_MAX_LEN
from shoprec.data.loaders import load_instacart, load_movielens_100k
from shoprec.errors import FeatureTableError
from shoprec.features import names as N
from shoprec.features.tables import build_feature_tables, build_features
from shoprec.sequences import session_starts

from .conftest import AS_OF

_DAY = pd.Timedelta(days=1)


def _oracle(events: pd.DataFrame, items: pd.DataFrame | None = None, as_of=None,
            max_len: int = DEFAULT_MAX_LEN, history_len: int = DEFAULT_HISTORY_LEN) -> dict:
    """The tables as the pandas implementation built them (its `build_feature_tables`)."""
    ev = _prepared(events, items)
    cutoff = _utc(as_of) if as_of is not None else ev[S.TIMESTAMP].max()
    ev = ev[ev[S.TIMESTAMP] <= cutoff].reset_index(drop=True)
    return {
        N.USER_STATS: _user_stats_table(ev, cutoff),
        N.ITEM_STATS: _item_stats_table(ev, items, cutoff),
        N.USER_RECENT_ITEMS: _user_recent_items_table(ev, cutoff, max_len),
        N.USER_HISTORY: _user_history_table(ev, cutoff, history_len),
        "as_of": cutoff,
        "events": len(ev),
    }


# --- the tables -----------------------------------------------------------------------------


def _user_stats_table(ev: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per (user, distinct event time) and per user at `as_of`; see `names.USER_STATS_FEATURES`.

    Windows are half-open, (t - w, t]. `top_category` is the category the user has met most
    often so far; on a tie the category that reached the count first keeps the lead.
    """
    user = ev[S.USER_ID]
    counters = pd.DataFrame({S.USER_ID: user, S.TIMESTAMP: ev[S.TIMESTAMP]})
    for kind in S.EVENT_TYPES:
        counters[kind] = (ev[S.EVENT_TYPE] == kind).astype("int64").groupby(user).cumsum()
    first_meeting = ~ev.duplicated([S.USER_ID, S.ITEM_ID])
    counters[N.DISTINCT_ITEMS] = first_meeting.astype("int64").groupby(user).cumsum()
    priced = ev[S.PRICE].notna()
    counters["_price_sum"] = ev[S.PRICE].fillna(0.0).groupby(user).cumsum()
    counters["_price_n"] = priced.astype("int64").groupby(user).cumsum()
    counters[N.TOP_CATEGORY] = _running_leader(user, ev["_category"])
    counters["_last_event"] = ev[S.TIMESTAMP]
    cum = counters.drop_duplicates([S.USER_ID, S.TIMESTAMP], keep="last")

    rows = _rows_with_snapshot(cum[[S.USER_ID, S.TIMESTAMP]], S.USER_ID, as_of)
    now = _asof(rows, cum, S.USER_ID, rows[S.TIMESTAMP])
    out = pd.DataFrame({S.USER_ID: rows[S.USER_ID].to_numpy(), N.FEATURE_TIMESTAMP: rows[S.TIMESTAMP].to_numpy()})
    for window, days in N.WINDOWS.items():
        before = (
            _asof(rows, cum, S.USER_ID, rows[S.TIMESTAMP] - pd.Timedelta(days=days))
            if days is not None else None
        )
        for kind in S.EVENT_TYPES:
            count = now[kind].fillna(0).astype("int64")
            if before is not None:
                count = count - before[kind].fillna(0).astype("int64")
            out[f"{N.EVENT_PLURAL[kind]}_{window}"] = count.to_numpy()
    out[N.DISTINCT_ITEMS] = now[N.DISTINCT_ITEMS].astype("int64").to_numpy()
    out[N.DAYS_SINCE_LAST_EVENT] = ((rows[S.TIMESTAMP] - now["_last_event"]) / _DAY).to_numpy()
    price_n = now["_price_n"].astype("int64")
    out[N.MEAN_PRICE] = (now["_price_sum"] / price_n.where(price_n > 0)).to_numpy(dtype="float64")
    out[N.TOP_CATEGORY] = now[N.TOP_CATEGORY].to_numpy()
    return _typed(out)


def _item_stats_table(ev: pd.DataFrame, items: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per (item, distinct event time) and per item at `as_of`; see `names.ITEM_STATS_FEATURES`.

    `purchase_share` is purchases / events so far, only where the log has more than one
    event type (in a purchase-only or view-only log the share says nothing: null there).
    `price` is the mean event price so far, else the item table's price, else null.
    """
    # Cumulative sums run in row order: put the events in (item, time, file order) first.
    order = np.lexsort((np.arange(len(ev)), ev[S.TIMESTAMP].to_numpy(), ev[S.ITEM_ID].to_numpy()))
    ev = ev.iloc[order].reset_index(drop=True)
    item = ev[S.ITEM_ID]
    counters = pd.DataFrame({S.ITEM_ID: item, S.TIMESTAMP: ev[S.TIMESTAMP]})
    counters["_events"] = item.groupby(item).cumcount().astype("int64") + 1
    counters["_purchases"] = (ev[S.EVENT_TYPE] == S.PURCHASE).astype("int64").groupby(item).cumsum()
    counters[N.ITEM_USERS_ALL] = (~ev.duplicated([S.ITEM_ID, S.USER_ID])).astype("int64").groupby(item).cumsum()
    counters["_price_sum"] = ev[S.PRICE].fillna(0.0).groupby(item).cumsum()
    counters["_price_n"] = ev[S.PRICE].notna().astype("int64").groupby(item).cumsum()
    cum = counters.drop_duplicates([S.ITEM_ID, S.TIMESTAMP], keep="last")

    rows = _rows_with_snapshot(cum[[S.ITEM_ID, S.TIMESTAMP]], S.ITEM_ID, as_of)
    now = _asof(rows, cum, S.ITEM_ID, rows[S.TIMESTAMP])
    out = pd.DataFrame({S.ITEM_ID: rows[S.ITEM_ID].to_numpy(), N.FEATURE_TIMESTAMP: rows[S.TIMESTAMP].to_numpy()})
    for window, days in N.WINDOWS.items():
        count = now["_events"].fillna(0).astype("int64")
        if days is not None:
            before = _asof(rows, cum, S.ITEM_ID, rows[S.TIMESTAMP] - pd.Timedelta(days=days))
            count = count - before["_events"].fillna(0).astype("int64")
        out[f"events_{window}"] = count.to_numpy()
    out[N.ITEM_USERS_ALL] = now[N.ITEM_USERS_ALL].astype("int64").to_numpy()
    several_types = ev[S.EVENT_TYPE].nunique() > 1
    share = now["_purchases"] / now["_events"]
    out[N.PURCHASE_SHARE] = (share if several_types else share * np.nan).to_numpy(dtype="float64")
    price_n = now["_price_n"].astype("int64")
    event_price = (now["_price_sum"] / price_n.where(price_n > 0)).to_numpy(dtype="float64")
    catalogue = _item_attribute(items, S.PRICE)
    listed = rows[S.ITEM_ID].map(catalogue).astype("float64").to_numpy() if catalogue is not None else np.nan
    out[N.ITEM_PRICE] = np.where(np.isnan(event_price), listed, event_price)
    categories = _item_attribute(items, S.CATEGORY)
    out[N.ITEM_CATEGORY] = (
        rows[S.ITEM_ID].map(categories).fillna(N.UNKNOWN_CATEGORY).astype(str).to_numpy()
        if categories is not None else N.UNKNOWN_CATEGORY
    )
    return _typed(out)


def _user_recent_items_table(ev: pd.DataFrame, as_of: pd.Timestamp, max_len: int) -> pd.DataFrame:
    """One row per (user, distinct event time) and per user at `as_of`: the last `max_len`
    item ids with timestamp <= the row's, oldest first (events at one time keep file order)."""
    item_ids = ev[S.ITEM_ID].to_numpy(dtype=object)
    users = ev[S.USER_ID].to_numpy(dtype=object)
    ends = ev.drop_duplicates([S.USER_ID, S.TIMESTAMP], keep="last").index.to_numpy() + 1
    user_start = pd.Series(np.arange(len(ev))).groupby(ev[S.USER_ID].to_numpy()).transform("min").to_numpy()
    starts = np.maximum(user_start[ends - 1], ends - max_len)
    recent = [item_ids[a:b].tolist() for a, b in zip(starts, ends)]
    out = pd.DataFrame(
        {
            S.USER_ID: users[ends - 1],
            N.FEATURE_TIMESTAMP: ev[S.TIMESTAMP].to_numpy()[ends - 1],
            N.RECENT_ITEMS: recent,
        }
    )
    out[N.FEATURE_TIMESTAMP] = pd.to_datetime(out[N.FEATURE_TIMESTAMP], utc=True)
    last = out.drop_duplicates(S.USER_ID, keep="last")
    stale = last[last[N.FEATURE_TIMESTAMP] < as_of].assign(**{N.FEATURE_TIMESTAMP: as_of})
    both = pd.concat([out, stale], ignore_index=True)
    return both.sort_values([S.USER_ID, N.FEATURE_TIMESTAMP], kind="stable", ignore_index=True)




def _prepared(events: pd.DataFrame, items: pd.DataFrame | None) -> pd.DataFrame:
    """Typed, sorted by (user, time, file order) events with each event's item category."""
    ev = pd.DataFrame(
        {
            S.USER_ID: events[S.USER_ID].astype(str).to_numpy(),
            S.ITEM_ID: events[S.ITEM_ID].astype(str).to_numpy(),
            S.EVENT_TYPE: events[S.EVENT_TYPE].astype(str).to_numpy(),
            S.TIMESTAMP: _utc_series(events[S.TIMESTAMP]).to_numpy(),
            S.PRICE: (
                pd.to_numeric(events[S.PRICE], errors="coerce").astype("float64").to_numpy()
                if S.PRICE in events else np.nan
            ),
        }
    )
    ev[S.TIMESTAMP] = pd.to_datetime(ev[S.TIMESTAMP], utc=True)
    if S.SESSION_ID in events:  # as the log has them (session_starts factorizes the raw values)
        ev[S.SESSION_ID] = events[S.SESSION_ID].to_numpy(dtype=object)
    categories = _item_attribute(items, S.CATEGORY)
    ev["_category"] = ev[S.ITEM_ID].map(categories) if categories is not None else None
    ev = ev.iloc[np.lexsort((np.arange(len(ev)), ev[S.TIMESTAMP].to_numpy(), ev[S.USER_ID].to_numpy()))]
    return ev.reset_index(drop=True)


def _item_attribute(items: pd.DataFrame | None, column: str) -> pd.Series | None:
    if items is None or column not in items or S.ITEM_ID not in items:
        return None
    table = items[[S.ITEM_ID, column]].dropna().drop_duplicates(S.ITEM_ID, keep="last")
    return pd.Series(table[column].to_numpy(), index=table[S.ITEM_ID].astype(str).to_numpy())


def _running_leader(group: pd.Series, category: pd.Series) -> pd.Series:
    """For each event, the group's most frequent known category so far (first to reach wins ties)."""
    known = category.notna() & (category.astype(str) != N.UNKNOWN_CATEGORY)
    frame = pd.DataFrame({"g": group, "c": category.where(known)})
    count = frame.groupby(["g", "c"], dropna=True).cumcount().add(1).where(known, 0)
    best = count.groupby(group).cummax()
    best_before = best.groupby(group).shift(1, fill_value=0)
    # A count only grows by one per event, so the lead changes exactly where a count first
    # exceeds the best so far: mark those events, then carry the leader forward.
    leader = frame["c"].where(known & (count > best_before))
    return leader.groupby(group).ffill().fillna(N.UNKNOWN_CATEGORY).astype(str)


def _rows_with_snapshot(keys: pd.DataFrame, key: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """The entity's change times plus one row at `as_of` (unless its last change is at `as_of`)."""
    last = keys.sort_values(S.TIMESTAMP, kind="stable").drop_duplicates(key, keep="last")
    stale = last[last[S.TIMESTAMP] < as_of].assign(**{S.TIMESTAMP: as_of})
    rows = pd.concat([keys, stale], ignore_index=True)
    return rows.sort_values([key, S.TIMESTAMP], kind="stable", ignore_index=True)


def _asof(rows: pd.DataFrame, cum: pd.DataFrame, key: str, times: pd.Series) -> pd.DataFrame:
    """The cumulative values of `cum` at each row's entity and time (last change <= time)."""
    left = pd.DataFrame({key: rows[key].to_numpy(), "_t": times.to_numpy(), "_row": np.arange(len(rows))})
    right = cum.rename(columns={S.TIMESTAMP: "_t"})
    merged = pd.merge_asof(
        left.sort_values("_t", kind="stable"),
        right.sort_values("_t", kind="stable"),
        on="_t",
        by=key,
        direction="backward",
        allow_exact_matches=True,
    )
    return merged.sort_values("_row").reset_index(drop=True)


def _typed(out: pd.DataFrame) -> pd.DataFrame:
    out[N.FEATURE_TIMESTAMP] = pd.to_datetime(out[N.FEATURE_TIMESTAMP], utc=True)
    return out.reset_index(drop=True)


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _user_history_table(ev: pd.DataFrame, as_of: pd.Timestamp, history_len: int) -> pd.DataFrame:
    """One row per user at `as_of`: the user's newest `history_len` item ids, oldest first, the
    session flags of those items as `sequences.session_starts` gives them over the user's whole
    log (`ev` is sorted by user, time, file order), and the newest event's time and session id."""
    users = ev[S.USER_ID].to_numpy(dtype=object)
    offsets = np.r_[np.flatnonzero(np.r_[True, users[1:] != users[:-1]]), len(ev)] if len(ev) else np.zeros(1, int)
    # session_starts reads the times' integers at their unit: give it nanoseconds, as the SQL has.
    in_ns = ev.assign(**{S.TIMESTAMP: ev[S.TIMESTAMP].dt.as_unit("ns")})
    opens = session_starts(in_ns, np.arange(len(ev)), offsets.astype(np.int64))
    items = ev[S.ITEM_ID].to_numpy(dtype=object)
    nanos = pd.DatetimeIndex(ev[S.TIMESTAMP]).as_unit("ns").asi8
    sessions = ev[S.SESSION_ID].to_numpy(dtype=object) if S.SESSION_ID in ev else np.full(len(ev), None)
    rows = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        first = max(a, b - history_len)
        last_session = sessions[b - 1]
        rows.append((users[a], items[first:b].tolist(), opens[first:b].tolist(), int(nanos[b - 1]),
                     "" if pd.isna(last_session) else str(last_session)))
    out = pd.DataFrame({S.USER_ID: pd.Series([r[0] for r in rows], dtype=object),
                        N.FEATURE_TIMESTAMP: pd.Series([as_of] * len(rows), dtype="datetime64[ns, UTC]"),
                        N.HISTORY_ITEMS: pd.Series([r[1] for r in rows], dtype=object),
                        N.HISTORY_SESSION_STARTS: pd.Series([r[2] for r in rows], dtype=object),
                        N.HISTORY_LAST_EVENT_NS: np.array([r[3] for r in rows], dtype="int64"),
                        N.HISTORY_LAST_SESSION: pd.Series([r[4] for r in rows], dtype=object)})
    return out


def _utc_series(column: pd.Series) -> pd.Series:
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC")
    return pd.to_datetime(column, utc=True)


# --- comparing ----------------------------------------------------------------------------------


def _assert_same(got: pd.DataFrame, want: pd.DataFrame, name: str) -> None:
    assert list(got.columns) == list(want.columns), name
    assert got.dtypes.to_dict() == want.dtypes.to_dict(), name
    assert len(got) == len(want), (name, len(got), len(want))
    assert isinstance(got.index, pd.RangeIndex) and got.index.start == 0, name
    for column in want.columns:
        a, b = got[column].to_numpy(), want[column].to_numpy()
        if want[column].dtype == "float64":
            same = np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
        elif column in N.LIST_FEATURES:  # Python lists of Python values (str, or bool for the flags)
            same = np.array([type(x) is list and x == y and [type(v) for v in x] == [type(v) for v in y]
                             for x, y in zip(a, b)])
        else:
            same = a == b
        if not same.all():
            first = int(np.flatnonzero(~same)[0])
            raise AssertionError(
                f"{name}.{column}: {int((~same).sum())} row(s) differ; first at row {first}: "
                f"got {a[first]!r}, want {b[first]!r}\n{got.iloc[first].to_dict()}\n{want.iloc[first].to_dict()}"
            )


def _assert_tables_equal(tables, want: dict) -> None:
    for name in N.TABLE_FILES:
        _assert_same(tables.frame(name), want[name], name)
    assert tables.as_of == want["as_of"]
    assert tables.rows() == {name: len(want[name]) for name in N.TABLE_FILES}


def _random_log(seed: int, n: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events made to break things: few users and items, many events sharing a second (ties in
    every order), unknown and missing categories, missing prices, one event per type at least."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    seconds = rng.choice(np.arange(0, 90 * 86400, 3600), size=n)  # on the hour: many ties
    seconds[: n // 10] = seconds[n // 10: 2 * (n // 10)]  # more exact ties, on purpose
    seconds[:50] = 7 * 86400  # and events exactly at window edges of each other
    events = pd.DataFrame(
        {
            S.USER_ID: rng.choice([f"u{i}" for i in range(40)], n),
            S.ITEM_ID: rng.choice([f"i{i}" for i in range(120)], n),
            S.EVENT_TYPE: rng.choice(list(S.EVENT_TYPES), n, p=[0.6, 0.25, 0.15]),
            S.TIMESTAMP: start + pd.to_timedelta(seconds, unit="s"),
            S.PRICE: np.where(rng.random(n) < 0.3, np.nan, rng.integers(1, 1000, n) / 100),
        }
    )
    events.loc[rng.random(n) < 0.02, S.TIMESTAMP] = start + pd.Timedelta(days=7)  # a window edge
    categories = rng.choice(["toys", "books", "food", N.UNKNOWN_CATEGORY, None], 120, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    items = pd.DataFrame(
        {
            S.ITEM_ID: [f"i{i}" for i in range(120)],
            S.CATEGORY: categories,
            S.PRICE: np.where(rng.random(120) < 0.5, np.nan, rng.integers(1, 500, 120) / 10),
        }
    )
    return events, items


def _session_log(seed: int, ids: str, n: int = 1500) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`_random_log`'s users and items on a session-shaped clock: gaps between a user's events
    of 0 (ties), a few minutes, exactly 30 minutes (not a new session by time), 30 minutes and
    a microsecond (what the feature files keep), and hours, so that the 30-minute rule and the
    ids disagree often. `ids`:
    "text" (every event has a session id, the id changing at random, not with the gaps),
    "mixed" (ints, a third of them missing: a float column with NaN), "none" (a column of
    nulls) or "absent" (no column)."""
    events, items = _random_log(seed, n)
    rng = np.random.default_rng(seed + 100)
    gaps = rng.choice([0, 60, 29 * 60, 30 * 60, 30 * 60 + 1e-6, 31 * 60, 3 * 3600], size=n)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    # A running clock per user, in file order: the log stays in the order the users lived it.
    clock = pd.Series(gaps).groupby(events[S.USER_ID].to_numpy()).cumsum().to_numpy()
    events[S.TIMESTAMP] = start + pd.to_timedelta(np.round(clock * 1e9).astype("int64"), unit="ns")
    visit = pd.Series(rng.random(n) < 0.3).groupby(events[S.USER_ID].to_numpy()).cumsum().to_numpy()
    if ids == "text":
        events[S.SESSION_ID] = [f"s{v % 3}" for v in visit]  # ids come back: s0 after s2 is a change
    elif ids == "mixed":
        events[S.SESSION_ID] = np.where(rng.random(n) < 0.33, np.nan, visit.astype("float64"))
    elif ids == "none":
        events[S.SESSION_ID] = None
    return events.sample(frac=1, random_state=seed).sort_index(), items


# --- in memory ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_len", [1, 3, 50])
def test_random_logs_match_the_oracle(seed, max_len):
    events, items = _random_log(seed)
    as_of = events[S.TIMESTAMP].quantile(0.8) if seed == 1 else None  # some events left out
    # history_len 3x the window: users (about 75 events) hold more, so the cut is tested too.
    _assert_tables_equal(build_feature_tables(events, items, as_of, max_len, history_len=3 * max_len),
                         _oracle(events, items, as_of, max_len, 3 * max_len))


@pytest.mark.parametrize("ids", ["text", "mixed", "none", "absent"])
def test_session_logs_match_the_oracle(ids):
    """The history's session flags and last event on logs with and without session ids; users
    hold about 40 events, history_len 6 keeps their newest: the oldest kept item's flag comes
    from the event before it."""
    events, items = _session_log(6, ids)
    got = build_feature_tables(events, items, max_len=3, history_len=6)
    want = _oracle(events, items, max_len=3, history_len=6)
    _assert_tables_equal(got, want)
    history = want[N.USER_HISTORY]
    flags = history[N.HISTORY_SESSION_STARTS]
    # The log is made to reach every case: both flags at the oldest kept item, some last session ids.
    assert {f[0] for f in flags} == {True, False} and {False, True} <= {v for f in flags for v in f}
    assert (history[N.HISTORY_LAST_SESSION] != "").any() == (ids in ("text", "mixed"))
    as_of = events[S.TIMESTAMP].quantile(0.5)  # a cut inside the log: later events never count
    _assert_tables_equal(build_feature_tables(events, items, as_of, 3, history_len=6),
                         _oracle(events, items, as_of, 3, 6))


def test_without_items_prices_or_several_types(timeline):
    events, items = _random_log(3, 500)
    bare = events.drop(columns=[S.PRICE])
    _assert_tables_equal(build_feature_tables(bare, None, max_len=5), _oracle(bare, None, max_len=5))
    views = events.assign(**{S.EVENT_TYPE: S.VIEW})
    _assert_tables_equal(build_feature_tables(views, items, max_len=5), _oracle(views, items, max_len=5))
    as_text = events.assign(**{S.TIMESTAMP: events[S.TIMESTAMP].dt.strftime("%Y-%m-%dT%H:%M:%SZ")})
    _assert_tables_equal(build_feature_tables(as_text, items, max_len=5), _oracle(as_text, items, max_len=5))
    events, items = timeline
    for as_of in (AS_OF, None):
        _assert_tables_equal(build_feature_tables(events, items, as_of, 2), _oracle(events, items, as_of, 2))


def test_nanosecond_times_are_kept_in_memory():
    """Times from float seconds (as monitoring's windows have them) are exact to the nanosecond:
    the snapshot row is at as_of itself, events 1 ns apart are two moments."""
    events, items = _random_log(4, 800)
    rng = np.random.default_rng(4)
    events[S.TIMESTAMP] = events[S.TIMESTAMP] + pd.to_timedelta(rng.uniform(0, 3600, len(events)), unit="s")
    first = events.loc[0]
    events.loc[1, [S.USER_ID, S.TIMESTAMP]] = [first[S.USER_ID], first[S.TIMESTAMP] + pd.Timedelta(1, "ns")]
    as_of = events[S.TIMESTAMP].max() + pd.Timedelta(seconds=1)
    tables = build_feature_tables(events, items, as_of, 5)
    _assert_tables_equal(tables, _oracle(events, items, as_of, 5))
    snapshot = tables.user_stats[tables.user_stats[N.FEATURE_TIMESTAMP] == as_of]
    assert len(snapshot) == events[S.USER_ID].nunique()


@pytest.mark.integration
def test_movielens_100k_matches_the_oracle():
    data = load_movielens_100k()
    _assert_tables_equal(build_feature_tables(data.events, data.items), _oracle(data.events, data.items))
    middle = data.events[S.TIMESTAMP].quantile(0.5)
    _assert_tables_equal(build_feature_tables(data.events, data.items, middle, 10),
                         _oracle(data.events, data.items, middle, 10))


@pytest.mark.integration
def test_instacart_matches_the_oracle():
    data = load_instacart()
    _assert_tables_equal(build_feature_tables(data.events, data.items, max_len=50),
                         _oracle(data.events, data.items, max_len=50))


# --- Parquet to Parquet (the pipeline step) ------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("memory_limit", ["2GB", "64MB"])  # 64MB: DuckDB must spill to get through
def test_build_features_writes_the_oracle_tables(tmp_path, memory_limit):
    data = load_movielens_100k()
    clean = data.write(tmp_path / "clean")
    manifest = json.loads((clean / S.DATASET_MANIFEST).read_text())
    tables = build_features(clean, tmp_path / "features", max_len=20, memory_limit=memory_limit)

    want = _oracle(data.events, data.items, max_len=20)
    for name in N.TABLE_FILES:  # the files as Feast reads them, then as frames
        path = tmp_path / "features" / N.TABLE_FILES[name]
        assert tables.paths[name] == path
        written = pd.read_parquet(path)
        assert str(written[N.FEATURE_TIMESTAMP].dtype).endswith(", UTC]")
        assert written[N.FEATURE_TIMESTAMP].tolist() == want[name][N.FEATURE_TIMESTAMP].tolist()
    _assert_tables_equal(tables, want)
    features = json.loads((tmp_path / "features" / "features.json").read_text())
    assert features["rows"] == {name: len(want[name]) for name in N.TABLE_FILES}
    assert (features["max_len"], features["events"]) == (20, want["events"])
    assert (features["source"], features["snapshot_id"]) == (manifest["source"], manifest["snapshot_id"])
    assert pd.Timestamp(features["as_of"]) == want["as_of"]
    left = sorted(p.name for p in (tmp_path / "features").iterdir())  # no spill folder, no partial file
    assert left == sorted([*N.TABLE_FILES.values(), "features.json"])


def test_build_features_reads_naive_and_ms_timestamps_as_utc(tmp_path, timeline):
    events, items = timeline
    naive = events.assign(**{S.TIMESTAMP: events[S.TIMESTAMP].dt.tz_localize(None).astype("datetime64[ms]")})
    EventData(naive, items, source="timeline").write(tmp_path / "clean")
    tables = build_features(tmp_path / "clean", tmp_path / "features", as_of=AS_OF, max_len=2)
    want = _oracle(events, items, AS_OF, 2)
    _assert_tables_equal(tables, want)
    tables.write(tmp_path / "copy")  # a table on disk is copied, not read
    copied, built = (pd.read_parquet(tmp_path / d / "user_stats.parquet") for d in ("copy", "features"))
    assert copied.equals(built)


# --- in parts (build_features' part_events) ------------------------------------------------------


def _assert_same_files(got_dir, want_dir) -> None:
    """The tables in `got_dir` are those in `want_dir`: one Parquet file each, the same Parquet
    schema, rows, order and values. Floats within 1e-12: DuckDB sums doubles (the price sums) in
    an order that follows where a key's rows sit among others, so a last bit may differ."""
    import pyarrow.parquet as pq

    for name, file in N.TABLE_FILES.items():
        got, want = pq.ParquetFile(got_dir / file), pq.ParquetFile(want_dir / file)
        assert got.schema == want.schema, name  # the Parquet schema: required / optional included
        assert got.schema_arrow == want.schema_arrow, name
        got_frame, want_frame = got.read().to_pandas(), want.read().to_pandas()
        pd.testing.assert_frame_equal(got_frame, want_frame, check_exact=False, rtol=1e-12, atol=0)
        for column in want_frame.columns:
            if want_frame[column].dtype != "float64":
                assert (got_frame[column].astype(str) == want_frame[column].astype(str)).all(), (name, column)
    assert (json.loads((got_dir / "features.json").read_text())
            == json.loads((want_dir / "features.json").read_text()))
    assert sorted(p.name for p in got_dir.iterdir()) == sorted([*N.TABLE_FILES.values(), "features.json"])


def _build_in_parts(tmp_path, events, items, part_events: int, max_len: int, as_of=None) -> None:
    """Build from a clean folder of `events` in one part and in parts of `part_events` events,
    after checking that the log makes many parts, one of them a key bigger than a part; the two
    builds' files must be the same and match the oracle."""
    biggest = max(events[key].astype(str).value_counts().max() for key in (S.USER_ID, S.ITEM_ID))
    assert biggest > part_events and len(events) >= 20 * part_events, (biggest, len(events))
    clean = EventData(events, items, source="parts").write(tmp_path / "clean")
    history_len = 3 * max_len  # shorter than the users' histories: the cut is tested in parts
    whole = build_features(clean, tmp_path / "whole", as_of, max_len, part_events=len(events), history_len=history_len)
    parts = build_features(clean, tmp_path / "parts", as_of, max_len, part_events=part_events, history_len=history_len)
    _assert_same_files(tmp_path / "parts", tmp_path / "whole")
    assert parts.rows() == whole.rows()
    _assert_tables_equal(parts, _oracle(events, items, as_of, max_len, history_len))


@pytest.mark.parametrize("part_events", [7, 60])
def test_build_features_in_parts_random_log(tmp_path, part_events):
    """Parts of 7 events: every user and item (about 75 and 25 events) is bigger than a part.
    Parts of 60: several items a part, users bigger than a part, an as_of inside the log."""
    events, items = _random_log(5)
    as_of = events[S.TIMESTAMP].quantile(0.9) if part_events == 60 else None
    _build_in_parts(tmp_path, events, items, part_events, max_len=4, as_of=as_of)


@pytest.mark.parametrize("ids", ["text", "mixed", "absent"])
def test_build_features_in_parts_session_log(tmp_path, ids):
    """The session flags from the events Parquet (text ids, float ids with nulls, no column),
    in parts of 30 events (every user bigger than a part), as in one part and the oracle."""
    events, items = _session_log(7, ids, n=1000)
    _build_in_parts(tmp_path, events, items, 30, max_len=2)


@pytest.mark.integration
def test_build_features_in_parts_movielens_100k(tmp_path):
    data = load_movielens_100k()  # users up to 737 events, items up to 583: parts of 500
    _build_in_parts(tmp_path, data.events, data.items, 500, max_len=20)


@pytest.mark.integration
def test_build_features_in_parts_instacart(tmp_path):
    data = load_instacart()  # users up to 1,571 events, items up to 2,087: parts of 1,000
    _build_in_parts(tmp_path, data.events, data.items, 1000, max_len=50)


def test_build_features_rejects_parts_below_one_event(tmp_path, timeline):
    events, items = timeline
    EventData(events, items, source="timeline").write(tmp_path / "clean")
    with pytest.raises(FeatureTableError, match="part_events must be >= 1, got 0"):
        build_features(tmp_path / "clean", tmp_path / "features", part_events=0)
