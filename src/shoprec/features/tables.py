"""Feature tables: clean events -> Parquet tables that Feast serves (offline and online).

Every table is a history, not a snapshot: a row per entity for each moment its values
changed (each distinct event time), plus one row per entity at the build time `as_of`, so
that window counts and recency are current there. A row timestamped `t` is computed from
events with timestamp <= t only; that is what makes Feast's point-in-time join honest.

One implementation, in DuckDB SQL (GROUP BY and window functions, no Python loop over rows):
the pipeline's `build_features` reads the clean events Parquet and writes the tables part by
part (`part_events` events at a time, each part a run of consecutive user or item keys, so
every window is complete inside its part), streaming each part's rows into one Parquet file
per table, under a memory limit with a spill folder: memory is bounded and the cost grows
linearly with the size of the log. `build_feature_tables` runs the same queries over an
in-memory frame (tests, monitoring windows, the demo), in one part, and returns pandas frames.

Inside the queries a time is `t`, nanoseconds since the epoch (UTC: pandas' resolution, so an
in-memory build is exact to the nanosecond), and events are ordered
by (user, t, `ord`), `ord` being the event's row number in the events file or frame: events
that share a second keep file order, as they always have.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection, Iterator, Sequence

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.config import DEFAULT_HISTORY_LEN, DEFAULT_MAX_LEN, SESSION_GAP
from shoprec.errors import DataSourceError, FeatureTableError
from shoprec.features import names as N
from shoprec.home import FEATURES_MANIFEST

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

DEFAULT_MEMORY_LIMIT = "2GB"
"""DuckDB's memory limit while it builds the tables: past it, sorts and windows spill to disk."""

DEFAULT_PART_EVENTS = 1_000_000
"""About how many events `build_features` computes a table's rows from at a time. Every part
costs what a build of about this many events costs, so the whole build grows linearly with the
log; built in one part, the windows and sorts of a larger log outgrew `DEFAULT_MEMORY_LIMIT` and
spilled (a 30M-event build cost 9.3x the CPU of a 5M one)."""

# The Parquet row groups `build_features` writes: at most DuckDB's COPY's row count, and fewer
# rows where they are wide (a `recent_items` row holds up to `max_len` ids), so that a row group
# held in memory before it is written stays small.
_ROW_GROUP_ROWS = 122_880
_ROW_GROUP_BYTES = 64 << 20
_FETCH_ROWS = 8_192  # rows per Arrow batch fetched from DuckDB

_NS_PER_DAY = 86_400_000_000_000

# `config.SESSION_GAP` in nanoseconds, as the queries compare event times.
SESSION_GAP_NS = int(SESSION_GAP.value)

# How `event_timestamp` leaves a query: for Parquet files, a UTC time in microseconds (DuckDB's
# TIMESTAMPTZ, which Spark reads too; a sub-microsecond part is dropped); for frames, the
# nanoseconds themselves (`_fetch` makes them datetime64[ns, UTC]).
_FILE_TIMESTAMP = f"make_timestamp(t // 1000)::TIMESTAMPTZ AS {N.FEATURE_TIMESTAMP}"
_FRAME_TIMESTAMP = f"t AS {N.FEATURE_TIMESTAMP}"


