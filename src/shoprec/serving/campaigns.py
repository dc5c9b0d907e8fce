"""Campaigns: sponsored candidates a server holds, so a request can name a campaign
(`"campaign": "spring"`) instead of listing its paid items.

A campaigns table is a Parquet or CSV file, one row per (campaign, item):

    campaign_id  item_id  bid   start (optional)       end (optional)
    spring       50       1.5   2026-03-01T00:00:00Z   2026-06-01T00:00:00Z
    spring       172      0.8
    clearance    181      0.4

`start` / `end` bound when the row is active (start <= now < end, UTC; empty: open); a campaign
whose rows are all inactive places nothing, and is still a known name. The table is a local path
or an object-store URL (`s3://bucket/campaigns.parquet`, read through fsspec/s3fs as the registry
reads it: credentials and endpoint from the environment, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...),
so a predictor on a cluster reads the same table the shop writes. The predictor loads it once
at start (`--campaigns PATH|URL`, or `$SHOPREC_CAMPAIGNS`) and places the active rows exactly as the
request's own `sponsored` candidates (same floor, same slots). Items the served model does not
know are left out when the campaign is placed, never a client error: a campaign outlives model
versions. Every fault of the file is found at load (DataSourceError naming the row), so a bad
table stops the server's start instead of failing requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import fsspec
import pandas as pd

from shoprec import schema as S
from shoprec.errors import DataSourceError
from shoprec.ranking.sponsored import Candidate

CAMPAIGNS_ENV = "SHOPREC_CAMPAIGNS"  # the table's path or URL when the server is given no --campaigns
CAMPAIGN_ID = "campaign_id"
BID = "bid"
START = "start"
END = "end"
REQUIRED = (CAMPAIGN_ID, S.ITEM_ID, BID)
MAX_CAMPAIGN_ITEMS = 100  # as many as one request's `sponsored` list may hold (serving.sponsored)
MAX_NAME_CHARS = 256


@dataclass(frozen=True)
class CampaignItem:
    """One row: a paid item, its bid and the UTC window it is active in (None: open)."""

    item_id: str
    bid: float
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    def active(self, at: pd.Timestamp) -> bool:
        return (self.start is None or self.start <= at) and (self.end is None or at < self.end)


class Campaigns:
    """The campaigns a server knows, by name."""

    def __init__(self, campaigns: Mapping[str, Sequence[CampaignItem]], source: str = "") -> None:
        self._campaigns = {name: tuple(items) for name, items in campaigns.items()}
        self.source = source

    @property
    def names(self) -> list[str]:
        return sorted(self._campaigns)

    def __contains__(self, name: object) -> bool:
        return name in self._campaigns

    def __len__(self) -> int:
        return len(self._campaigns)

    def items(self, name: str) -> tuple[CampaignItem, ...]:
        """Every row of a campaign, active or not; KeyError for an unknown name."""
        return self._campaigns[name]

    def candidates(self, name: str, at: datetime | None = None) -> tuple[Candidate, ...]:
        """The campaign's rows active at `at` (default: now) as sponsored candidates, in the
        table's order; KeyError for an unknown name (the caller names the field)."""
        moment = pd.Timestamp(at or datetime.now(timezone.utc))
        moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
        return tuple(Candidate(i.item_id, i.bid) for i in self._campaigns[name] if i.active(moment))


def load_campaigns(source: str | Path) -> Campaigns:
    """Read and check a campaigns table (`.parquet`, or `.csv`) at a local path or an fsspec
    URL (s3://...); DataSourceError naming the table and the fault: absent or unreadable
    (an object store that refuses or cannot be reached, with its reason), a missing column,
    an empty id, a bid that is not a finite number >= 0, an unparseable or reversed window, an
    item given twice in one campaign, more than MAX_CAMPAIGN_ITEMS items in one campaign."""
    name = str(source)
    try:
        fs, path = fsspec.core.url_to_fs(name)
        exists = fs.isfile(path)
    except Exception as exc:  # an unknown protocol, a store that refuses: the start stops, with the reason
        raise DataSourceError(f"campaigns table {name} could not be reached: "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    if not exists:
        raise DataSourceError(f"campaigns table {name} does not exist")
    try:
        with fs.open(path, "rb") as handle:
            if PurePosixPath(path).suffix.lower() == ".csv":
                frame = pd.read_csv(handle, dtype={CAMPAIGN_ID: str, S.ITEM_ID: str}, keep_default_na=False,
                                    na_values={BID: [""], START: [""], END: [""]})
            else:
                frame = pd.read_parquet(handle)
    except Exception as exc:  # an unreadable file stops the start, with its reason
        raise DataSourceError(f"campaigns table {name} could not be read: {type(exc).__name__}: {exc}") from exc
    return campaigns_from_frame(frame, name)


def campaigns_from_frame(frame: pd.DataFrame, source: str = "the campaigns table") -> Campaigns:
    """`load_campaigns` on a frame already read."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataSourceError(f"{source} lacks column(s) {missing}; it needs {list(REQUIRED)} "
                              f"and may have {START!r} / {END!r} (UTC)")
    windows = {}
    for column in (START, END):
        if column in frame.columns:
            try:
                windows[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
            except (ValueError, TypeError) as exc:
                raise DataSourceError(f"{source}: column {column!r} holds a value that is not a "
                                      f"timestamp: {str(exc)[:200]}") from exc
    campaigns: dict[str, list[CampaignItem]] = {}
    for row, (name, item, bid) in enumerate(zip(frame[CAMPAIGN_ID], frame[S.ITEM_ID], frame[BID])):
        where = f"{source}, row {row + 2 if source.endswith('.csv') else row}"
        name, item = _text(name), _text(item)
        if not name or len(name) > MAX_NAME_CHARS:
            raise DataSourceError(f"{where}: {CAMPAIGN_ID} must be a non-empty name of at most "
                                  f"{MAX_NAME_CHARS} characters")
        if not item:
            raise DataSourceError(f"{where}: {S.ITEM_ID} is empty")
        try:
            value = float(bid)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(bid, bool) or not math.isfinite(value) or value < 0:
            raise DataSourceError(f"{where}: bid must be a finite number >= 0, not {str(bid)[:40]!r}")
        start, end = (_stamp(windows[c].iloc[row]) if c in windows else None for c in (START, END))
        if start is not None and end is not None and end <= start:
            raise DataSourceError(f"{where}: end ({end}) is not after start ({start})")
        rows = campaigns.setdefault(name, [])
        if any(r.item_id == item for r in rows):
            raise DataSourceError(f"{where}: item {item!r} is given twice in campaign {name!r}")
        if len(rows) == MAX_CAMPAIGN_ITEMS:
            raise DataSourceError(f"{where}: campaign {name!r} holds more than {MAX_CAMPAIGN_ITEMS} "
                                  f"items (one request may place at most that many candidates)")
        rows.append(CampaignItem(item, value, start, end))
    return Campaigns(campaigns, source)


def _text(value: object) -> str:
    """An id cell as text: integers stay integers ("50", not "50.0"); missing is ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _stamp(value: object) -> pd.Timestamp | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value)
