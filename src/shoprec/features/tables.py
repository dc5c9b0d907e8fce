"""Feature tables: clean events -> Parquet tables that Feast serves (offline and online).

Every table is a history, not a snapshot: a row per entity for each moment its values
changed (each distinct event time), plus one row per entity at the build time `as_of`, so
that window counts and recency are current there. A row timestamped `t` is computed from
events with timestamp <= t only; that is what makes Feast's point-in-time join honest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.config import DEFAULT_MAX_LEN
from shoprec.errors import FeatureTableError
from shoprec.features import names as N
from shoprec.home import FEATURES_MANIFEST

_DAY = pd.Timedelta(days=1)


@dataclass
class FeatureTables:
    """The three feature tables as built as of one time (each keyed by entity and timestamp)."""

    user_stats: pd.DataFrame
    item_stats: pd.DataFrame
    user_recent_items: pd.DataFrame
    as_of: pd.Timestamp
    max_len: int = DEFAULT_MAX_LEN
    info: dict[str, object] = field(default_factory=dict)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {
            N.USER_STATS: self.user_stats,
            N.ITEM_STATS: self.item_stats,
            N.USER_RECENT_ITEMS: self.user_recent_items,
        }

    def write(self, directory: str | Path) -> dict[str, Path]:
        """Write each table as `<name>.parquet` plus `features.json`; returns the table paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name, frame in self.frames().items():
            path = out / N.TABLE_FILES[name]
            # Write then rename: a reader (materialization) never sees half a file.
            partial = path.with_suffix(".parquet.partial")
            frame.to_parquet(partial, index=False)
            partial.replace(path)
            paths[name] = path
        manifest = {
            "as_of": self.as_of.isoformat(),
            "max_len": self.max_len,
            "rows": {name: len(frame) for name, frame in self.frames().items()},
            **self.info,
        }
        (out / FEATURES_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        return paths


def build_feature_tables(
    events: pd.DataFrame,
    items: pd.DataFrame | None = None,
    as_of: pd.Timestamp | str | None = None,
    max_len: int = DEFAULT_MAX_LEN,
) -> FeatureTables:
    """Build `user_stats`, `item_stats` and `user_recent_items` from clean events as of `as_of`.

    Args:
        events: clean events (user_id, item_id, event_type, timestamp; price optional).
        items: the item table; its `category` (and `price`) feed the category features.
        as_of: the build time: events after it are ignored and every entity gets a row at it.
            Default: the last event's time.
        max_len: how many recent item ids `user_recent_items` keeps.

    Raises:
        FeatureTableError: a required column is missing, or no event is at or before `as_of`.
    """
    missing = [c for c in S.EVENT_REQUIRED if c not in events.columns]
    if missing:
        raise FeatureTableError(f"events table lacks column(s) {missing}; has {list(events.columns)}")
    if max_len < 1:
        raise FeatureTableError(f"max_len must be >= 1, got {max_len}")
    ev = _prepared(events, items)
    cutoff = _utc(as_of) if as_of is not None else ev[S.TIMESTAMP].max()
    ev = ev[ev[S.TIMESTAMP] <= cutoff].reset_index(drop=True)
    if ev.empty:
        raise FeatureTableError(f"no events at or before as_of={cutoff}: nothing to build features from")
    return FeatureTables(
        user_stats=user_stats_table(ev, cutoff),
        item_stats=item_stats_table(ev, items, cutoff),
        user_recent_items=user_recent_items_table(ev, cutoff, max_len),
        as_of=cutoff,
        max_len=max_len,
        info={"events": len(ev)},
    )


def build_features(
    clean_dir: str | Path,
    features_dir: str | Path,
    as_of: pd.Timestamp | str | None = None,
    max_len: int = DEFAULT_MAX_LEN,
) -> FeatureTables:
    """Pipeline step: read the clean dataset directory, build the tables, write them to `features_dir`."""
    data = EventData.read(clean_dir)
    tables = build_feature_tables(data.events, data.items, as_of, max_len)
    tables.info.update({"source": data.source, "snapshot_id": data.info.get("snapshot_id")})
    tables.write(features_dir)
    return tables


def features_max_len(features_dir: str | Path) -> int | None:
    """The window (`max_len`) the feature tables in `features_dir` were built with, from their
    features.json: how many recent item ids `user_recent_items` keeps per user. None when the
    folder has no manifest or the manifest records no window."""
    manifest = Path(features_dir) / FEATURES_MANIFEST
    if not manifest.is_file():
        return None
    try:
        value = json.loads(manifest.read_text()).get("max_len")
    except (ValueError, AttributeError) as exc:
        raise FeatureTableError(f"feature manifest {manifest} is not a JSON object: {exc}") from exc
    return None if value is None else int(value)


# --- the tables -----------------------------------------------------------------------------


def user_stats_table(ev: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
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


def item_stats_table(ev: pd.DataFrame, items: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.DataFrame:
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


def user_recent_items_table(ev: pd.DataFrame, as_of: pd.Timestamp, max_len: int) -> pd.DataFrame:
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


# --- helpers --------------------------------------------------------------------------------


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


def _utc_series(column: pd.Series) -> pd.Series:
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC")
    return pd.to_datetime(column, utc=True)
