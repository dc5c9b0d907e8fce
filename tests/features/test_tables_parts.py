"""`build_features`' parts holding a key bigger than a part: which parts those are, and the
item_stats they get from the running-sum + ASOF query (`item_stats_table(..., running=True)`),
which must be the RANGE-window query's table row for row, window edges included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.features import names as N
from shoprec.features import tables
from shoprec.features.tables import _cluster_by_part, _load_events, build_features, duckdb_connection

_START = pd.Timestamp("2024-01-01", tz="UTC")
_DAY = pd.Timedelta(days=1)
_US = pd.Timedelta(microseconds=1)
_NS = pd.Timedelta(nanoseconds=1)


def _events_frame(counts: dict[str, int]) -> pd.DataFrame:
    """`counts[key]` events of each item key, with an empty time (the cluster test reads counts only)."""
    keys = [key for key, n in counts.items() for _ in range(n)]
    return pd.DataFrame({S.ITEM_ID: keys, "t": np.arange(len(keys), dtype="int64")})


def test_cluster_by_part_names_the_parts_holding_a_key_bigger_than_a_part():
    # Cumulative events before each key: a 0, b 300, c 310, d 410, e 415, f 425 -> with parts of
    # 50: parts 0 (a, 300 events: alone), 6 (b and c, c bigger than a part), 8 (d, e), 8 (f).
    frame = _events_frame({"a": 300, "b": 10, "c": 100, "d": 5, "e": 10, "f": 50})
    with duckdb_connection() as con:
        con.register("_f", frame)
        con.execute("CREATE TEMP TABLE ev AS SELECT * FROM _f")
        parts, null_key, oversize = _cluster_by_part(con, S.ITEM_ID, [S.ITEM_ID, "t"], 50)
        assert parts == [0, 6, 8]
        assert not null_key
        assert oversize == {0, 6}  # f has exactly 50 events: not bigger than a part
        part_keys = con.execute(f"SELECT DISTINCT part, {S.ITEM_ID} FROM ev_parts ORDER BY 1, 2").fetchall()
        assert part_keys == [(0, "a"), (6, "b"), (6, "c"), (8, "d"), (8, "e"), (8, "f")]
        assert con.execute("SELECT count(*) FROM ev_parts").fetchone()[0] == len(frame)
        # Parts bigger than the log: one part, nothing oversize.
        assert _cluster_by_part(con, S.ITEM_ID, [S.ITEM_ID, "t"], len(frame))[::2] == ([0], frozenset())


def _big_item_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ordinary items (a few to 40 events) around two big ones of 300 events over 60 days: "i05"
    shares its part with the small items before it, "i00" (first) is alone in its part. Many
    events share a time, and events sit exactly 7 and 30 days apart and a microsecond either
    side of that (the window edges: (t - w, t] leaves t - w out)."""
    rng = np.random.default_rng(3)
    rows = []

    def add(item: str, times: list[pd.Timestamp]) -> None:
        for time in times:
            rows.append((f"u{rng.integers(0, 25)}", item, rng.choice(list(S.EVENT_TYPES), p=[0.6, 0.25, 0.15]),
                         time, np.nan if rng.random() < 0.3 else float(rng.integers(1, 1000)) / 100))

    for big in ("i00", "i05"):
        hours = rng.integers(0, 60 * 24, 240)
        times = [_START + pd.Timedelta(hours=int(h)) for h in hours]
        times += [_START + 5 * _DAY] * 12  # one time, many events
        edge = _START + 10 * _DAY
        for span in (7, 30):
            times += [edge + span * _DAY, edge + span * _DAY - _US, edge + span * _DAY + _US]
        times += [edge] * 3
        times += [_START + 50 * _DAY + k * _US for k in range(300 - len(times))]  # microseconds apart
        assert len(times) == 300
        add(big, times)
    for i in (1, 2, 3, 4, 6, 7, 8):
        n = int(rng.integers(3, 40))
        add(f"i{i:02d}", [_START + pd.Timedelta(hours=int(h)) for h in rng.integers(0, 60 * 24, n)])
    events = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP, S.PRICE])
    events = events.sample(frac=1, random_state=1).reset_index(drop=True)  # file order: not by time
    items = pd.DataFrame({S.ITEM_ID: [f"i{i:02d}" for i in range(9)],
                          S.CATEGORY: ["toys", "books", None, "food", "toys", "books", "food", "toys", None],
                          S.PRICE: [1.5, np.nan, 2.0, np.nan, 3.0, 4.0, np.nan, 5.0, 6.0]})
    return events, items


def _assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Row for row: the same columns, dtypes and order, floats within 1e-12, the rest exact."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=0)
    for column in want.columns:
        if want[column].dtype != "float64":
            assert (got[column].astype(str) == want[column].astype(str)).all(), column


def _window_counts(events: pd.DataFrame, item: str, times: pd.Series) -> dict[str, list[int]]:
    """A brute-force count of `item`'s events in (T - w, T] for each T of `times`."""
    stamps = pd.to_datetime(events.loc[events[S.ITEM_ID] == item, S.TIMESTAMP], utc=True).to_numpy()
    out: dict[str, list[int]] = {}
    for window, days in N.WINDOWS.items():
        out[window] = [
            int(((stamps <= when) & ((days is None) | (stamps > when - np.timedelta64(days or 0, "D")))).sum())
            for when in pd.to_datetime(times, utc=True).to_numpy()
        ]
    return out