class FeatureTables:
    """The feature tables as built as of one time (each keyed by entity and timestamp).

    In memory (`build_feature_tables`: pandas frames) or on disk (`build_features`: the Parquet
    files it wrote, read only when a frame is asked for; `rows` never reads them).
    """

    def __init__(
        self,
        user_stats: pd.DataFrame | None = None,
        item_stats: pd.DataFrame | None = None,
        user_recent_items: pd.DataFrame | None = None,
        as_of: pd.Timestamp | None = None,
        max_len: int = DEFAULT_MAX_LEN,
        user_history: pd.DataFrame | None = None,
        history_len: int = DEFAULT_HISTORY_LEN,
        info: dict[str, object] | None = None,
        paths: dict[str, Path] | None = None,
        row_counts: dict[str, int] | None = None,
    ) -> None:
        given = {N.USER_STATS: user_stats, N.ITEM_STATS: item_stats, N.USER_RECENT_ITEMS: user_recent_items,
                 N.USER_HISTORY: user_history}
        self._frames: dict[str, pd.DataFrame] = {k: v for k, v in given.items() if v is not None}
        self.paths: dict[str, Path] = dict(paths or {})
        missing = [name for name in N.TABLE_FILES if name not in self._frames and name not in self.paths]
        if missing:
            raise FeatureTableError(f"feature tables lack {missing}: give a frame or a file for each")
        if as_of is None:
            raise FeatureTableError("feature tables need their as_of time")
        self.as_of = as_of
        self.max_len, self.history_len = max_len, history_len
        self.info: dict[str, object] = dict(info or {})
        self._rows = dict(row_counts or {})

    @property
    def user_stats(self) -> pd.DataFrame:
        return self.frame(N.USER_STATS)

    @property
    def item_stats(self) -> pd.DataFrame:
        return self.frame(N.ITEM_STATS)

    @property
    def user_recent_items(self) -> pd.DataFrame:
        return self.frame(N.USER_RECENT_ITEMS)

    @property
    def user_history(self) -> pd.DataFrame:
        return self.frame(N.USER_HISTORY)

    def frame(self, name: str) -> pd.DataFrame:
        """One table as a frame (a table on disk is read, whole, on first use)."""
        if name not in self._frames:
            self._frames[name] = _read_table(self.paths[name])
        return self._frames[name]

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: self.frame(name) for name in N.TABLE_FILES}

    def rows(self) -> dict[str, int]:
        """Rows per table, without reading a table on disk."""
        return {
            name: self._rows[name] if name in self._rows else len(self._frames[name])
            for name in N.TABLE_FILES
        }

    def write(self, directory: str | Path) -> dict[str, Path]:
        """Write each table as `<name>.parquet` plus `features.json`; returns the table paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name in N.TABLE_FILES:
            path = out / N.TABLE_FILES[name]
            if name in self.paths and self.paths[name].resolve() == path.resolve():
                paths[name] = path  # already there
                continue
            # Write then rename: a reader (materialization) never sees half a file.
            partial = path.with_suffix(".parquet.partial")
            if name in self._frames:
                # Microseconds, as DuckDB's COPY writes them: Spark (Feast's Spark offline store)
                # cannot read the nanosecond timestamps pandas would write.
                self._frames[name].to_parquet(partial, index=False, coerce_timestamps="us",
                                              allow_truncated_timestamps=True)
            else:
                shutil.copyfile(self.paths[name], partial)
            partial.replace(path)
            paths[name] = path
        self._write_manifest(out)
        return paths

    def _write_manifest(self, out: Path) -> None:
        manifest = {"as_of": self.as_of.isoformat(), "max_len": self.max_len, "history_len": self.history_len,
                    "rows": self.rows(), **self.info}
        (out / FEATURES_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))


def build_feature_tables(
    events: pd.DataFrame,
    items: pd.DataFrame | None = None,
    as_of: pd.Timestamp | str | None = None,
    max_len: int = DEFAULT_MAX_LEN,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    history_len: int = DEFAULT_HISTORY_LEN,
) -> FeatureTables:
    """Build `user_stats`, `item_stats`, `user_recent_items` and `user_history` from clean
    events as of `as_of`.

    Args:
        events: clean events (user_id, item_id, event_type, timestamp; price optional).
        items: the item table; its `category` (and `price`) feed the category features.
        as_of: the build time: events after it are ignored and every entity gets a row at it.
            Default: the last event's time.
        max_len: how many recent item ids `user_recent_items` keeps.
        memory_limit: DuckDB's memory limit (e.g. "2GB"); beyond it, work spills to disk.
        history_len: how many item ids `user_history` keeps (at least `max_len`).

    Raises:
        FeatureTableError: a required column is missing, `history_len` is below `max_len`, or
            no event is at or before `as_of`.
    """
    frames, cutoff, count = _build_frames(events, items, as_of, tuple(N.TABLE_FILES), max_len,
                                          memory_limit, history_len)
    return FeatureTables(
        user_stats=frames[N.USER_STATS],
        item_stats=frames[N.ITEM_STATS],
        user_recent_items=frames[N.USER_RECENT_ITEMS],
        user_history=frames[N.USER_HISTORY],
        as_of=cutoff,
        max_len=max_len,
        history_len=history_len,
        info={"events": count},
    )


def build_table_frames(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    as_of: pd.Timestamp | str | None,
    names: Sequence[str],
) -> tuple[dict[str, pd.DataFrame], pd.Timestamp]:
    """Only the named tables (of N.TABLE_FILES), as `build_feature_tables` builds them with its
    defaults, and the cutoff they were taken at: for readers of a few tables over many windows
    or snapshots (monitoring, churn), who need not pay for the item lists.

    Raises:
        FeatureTableError: as `build_feature_tables`, or a name that is not a feature table.
    """
    unknown = [name for name in names if name not in N.TABLE_FILES]
    if unknown:
        raise FeatureTableError(f"no feature table named {unknown}; the tables are {list(N.TABLE_FILES)}")
    frames, cutoff, _ = _build_frames(events, items, as_of, tuple(names), DEFAULT_MAX_LEN,
                                      DEFAULT_MEMORY_LIMIT, DEFAULT_HISTORY_LEN)
    return frames, cutoff


def _build_frames(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    as_of: pd.Timestamp | str | None,
    names: tuple[str, ...],
    max_len: int,
    memory_limit: str,
    history_len: int,
) -> tuple[dict[str, pd.DataFrame], pd.Timestamp, int]:
    """The named tables in memory, the cutoff and the number of events kept."""
    _check(list(events.columns), max_len, history_len)
    frame = pd.DataFrame(
        {
            S.USER_ID: events[S.USER_ID].astype(str).to_numpy(),
            S.ITEM_ID: events[S.ITEM_ID].astype(str).to_numpy(),
            S.EVENT_TYPE: events[S.EVENT_TYPE].astype(str).to_numpy(),
            S.TIMESTAMP: _nanoseconds(events[S.TIMESTAMP]),
            S.PRICE: (
                pd.to_numeric(events[S.PRICE], errors="coerce").astype("float64").to_numpy()
                if S.PRICE in events else np.full(len(events), np.nan)
            ),
            "ord": np.arange(len(events), dtype="int64"),
        }
    )
    if S.SESSION_ID in events:
        frame[S.SESSION_ID] = _session_text(events[S.SESSION_ID])
    session = f"CAST({S.SESSION_ID} AS VARCHAR)" if S.SESSION_ID in events else "NULL::VARCHAR"
    with duckdb_connection(memory_limit, None) as con:
        con.register("_events_frame", frame)
        source = (
            f"SELECT {S.USER_ID}, {S.ITEM_ID}, {S.EVENT_TYPE}, {S.TIMESTAMP} AS t, "
            f"{S.PRICE}, ord, {session} AS {S.SESSION_ID} FROM _events_frame"
        )
        cutoff, count, several = _load_events(con, source, items, as_of)
        queries = {
            N.USER_STATS: lambda: user_stats_table(_ns(cutoff), _FRAME_TIMESTAMP),
            N.ITEM_STATS: lambda: item_stats_table(_ns(cutoff), several, _FRAME_TIMESTAMP),
            N.USER_RECENT_ITEMS: lambda: user_recent_items_table(_ns(cutoff), max_len, _FRAME_TIMESTAMP),
            N.USER_HISTORY: lambda: user_history_table(_ns(cutoff), history_len, _FRAME_TIMESTAMP),
        }
        frames = {name: _fetch(con, queries[name]()) for name in names}
    return frames, cutoff, count


def build_features(
    clean_dir: str | Path,
    features_dir: str | Path,
    as_of: pd.Timestamp | str | None = None,
    max_len: int = DEFAULT_MAX_LEN,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    temp_dir: str | Path | None = None,
    part_events: int = DEFAULT_PART_EVENTS,
    history_len: int = DEFAULT_HISTORY_LEN,
) -> FeatureTables:
    """Pipeline step: read the clean dataset directory, build the tables, write them to `features_dir`.

    DuckDB reads the events Parquet and computes each table in parts of about `part_events`
    events: the keys of the table (users for user_stats, user_recent_items and user_history, items for
    item_stats), in order, cut into consecutive runs by their event counts, a key never in two
    parts (a key with more events than `part_events` ends its part: no key after it shares it;
    item_stats computes such an oversize part's windows with running sums and ASOF joins, which
    cost less than RANGE windows over one huge key). The events are
    copied once, clustered by part, so a part reads only its own rows. Each part's rows are
    streamed, in key order, into one Parquet file per table (`<name>.parquet.partial`, renamed
    when whole), ordered by (key, timestamp) as one query over the whole log would write them.
    Memory stays within `memory_limit` (plus the item table, read whole, and one row group)
    whatever the number of events; what does not fit spills to `temp_dir` (default: a folder
    next to the tables, removed after). The returned tables are on disk: their frames are read
    only if asked for. The tables do not depend on `part_events`, but for the last bit of the
    price means: DuckDB adds doubles in an order that follows where a key's rows sit in a window.

    Raises:
        FeatureTableError: a required column is missing, `max_len` or `part_events` is below 1,
            `history_len` is below `max_len`, or no event is at or before `as_of`.
    """
    root = Path(clean_dir)
    events_path = root / S.EVENTS_FILE
    if not events_path.exists():
        raise DataSourceError(f"no {S.EVENTS_FILE} in dataset directory {root}")
    import pyarrow.parquet as pq

    schema = pq.read_schema(events_path)
    columns = schema.names
    _check(columns, max_len, history_len)
    if part_events < 1:
        raise FeatureTableError(f"part_events must be >= 1, got {part_events}")
    manifest_path = root / S.DATASET_MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    items = _read_items(root / S.ITEMS_FILE)
    out = Path(features_dir)
    out.mkdir(parents=True, exist_ok=True)
    price = f"{S.PRICE}" if S.PRICE in columns else "NULL"
    session = f"CAST({S.SESSION_ID} AS VARCHAR)" if S.SESSION_ID in columns else "NULL::VARCHAR"
    source = (
        f"SELECT CAST({S.USER_ID} AS VARCHAR) AS {S.USER_ID}, CAST({S.ITEM_ID} AS VARCHAR) AS {S.ITEM_ID}, "
        f"CAST({S.EVENT_TYPE} AS VARCHAR) AS {S.EVENT_TYPE}, "
        f"{_epoch_ns(schema.field(S.TIMESTAMP).type)} AS t, "
        f"TRY_CAST({price} AS DOUBLE) AS {S.PRICE}, file_row_number AS ord, {session} AS {S.SESSION_ID} "
        f"FROM read_parquet({_literal(events_path)}, file_row_number = true)"
    )
    paths: dict[str, Path] = {}
    rows: dict[str, int] = {}
    with duckdb_connection(memory_limit, temp_dir or out) as con:
        # `ev` stays a view over the file: each table's pass copies it once, clustered by part.
        cutoff, count, several = _load_events(con, source, items, as_of, view=True)
        at = _ns(cutoff)
        by_key = {  # the tables of each key, and the event columns their queries read
            S.USER_ID: (
                [S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, "t", S.PRICE, "ord", "category", S.SESSION_ID],
                {N.USER_STATS: lambda events: user_stats_table(at, events=events),
                 N.USER_RECENT_ITEMS: lambda events: user_recent_items_table(at, max_len, events=events),
                 N.USER_HISTORY: lambda events: user_history_table(at, history_len, events=events)},
            ),
            S.ITEM_ID: (
                [S.ITEM_ID, S.USER_ID, S.EVENT_TYPE, "t", S.PRICE],
                {N.ITEM_STATS: lambda events: item_stats_table(at, several, events=events)},
            ),
        }
        # The queries for a part holding a key bigger than a part, where one's cheaper there.
        oversize_queries = {
            N.ITEM_STATS: lambda events: item_stats_table(at, several, events=events, running=True),
        }
        for key, (event_columns, queries) in by_key.items():
            parts, null_key, oversize = _cluster_by_part(con, key, event_columns, part_events)
            for name, query in queries.items():
                paths[name] = out / N.TABLE_FILES[name]
                rows[name] = _write_parts(con, query, parts, paths[name], () if null_key else (key,),
                                          oversize, oversize_queries.get(name))
            con.execute("DROP TABLE ev_parts")
    tables = FeatureTables(
        as_of=cutoff,
        max_len=max_len,
        history_len=history_len,
        info={"events": count, "source": manifest.get("source", str(root)),
              "snapshot_id": manifest.get("snapshot_id")},
        paths=paths,
        row_counts=rows,
    )
    tables._write_manifest(out)
    return tables


def features_max_len(features_dir: str | Path) -> int | None:
    """The window (`max_len`) the feature tables in `features_dir` were built with, from their
    features.json: how many recent item ids `user_recent_items` keeps per user. None when the
    folder has no manifest or the manifest records no window."""
    return _manifest_length(features_dir, "max_len")


def features_history_len(features_dir: str | Path) -> int | None:
    """How many item ids `user_history` keeps per user in `features_dir` (features.json): the
    longest history serving sends. Tables built before `user_history` existed: their window
    (then `user_recent_items` is the history). None without a manifest or a length."""
    return _manifest_length(features_dir, "history_len") or _manifest_length(features_dir, "max_len")


def _manifest_length(features_dir: str | Path, key: str) -> int | None:
    manifest = Path(features_dir) / FEATURES_MANIFEST
    if not manifest.is_file():
        return None
    try:
        value = json.loads(manifest.read_text()).get(key)
    except (ValueError, AttributeError) as exc:
        raise FeatureTableError(f"feature manifest {manifest} is not a JSON object: {exc}") from exc
    return None if value is None else int(value)


# --- the tables: SQL over the `ev` table (`_load_events`) ---------------------------------------


def user_stats_table(as_of: int, timestamp: str = _FILE_TIMESTAMP, events: str = "ev") -> str:
    """One row per (user, distinct event time) and per user at `as_of` (nanoseconds), from the
    events of `events` (a table, or a subquery with an alias: each of its users' events whole);
    see `names.USER_STATS_FEATURES`.

    Windows are half-open, (t - w, t]. `top_category` is the category the user has met most
    often so far; on a tie the category that reached the count first keeps the lead. So the
    lead only changes at an event that takes some category to a count no category had reached
    before (level k): per user and level, the first event to reach it names the leader from then on.
    """
    counts = ",\n".join(
        f"(count(*) FILTER (WHERE {S.EVENT_TYPE} = '{kind}'))::DOUBLE AS n_{kind}" for kind in S.EVENT_TYPES
    )
    windows = ",\n".join(
        f"CAST(sum(n_{kind}) OVER {_window_name(days)} AS BIGINT) AS {N.EVENT_PLURAL[kind]}_{window}"
        for window, days in N.WINDOWS.items() for kind in S.EVENT_TYPES
    )
    zeros = ", ".join(f"0 AS n_{kind}" for kind in S.EVENT_TYPES)
    return f"""
WITH groups AS (
    SELECT {S.USER_ID}, t, {counts},
        sum(coalesce({S.PRICE}, 0)) AS price_sum, count({S.PRICE})::DOUBLE AS price_n
    FROM {events} GROUP BY {S.USER_ID}, t
),
first_meetings AS (
    SELECT {S.USER_ID}, t, count(*)::DOUBLE AS new_items
    FROM (SELECT {S.USER_ID}, min(t) AS t FROM {events} GROUP BY {S.USER_ID}, {S.ITEM_ID})
    GROUP BY {S.USER_ID}, t
),
met AS (
    SELECT {S.USER_ID}, category, t, ord,
        row_number() OVER (PARTITION BY {S.USER_ID}, category ORDER BY t, ord) AS level
    FROM {events} WHERE category IS NOT NULL AND category <> '{N.UNKNOWN_CATEGORY}'
),
levels AS (
    SELECT {S.USER_ID}, level, arg_min(category, {{'t': t, 'ord': ord}}) AS category, min(t) AS t
    FROM met GROUP BY {S.USER_ID}, level
),
leads AS (
    SELECT {S.USER_ID}, t, arg_max(category, level) AS lead FROM levels GROUP BY {S.USER_ID}, t
),
timeline AS (
    SELECT g.*, coalesce(f.new_items, 0) AS new_items, g.t AS last_event, l.lead
    FROM groups g
    LEFT JOIN first_meetings f USING ({S.USER_ID}, t)
    LEFT JOIN leads l USING ({S.USER_ID}, t)
    UNION ALL BY NAME
    SELECT {S.USER_ID}, {as_of}::BIGINT AS t, {zeros}, 0::DOUBLE AS price_sum, 0 AS price_n, 0 AS new_items,
        NULL::BIGINT AS last_event, NULL::VARCHAR AS lead
    FROM groups GROUP BY {S.USER_ID} HAVING max(t) < {as_of}
)
SELECT {S.USER_ID}, {timestamp},
    {windows},
    CAST(sum(new_items) OVER w_all AS BIGINT) AS {N.DISTINCT_ITEMS},
    CAST(t - max(last_event) OVER w_all AS DOUBLE) / {_NS_PER_DAY} AS {N.DAYS_SINCE_LAST_EVENT},
    sum(price_sum) OVER w_all / nullif(sum(price_n) OVER w_all, 0) AS {N.MEAN_PRICE},
    coalesce(last_value(lead IGNORE NULLS) OVER w_all, '{N.UNKNOWN_CATEGORY}') AS {N.TOP_CATEGORY}
FROM timeline
WINDOW {_windows(S.USER_ID)}
ORDER BY {S.USER_ID}, t
"""


def item_stats_table(as_of: int, several_types: bool, timestamp: str = _FILE_TIMESTAMP,
                     events: str = "ev", running: bool = False) -> str:
    """One row per (item, distinct event time) and per item at `as_of` (nanoseconds), from the
    events of `events` (a table, or a subquery with an alias: each of its items' events whole);
    see `names.ITEM_STATS_FEATURES`.

    `purchase_share` is purchases / events so far, only where the log has more than one
    event type (`several_types`; in a purchase-only or view-only log the share says nothing:
    null there). `price` is the mean event price so far, else the item table's price, else null.

    With `running`, the same table computed another way (`_item_stats_running`), for the
    events of a part holding a key bigger than a part (`build_features`).
    """
    share = "sum(n_purchases) OVER w_all / sum(n_events) OVER w_all" if several_types else "NULL::DOUBLE"
    if running:
        stats = _item_stats_running(share)
    else:
        windows = ",\n".join(
            f"CAST(sum(n_events) OVER {_window_name(days)} AS BIGINT) AS events_{window}"
            for window, days in N.WINDOWS.items()
        )
        stats = f"""stats AS (
    SELECT {S.ITEM_ID}, t,
        {windows},
        CAST(sum(new_users) OVER w_all AS BIGINT) AS {N.ITEM_USERS_ALL},
        CAST({share} AS DOUBLE) AS {N.PURCHASE_SHARE},
        sum(price_sum) OVER w_all / nullif(sum(price_n) OVER w_all, 0) AS event_price
    FROM timeline
    WINDOW {_windows(S.ITEM_ID)}
)"""
    return f"""
WITH groups AS (
    SELECT {S.ITEM_ID}, t, count(*)::DOUBLE AS n_events,
        (count(*) FILTER (WHERE {S.EVENT_TYPE} = '{S.PURCHASE}'))::DOUBLE AS n_purchases,
        sum(coalesce({S.PRICE}, 0)) AS price_sum, count({S.PRICE})::DOUBLE AS price_n
    FROM {events} GROUP BY {S.ITEM_ID}, t
),
first_meetings AS (
    SELECT {S.ITEM_ID}, t, count(*)::DOUBLE AS new_users
    FROM (SELECT {S.ITEM_ID}, min(t) AS t FROM {events} GROUP BY {S.ITEM_ID}, {S.USER_ID})
    GROUP BY {S.ITEM_ID}, t
),
timeline AS (
    SELECT g.*, coalesce(f.new_users, 0) AS new_users
    FROM groups g LEFT JOIN first_meetings f USING ({S.ITEM_ID}, t)
    UNION ALL BY NAME
    SELECT {S.ITEM_ID}, {as_of}::BIGINT AS t, 0 AS n_events, 0 AS n_purchases, 0::DOUBLE AS price_sum,
        0 AS price_n, 0 AS new_users
    FROM groups GROUP BY {S.ITEM_ID} HAVING max(t) < {as_of}
),
{stats}
SELECT s.{S.ITEM_ID}, {timestamp},
    {", ".join(f"s.events_{window}" for window in N.WINDOWS)}, s.{N.ITEM_USERS_ALL}, s.{N.PURCHASE_SHARE},
    coalesce(s.event_price, p.price) AS {N.ITEM_PRICE},
    coalesce(c.category, '{N.UNKNOWN_CATEGORY}') AS {N.ITEM_CATEGORY}
FROM stats s
LEFT JOIN item_prices p USING ({S.ITEM_ID})
LEFT JOIN item_categories c USING ({S.ITEM_ID})
ORDER BY s.{S.ITEM_ID}, t
"""


def _item_stats_running(share: str) -> str:
    """`item_stats_table`'s `stats` CTE, its N.WINDOWS spans computed without a RANGE frame: a
    running sum of events (ROWS UNBOUNDED PRECEDING), less the running sum at the item's last
    time <= t - w (an ASOF join; none: 0). An item's `timeline` times are distinct, so that is
    the sum over (t - w, t], as `_windows`' RANGE frame sums it (exact: integers in DOUBLE).

    DuckDB's RANGE window sums cost ~7x per row over one huge partition (the top Zipf item:
    2.3M of 30M events) what they cost over small ones; this costs a third of that there, but
    more than the RANGE frame over ordinary parts, so `build_features` uses it only for parts
    holding a key bigger than a part."""
    key = S.ITEM_ID
    spans = {window: days for window, days in N.WINDOWS.items() if days is not None}
    windows = ",\n        ".join(
        f"CAST(r.events_run - coalesce(b_{window}.events_run, 0) AS BIGINT) AS events_{window}"
        if window in spans else f"CAST(r.events_run AS BIGINT) AS events_{window}"
        for window in N.WINDOWS
    )
    joins = "\n    ".join(
        f"ASOF LEFT JOIN (SELECT {key}, t, events_run FROM running) b_{window}\n"
        f"        ON r.{key} IS NOT DISTINCT FROM b_{window}.{key} AND r.t - {days * _NS_PER_DAY} >= b_{window}.t"
        for window, days in spans.items()
    )
    return f"""running AS MATERIALIZED (
    SELECT {key}, t, sum(n_events) OVER w_all AS events_run,
        CAST(sum(new_users) OVER w_all AS BIGINT) AS {N.ITEM_USERS_ALL},
        CAST({share} AS DOUBLE) AS {N.PURCHASE_SHARE},
        sum(price_sum) OVER w_all / nullif(sum(price_n) OVER w_all, 0) AS event_price
    FROM timeline
    WINDOW w_all AS (PARTITION BY {key} ORDER BY t ROWS UNBOUNDED PRECEDING)
),
stats AS (
    SELECT r.{key}, r.t,
        {windows},
        r.{N.ITEM_USERS_ALL}, r.{N.PURCHASE_SHARE}, r.event_price
    FROM running r
    {joins}
)"""


def user_recent_items_table(as_of: int, max_len: int, timestamp: str = _FILE_TIMESTAMP,
                            events: str = "ev") -> str:
    """One row per (user, distinct event time) and per user at `as_of` (nanoseconds), from the
    events of `events` (a table, or a subquery with an alias: each of its users' events whole):
    the last `max_len` item ids with timestamp <= the row's, oldest first (events at one time
    keep file order). A window list over the last `max_len` rows, kept at each time's last event."""
    order = f"PARTITION BY {S.USER_ID} ORDER BY t, ord"
    return f"""
WITH recent AS (
    SELECT {S.USER_ID}, t,
        list({S.ITEM_ID}) OVER ({order} ROWS BETWEEN {max_len - 1} PRECEDING AND CURRENT ROW) AS {N.RECENT_ITEMS},
        lead(t) OVER ({order}) AS next_t
    FROM {events}
    QUALIFY next_t IS NULL OR next_t <> t
),
timeline AS (  -- a user's last row is repeated at as_of (the snapshot) unless it is at as_of
    SELECT {S.USER_ID},
        unnest(CASE WHEN next_t IS NULL AND t < {as_of} THEN [t, {as_of}::BIGINT] ELSE [t] END) AS t,
        {N.RECENT_ITEMS}
    FROM recent
)
SELECT {S.USER_ID}, {timestamp}, {N.RECENT_ITEMS} FROM timeline ORDER BY {S.USER_ID}, t
"""


def user_history_table(as_of: int, history_len: int, timestamp: str = _FILE_TIMESTAMP,
                       events: str = "ev") -> str:
    """One row per user at `as_of` (nanoseconds), from the events of `events` (a table, or a
    subquery with an alias: each of its users' events whole): the user's newest `history_len`
    item ids, oldest first (events at one time keep file order), with a flag per item where it
    opens a session, and the newest event's time and session id (for pushes). A snapshot, not a
    row per event as `user_recent_items`: the lists are long, and only their newest value is
    served (pushes keep them current online); nothing reads them as of an earlier time.

    The flags are `shoprec.sequences.session_starts` over the user's whole log, then cut: the
    user's first event opens a session; after it, an event opens one where its session id
    differs from the previous event's, both having one, else where it comes more than
    `SESSION_GAP_NS` after the previous event. The previous event is taken before the cut, so
    the oldest kept item's flag is the one it has in the whole log."""
    order = f"PARTITION BY {S.USER_ID} ORDER BY t, ord"
    return f"""
WITH ordered AS (
    SELECT {S.USER_ID}, {S.ITEM_ID}, t, {S.SESSION_ID},
        row_number() OVER ({order}) AS pos,
        count(*) OVER (PARTITION BY {S.USER_ID}) AS n,
        lag(t) OVER ({order}) AS prev_t,
        lag({S.SESSION_ID}) OVER ({order}) AS prev_session
    FROM {events}
),
newest AS (
    SELECT {S.USER_ID}, {S.ITEM_ID}, t, pos, n, {S.SESSION_ID},
        pos = 1 OR coalesce(
            CASE WHEN {S.SESSION_ID} IS NOT NULL AND prev_session IS NOT NULL
                 THEN {S.SESSION_ID} <> prev_session
                 ELSE t - prev_t > {SESSION_GAP_NS} END, false) AS opens
    FROM ordered WHERE pos > n - {int(history_len)}
),
lists AS (
    SELECT {S.USER_ID},
        list({S.ITEM_ID} ORDER BY pos) AS {N.HISTORY_ITEMS},
        list(opens ORDER BY pos) AS {N.HISTORY_SESSION_STARTS},
        max(t) AS {N.HISTORY_LAST_EVENT_NS},
        coalesce(max({S.SESSION_ID}) FILTER (WHERE pos = n), '') AS {N.HISTORY_LAST_SESSION}
    FROM newest GROUP BY {S.USER_ID}
)
SELECT {S.USER_ID}, {timestamp}, {N.HISTORY_ITEMS}, {N.HISTORY_SESSION_STARTS},
    {N.HISTORY_LAST_EVENT_NS}, {N.HISTORY_LAST_SESSION}
FROM (SELECT *, {as_of}::BIGINT AS t FROM lists)
ORDER BY {S.USER_ID}
"""


# --- DuckDB -------------------------------------------------------------------------------------


@contextmanager
def duckdb_connection(
    memory_limit: str = DEFAULT_MEMORY_LIMIT, spill_near: str | Path | None = None
) -> Iterator["duckdb.DuckDBPyConnection"]:
    """An in-memory DuckDB that spills past `memory_limit` into a temporary folder (made under
    `spill_near`, else the system's temp folder) removed on exit. The tables' builds and the
    store's materialization both run in one of these."""
    import duckdb

    if spill_near is not None:
        Path(spill_near).mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(prefix=".duckdb-spill-", dir=spill_near))
    try:
        con = duckdb.connect(
            ":memory:",
            config={
                "memory_limit": memory_limit,
                "temp_directory": str(spill),
                # Kept on: with it off, DuckDB 2.0's Arrow fetch (to_arrow_table) returns an
                # ORDER BY's rows out of order. Every output here has its ORDER BY.
                "preserve_insertion_order": True,
            },
        )
        try:
            yield con
        finally:
            con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _load_events(
    con: "duckdb.DuckDBPyConnection",
    source: str,
    items: pd.DataFrame | None,
    as_of: pd.Timestamp | str | None,
    view: bool = False,
) -> tuple[pd.Timestamp, int, bool]:
    """Create the item lookups and `ev` (the events at or before the cutoff, each with its item's
    category) from `source`, a query with user_id, item_id, event_type, t, price, ord and
    session_id (text, null where an event has none): a table, or with `view` a view that reads
    `source` again at each use.
    Returns (cutoff, events kept, whether the kept events have several event types)."""
    _item_lookup(con, "item_categories", items, S.CATEGORY, "VARCHAR")
    _item_lookup(con, "item_prices", items, S.PRICE, "DOUBLE")
    if as_of is not None:
        cutoff = _utc(as_of)
    else:
        last = _one(con, f"SELECT max(t) FROM ({source})")
        if last is None or last[0] is None:
            raise FeatureTableError(
                "no events at or before as_of=NaT (no event has a time): nothing to build features from"
            )
        cutoff = pd.Timestamp(int(last[0]), unit="ns", tz="UTC")
    con.execute(
        f"""
        CREATE TEMP {"VIEW" if view else "TABLE"} ev AS
        SELECT e.{S.USER_ID}, e.{S.ITEM_ID}, e.{S.EVENT_TYPE}, e.t,
            CASE WHEN isnan(e.{S.PRICE}) THEN NULL ELSE e.{S.PRICE} END AS {S.PRICE},
            e.ord, c.category, e.{S.SESSION_ID}
        FROM ({source}) e LEFT JOIN item_categories c USING ({S.ITEM_ID})
        WHERE e.t <= {_ns(cutoff)}
        """
    )
    count, types = _one(con, f"SELECT count(*), count(DISTINCT {S.EVENT_TYPE}) FROM ev")
    if not count:
        raise FeatureTableError(f"no events at or before as_of={cutoff}: nothing to build features from")
    return cutoff, int(count), int(types) > 1


