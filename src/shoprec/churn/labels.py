"""Churn labels, point in time: who was active by a snapshot and did not buy in the N days after.

Nothing here reads the clock: every time comes from the events or from the caller, so the same
events always give the same labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.errors import DataSourceError

DEFAULT_HORIZON_DAYS = 30
DEFAULT_SNAPSHOTS = 8
CHURNED = "churned"  # the label column: 1 = no purchase in (s, s + N]


def utc(when: pd.Timestamp | str) -> pd.Timestamp:
    """A time as a UTC Timestamp (a naive one is taken as UTC)."""
    stamp = pd.Timestamp(when)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _times(events: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(events[S.TIMESTAMP], utc=True)


def snapshot_times(
    events: pd.DataFrame,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    count: int = DEFAULT_SNAPSHOTS,
    step_days: int | None = None,
    end: pd.Timestamp | str | None = None,
) -> list[pd.Timestamp]:
    """Snapshot times, oldest first: the latest is `end - horizon_days` (its label window ends
    where the data ends), then every `step_days` (default: the horizon, so label windows do not
    overlap) further back, while at least one event lies at or before it.

    Args:
        end: the end of the observed data (default: the last event's time). Whole seconds.
    """
    if horizon_days <= 0 or count <= 0:
        raise ValueError(f"horizon_days and count must be positive, got {horizon_days}, {count}")
    times = _times(events)
    if times.empty:
        raise DataSourceError("no events: no churn snapshot can be taken")
    stop = times.max() if end is None else utc(end)
    step = pd.Timedelta(days=step_days or horizon_days)
    latest = (stop - pd.Timedelta(days=horizon_days)).floor("s")
    first = times.min()
    found = [latest - k * step for k in range(count)]
    found = [s for s in found if s >= first]
    if not found:
        raise DataSourceError(f"the events span {first} .. {stop}: too short for a {horizon_days}-day "
                              "churn horizon")
    return sorted(found)


def churn_labels(
    events: pd.DataFrame,
    snapshots: Sequence[pd.Timestamp],
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    end: pd.Timestamp | None = None,
    return_events: Sequence[str] = (S.PURCHASE,),
) -> pd.DataFrame:
    """One row per (user, snapshot) for every user with an event at or before the snapshot:
    user_id, timestamp (the snapshot) and `churned` (1 when no `return_events` event falls in
    (s, s + horizon]).

    Raises:
        DataSourceError: a snapshot's label window reaches past `end` (default: the last event),
            where the answer is not yet known (a censored window would count as churn).
    """
    times = _times(events)
    stop = times.max() if end is None else utc(end)
    horizon = pd.Timedelta(days=horizon_days)
    users = events[S.USER_ID].astype(str).to_numpy()
    is_return = events[S.EVENT_TYPE].astype(str).isin(list(return_events)).to_numpy()
    t = times.dt.as_unit("ns").astype("int64").to_numpy()  # ns since the epoch: plain int compares
    frames = []
    for s in snapshots:
        s = utc(s)
        if s + horizon > stop:
            raise DataSourceError(f"snapshot {s} + {horizon_days} days reaches past the data's end {stop}: "
                                  "its label is not known yet")
        at, until = s.as_unit("ns").value, (s + horizon).as_unit("ns").value
        active = np.unique(users[t <= at])
        window = (t > at) & (t <= until) & is_return
        returned = set(np.unique(users[window]))
        churned = np.fromiter((u not in returned for u in active), dtype=np.int64, count=len(active))
        frames.append(pd.DataFrame({S.USER_ID: active, S.TIMESTAMP: s, CHURNED: churned}))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {S.USER_ID: [], S.TIMESTAMP: [], CHURNED: []})
    frame[S.TIMESTAMP] = pd.to_datetime(frame[S.TIMESTAMP], utc=True).dt.as_unit("ns")
    return frame.sort_values([S.TIMESTAMP, S.USER_ID], ignore_index=True)