@pytest.mark.parametrize("as_of", [None, _START + 40 * _DAY])
def test_item_stats_of_oversize_parts_equal_the_one_part_build(tmp_path, monkeypatch, as_of):
    events, items = _big_item_log()
    clean = EventData(events, items, source="big-item").write(tmp_path / "clean")
    whole = build_features(clean, tmp_path / "whole", as_of, 5, part_events=10 * len(events))

    running_parts: list[str] = []
    plain_parts: list[str] = []
    item_stats_table = tables.item_stats_table

    def spy(*args, running=False, **kwargs):
        (running_parts if running else plain_parts).append(kwargs["events"])
        return item_stats_table(*args, running=running, **kwargs)

    monkeypatch.setattr(tables, "item_stats_table", spy)
    parts = build_features(clean, tmp_path / "parts", as_of, 5, part_events=50)

    # The big items' parts (and only those) went down the running-sum path: i00's part 0 (first
    # key: alone) and i05's (with the smaller items before it).
    counts = pd.read_parquet(clean / S.EVENTS_FILE)
    if as_of is not None:
        counts = counts[pd.to_datetime(counts[S.TIMESTAMP], utc=True) <= as_of]
    counts = counts[S.ITEM_ID].value_counts().sort_index()
    part_of = ((counts.cumsum() - counts) // 50).astype(int)
    want_running = sorted({int(part_of[k]) for k in ("i00", "i05")})
    assert want_running == sorted({int(part_of[k]) for k in counts.index if counts[k] > 50})
    assert part_of["i00"] == 0 and (part_of == part_of["i05"]).sum() > 1  # i05 shares its part
    assert running_parts == [f"(SELECT * FROM ev_parts WHERE part = {p}) ev" for p in want_running]
    assert len(plain_parts) == part_of.nunique() - len(want_running) > 0

    got, want = parts.frame(N.ITEM_STATS), whole.frame(N.ITEM_STATS)
    _assert_same_rows(got, want)
    assert parts.rows() == whole.rows()
    for name in (N.USER_STATS, N.USER_RECENT_ITEMS):
        _assert_same_rows(parts.frame(name), whole.frame(name))

    # And the windows are right, not only equal: a brute-force count for the big items.
    clean_events = pd.read_parquet(clean / S.EVENTS_FILE)
    for item in ("i00", "i05"):
        rows = got[got[S.ITEM_ID] == item]
        expected = _window_counts(clean_events, item, rows[N.FEATURE_TIMESTAMP])
        for window in N.WINDOWS:
            assert rows[f"events_{window}"].tolist() == expected[window], (item, window)
    # The edges were checked: rows at exactly t - w after other events of the big item.
    for days in (7, 30):
        edge_rows = got[(got[S.ITEM_ID] == "i00") & (got[N.FEATURE_TIMESTAMP] == _START + (10 + days) * _DAY)]
        assert len(edge_rows) == 1, days


def _nanosecond_log() -> pd.DataFrame:
    """Events at nanosecond times for two items and a null item: several exactly w apart, w - 1 ns
    and w + 1 ns apart, ties."""
    base = _START.value
    rows = []
    for item in ("a", "b", None):
        times = [base, base, base + 1]
        for days in (7, 30):
            w = days * 86_400_000_000_000
            times += [base + w - 1, base + w, base + w, base + w + 1, base + 2 * w, base + 2 * w + 1]
        times += [base + k * 3_600_000_000_000 for k in range(0, 24 * 70, 7)]
        for k, t in enumerate(times):
            rows.append((f"u{k % 5}", item, S.PURCHASE if k % 4 == 0 else S.VIEW, t,
                         None if k % 3 == 0 else float(k)))
    frame = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, "t", S.PRICE])
    frame["ord"] = np.arange(len(frame), dtype="int64")
    return frame


@pytest.mark.parametrize("several_types", [True, False])
def test_running_item_stats_query_equals_the_range_query_to_the_nanosecond(several_types):
    """The two item_stats queries over the same events (in memory: nanosecond times, a null key)."""
    frame = _nanosecond_log()
    with duckdb_connection() as con:
        con.register("_f", frame)
        source = f"SELECT {S.USER_ID}, {S.ITEM_ID}, {S.EVENT_TYPE}, t, {S.PRICE}, ord, " \
                 f"NULL::VARCHAR AS {S.SESSION_ID} FROM _f"
        as_of = pd.Timestamp(int(frame["t"].max()) + 5, unit="ns", tz="UTC")
        cutoff, _, _ = _load_events(con, source, None, as_of)
        at = int(cutoff.value)
        ranged = con.sql(tables.item_stats_table(at, several_types, tables._FRAME_TIMESTAMP)).df()
        running = con.sql(tables.item_stats_table(at, several_types, tables._FRAME_TIMESTAMP, running=True)).df()
    assert len(ranged) > 3 * 100 and ranged[S.ITEM_ID].isna().sum() > 100
    _assert_same_rows(running, ranged)
    # Spot check one edge: at base + 7d the 7-day window leaves out the events at base (two).
    a = ranged[(ranged[S.ITEM_ID] == "a")].set_index(N.FEATURE_TIMESTAMP)
    w7 = 7 * 86_400_000_000_000
    base = _START.value
    at_edge = a.loc[base + w7]
    assert at_edge["events_all"] - at_edge["events_7d"] == 2 + 1  # base, base (and the hour-0 event at base)
    assert a.loc[base + w7 - 1, "events_7d"] == a.loc[base + w7 - 1, "events_all"]