def _item_lookup(con: "duckdb.DuckDBPyConnection", table: str, items: pd.DataFrame | None,
                 column: str, sql_type: str) -> None:
    """`table` (item_id, <category|price>): each item's last known value of `column`."""
    con.execute(f"CREATE TEMP TABLE {table} ({S.ITEM_ID} VARCHAR, {column} {sql_type})")
    if items is None or column not in items or S.ITEM_ID not in items:
        return
    known = items[[S.ITEM_ID, column]].dropna().drop_duplicates(S.ITEM_ID, keep="last")
    values = known[column].astype(str) if sql_type == "VARCHAR" else known[column].astype("float64")
    lookup = pd.DataFrame({S.ITEM_ID: known[S.ITEM_ID].astype(str).to_numpy(), column: values.to_numpy()})
    lookup = lookup.drop_duplicates(S.ITEM_ID, keep="last")
    if not lookup.empty:
        con.register("_lookup_frame", lookup)
        con.execute(f"INSERT INTO {table} SELECT {S.ITEM_ID}, {column} FROM _lookup_frame")
        con.unregister("_lookup_frame")


def _cluster_by_part(
    con: "duckdb.DuckDBPyConnection", key: str, columns: list[str], part_events: int
) -> tuple[list[int], bool, frozenset[int]]:
    """Cut the keys of `ev` (in their ORDER BY order) into parts of about `part_events` events:
    a key goes to the part numbered (events of the keys before it) // part_events, so a part is
    a run of consecutive keys and a key is never in two parts; a key bigger than a part is the
    last key of its part (keys before it may share the part, none after it). Copies `columns` of
    `ev` once into `ev_parts`, with the part number, sorted by it: a part's scan (`WHERE part = p`)
    skips the other parts' row groups by their min/max part (DuckDB's zone maps), so the parts
    together read the events once, not once per part. Returns the part numbers in key order,
    whether a key is null, and the oversize parts: those holding a key with more than
    `part_events` events."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE key_parts AS
        SELECT {key}, n, CAST((sum(n) OVER (ORDER BY {key} ROWS UNBOUNDED PRECEDING) - n) // {int(part_events)}
            AS BIGINT) AS part
        FROM (SELECT {key}, count(*) AS n FROM ev GROUP BY {key})
        """
    )
    selected = ", ".join(f"e.{column}" for column in columns)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE ev_parts AS
        SELECT k.part, {selected}
        FROM ev e JOIN key_parts k ON e.{key} IS NOT DISTINCT FROM k.{key}
        ORDER BY k.part
        """
    )
    parts = [int(row[0]) for row in con.execute("SELECT DISTINCT part FROM key_parts ORDER BY part").fetchall()]
    null_key = _one(con, f"SELECT count(*) FROM key_parts WHERE {key} IS NULL")
    oversize = frozenset(
        int(row[0]) for row in con.execute(f"SELECT DISTINCT part FROM key_parts WHERE n > {int(part_events)}").fetchall()
    )
    con.execute("DROP TABLE key_parts")
    return parts, bool(null_key and null_key[0]), oversize


def _write_parts(
    con: "duckdb.DuckDBPyConnection", query: Callable[[str], str], parts: list[int], path: Path,
    required: tuple[str, ...] = (), oversize: Collection[int] = (),
    oversize_query: Callable[[str], str] | None = None,
) -> int:
    """Run `query(events)` over each part of `ev_parts` in turn and stream the rows, part after
    part, into the Parquet file `path` (written as `<path>.partial`, renamed when whole: a reader
    never sees half a file). Returns the rows written. A part in `oversize` (one holding a key
    bigger than a part) runs `oversize_query` instead where one is given: the same rows, computed
    in a way that is cheaper over one huge key.

    The file reads back as DuckDB's COPY of the query over the whole log did: the same Arrow
    schema (timestamps UTC microseconds, no Arrow schema stored so readers go by the Parquet
    types, the `required` columns (the key, where no key is null, which COPY found from DuckDB's
    statistics) not nullable), rows and order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partial = path.with_suffix(".parquet.partial")
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    pending: list[pa.RecordBatch] = []
    pending_rows = pending_bytes = written = 0

    def flush() -> None:
        nonlocal pending, pending_rows, pending_bytes
        if pending:
            assert writer is not None and schema is not None
            writer.write_table(pa.Table.from_batches(pending).cast(schema), row_group_size=max(pending_rows, 1))
        pending, pending_rows, pending_bytes = [], 0, 0

    try:
        for part in parts:
            events = f"(SELECT * FROM ev_parts WHERE part = {part}) ev"
            chosen = oversize_query if oversize_query is not None and part in oversize else query
            reader = con.sql(chosen(events)).to_arrow_reader(_FETCH_ROWS)
            if writer is None:
                schema = _file_schema(reader.schema, required)
                writer = pq.ParquetWriter(partial, schema, store_schema=False)
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                pending.append(batch)
                pending_rows += batch.num_rows
                pending_bytes += batch.nbytes
                written += batch.num_rows
                if pending_rows >= _ROW_GROUP_ROWS or pending_bytes >= _ROW_GROUP_BYTES:
                    flush()
        flush()
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise FeatureTableError(f"no part to write {path.name} from")  # `_load_events` made sure of events
    partial.replace(path)
    return written


def _file_schema(schema: "pa.Schema", required: tuple[str, ...]) -> "pa.Schema":
    """The schema a table's file is written with: DuckDB's Arrow types, timestamps in "UTC" (DuckDB
    names its session's zone, e.g. "Etc/UTC"), lists with Arrow's default item name, the
    `required` columns not nullable."""
    import pyarrow as pa

    def typed(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            return pa.timestamp(kind.unit, tz="UTC")
        if pa.types.is_list(kind):
            return pa.list_(typed(kind.value_type))
        return kind

    return pa.schema(
        [pa.field(field.name, typed(field.type), field.nullable and field.name not in required) for field in schema]
    )


def _one(con: "duckdb.DuckDBPyConnection", query: str) -> tuple | None:
    """The first row of a statement's answer, the answer read to its end (DuckDB wants that
    before the connection's next statement)."""
    rows = con.execute(query).fetchall()
    return rows[0] if rows else None


def _read_items(path: Path) -> pd.DataFrame | None:
    """The item columns the tables use (item_id, category, price), or None without an item table."""
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    present = [c for c in (S.ITEM_ID, S.CATEGORY, S.PRICE) if c in pq.read_schema(path).names]
    return pd.read_parquet(path, columns=present)


def _fetch(con: "duckdb.DuckDBPyConnection", query: str) -> pd.DataFrame:
    """A query's result as a frame: text as str objects, event_timestamp as datetime64[ns, UTC],
    the list features (N.LIST_FEATURES) as Python lists (of str, or of bool for the flags)."""
    table = con.sql(query).to_arrow_table()
    lists = set(N.LIST_FEATURES) & set(table.column_names)
    frame = table.drop_columns(list(lists)).to_pandas()
    for name in lists:
        frame[name] = pd.Series(table.column(name).to_pylist(), dtype=object)
    frame = frame[table.column_names]
    frame[N.FEATURE_TIMESTAMP] = pd.to_datetime(frame[N.FEATURE_TIMESTAMP], unit="ns", utc=True)
    return frame


def _read_table(path: Path) -> pd.DataFrame:
    """A table written by `build_features`, as `build_feature_tables` returns it."""
    frame = pd.read_parquet(path)
    frame[N.FEATURE_TIMESTAMP] = pd.to_datetime(frame[N.FEATURE_TIMESTAMP], utc=True).dt.as_unit("ns")
    for name in N.LIST_FEATURES:
        if name in frame:
            # tolist(): Python str / bool items, as `_fetch` gives (list() would keep numpy.bool_).
            frame[name] = [v.tolist() if isinstance(v, np.ndarray) else list(v) for v in frame[name]]
    return frame


def _windows(key: str) -> str:
    """The named windows of the stats tables: all time and each N.WINDOWS span, (t - w, t].

    The columns the stats tables sum over them are DOUBLE, counts included (cast where they are
    counted, summed exactly as integers below 2**53, cast back to BIGINT): DuckDB sums BIGINT
    into HUGEINT, and its HUGEINT window sums cost several times more per row over one large
    partition (the top Zipf item's 2.3M events at 30M: 57 -> 22 CPU s for its part)."""
    named = [f"w_all AS (PARTITION BY {key} ORDER BY t ROWS UNBOUNDED PRECEDING)"]
    for days in N.WINDOWS.values():
        if days is not None:
            # RANGE over integer nanoseconds: t - w + 1 ns .. t, i.e. the half-open (t - w, t].
            named.append(
                f"{_window_name(days)} AS (PARTITION BY {key} ORDER BY t "
                f"RANGE BETWEEN {days * _NS_PER_DAY - 1} PRECEDING AND CURRENT ROW)"
            )
    return ",\n       ".join(named)


def _window_name(days: int | None) -> str:
    return "w_all" if days is None else f"w_{days}d"


def _check(columns: list[str], max_len: int, history_len: int) -> None:
    missing = [c for c in S.EVENT_REQUIRED if c not in columns]
    if missing:
        raise FeatureTableError(f"events table lacks column(s) {missing}; has {list(columns)}")
    if max_len < 1:
        raise FeatureTableError(f"max_len must be >= 1, got {max_len}")
    if history_len < max_len:
        # Serving sends the model the user's history, whose tail is the window the model reads.
        raise FeatureTableError(f"history_len must be at least max_len={max_len}, got {history_len}")


def _literal(path: str | Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _ns(stamp: pd.Timestamp) -> int:
    """A UTC time as nanoseconds since the epoch."""
    return int(stamp.as_unit("ns").value)


def _epoch_ns(column_type: "pa.DataType") -> str:
    """SQL for the events file's timestamp column as nanoseconds since the epoch: a timestamp
    column as it is (a naive one is taken as UTC), anything else (text) cast to TIMESTAMPTZ."""
    import pyarrow as pa

    if pa.types.is_timestamp(column_type):
        return f"epoch_ns({S.TIMESTAMP})"
    return f"epoch_ns(CAST({S.TIMESTAMP} AS TIMESTAMPTZ))"


def _session_text(column: pd.Series) -> np.ndarray:
    """Session ids as text (object array), None where missing: ids are compared as text, and
    whatever pandas counts as missing (None, NaN, NaT, pd.NA) is no session id, as
    `sequences.session_starts`' factorize counts it."""
    text = column.astype(str).to_numpy(dtype=object)
    text[np.asarray(pd.isna(column))] = None
    return text


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _nanoseconds(column: pd.Series) -> pd.arrays.IntegerArray:
    """Times (any pandas-readable form, naive = UTC) as nanoseconds since the epoch, null for NaT."""
    times = pd.to_datetime(_utc_series(column).to_numpy(), utc=True).as_unit("ns")
    values = pd.array(times.asi8, dtype="Int64")
    values[np.asarray(times.isna())] = pd.NA
    return values


def _utc_series(column: pd.Series) -> pd.Series:
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC")
    return pd.to_datetime(column, utc=True)
