"""The item catalogue serving needs: metadata (title, category, price) and popularity, for
answers people can read and for cold-start fallbacks.

Built once at server start from the feature tables (`item_stats.parquet`: the latest row per
item holds its category, price and window popularity as of the build) plus, optionally, an
items table with titles (the `items.parquet` of a data set). Nothing is read per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.errors import DataSourceError
from shoprec.features import names as N

TITLE = "title"
TRENDING_WINDOW = "events_7d"  # "trending": the shortest popularity window the tables keep
POPULAR_WINDOW = "events_all"


@dataclass
class ItemCatalog:
    """Per-item metadata and precomputed popularity rankings (best first, ties by item id)."""

    frame: pd.DataFrame  # index item_id (text); columns title, category, price, popular, trending
    _by_category: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _trending: list[str] = field(default_factory=list, repr=False)
    _meta: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        frame = self.frame
        for column in (TITLE, S.CATEGORY, S.PRICE, "popular", "trending"):
            if column not in frame:
                frame[column] = np.nan if column in (S.PRICE, "popular", "trending") else None
        frame["popular"] = frame["popular"].fillna(0.0).astype(float)
        frame["trending"] = frame["trending"].fillna(0.0).astype(float)
        ids = frame.index.to_numpy(dtype=object)
        # Trending: most events in the latest window, then all-time popularity, then id.
        order = np.lexsort((ids, -frame["popular"].to_numpy(), -frame["trending"].to_numpy()))
        self._trending = [str(i) for i in ids[order]]
        popular_order = np.lexsort((ids, -frame["popular"].to_numpy()))
        categories = frame[S.CATEGORY].to_numpy(dtype=object)
        for position in popular_order:
            category = categories[position]
            if _known(category):
                self._by_category.setdefault(str(category), []).append(str(ids[position]))
        self._meta = {str(i): _metadata(row) for i, row in zip(ids, frame.to_dict("records"))}

    def __len__(self) -> int:
        return len(self.frame)

    def metadata(self, item_id: str) -> dict[str, Any]:
        """The known fields of an item (title, category, price); {} for an unknown item."""
        return self._meta.get(item_id, {})

    def category_of(self, item_id: str) -> str | None:
        return self._meta.get(item_id, {}).get(S.CATEGORY)

    def items_in(self, category: str) -> list[str]:
        """Items of `category`, most popular first ([] for an unknown category)."""
        return self._by_category.get(category, [])

    def popularity(self, item_id: str, window: str = "popular") -> float:
        return float(self.frame.at[item_id, window]) if item_id in self._meta else 0.0

    def trending(self) -> list[str]:
        """Every item, most events in the latest window first."""
        return self._trending


def _known(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return str(value) not in ("", N.UNKNOWN_CATEGORY)


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if _known(row.get(TITLE)):
        out[TITLE] = str(row[TITLE])
    if _known(row.get(S.CATEGORY)):
        out[S.CATEGORY] = str(row[S.CATEGORY])
    price = row.get(S.PRICE)
    if price is not None and not (isinstance(price, float) and math.isnan(price)):
        out[S.PRICE] = float(price)
    return out


def load_catalog(features_dir: str | Path | None = None, items_path: str | Path | None = None) -> ItemCatalog:
    """The catalogue from `<features_dir>/item_stats.parquet` (latest row per item) and/or an
    items table (`item_id` plus `title` / `category` / `price` columns, Parquet or CSV).

    Raises DataSourceError when a named source is missing or lacks `item_id`."""
    parts: list[pd.DataFrame] = []
    if features_dir is not None:
        path = Path(features_dir) / N.TABLE_FILES[N.ITEM_STATS]
        if not path.is_file():
            raise DataSourceError(f"item catalogue: {path} not found (build the features first)")
        stats = pd.read_parquet(path)
        stats = stats.sort_values(N.FEATURE_TIMESTAMP, kind="stable").drop_duplicates(S.ITEM_ID, keep="last")
        stats = stats.rename(columns={N.ITEM_CATEGORY: S.CATEGORY, N.ITEM_PRICE: S.PRICE,
                                      POPULAR_WINDOW: "popular", TRENDING_WINDOW: "trending"})
        keep = [c for c in (S.ITEM_ID, S.CATEGORY, S.PRICE, "popular", "trending") if c in stats]
        parts.append(stats[keep])
    if items_path is not None:
        path = Path(items_path)
        if not path.is_file():
            raise DataSourceError(f"item catalogue: items file {path} not found")
        items = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if S.ITEM_ID not in items:
            raise DataSourceError(f"items file {path} has no '{S.ITEM_ID}' column: {list(items.columns)}")
        parts.append(items[[c for c in (S.ITEM_ID, TITLE, S.CATEGORY, S.PRICE) if c in items]])
    frame = pd.DataFrame(columns=[S.ITEM_ID])
    for part in parts:
        part = part.assign(**{S.ITEM_ID: part[S.ITEM_ID].astype(str)}).drop_duplicates(S.ITEM_ID, keep="last")
        if frame.empty:
            frame = part
            continue
        # The feature tables win for category and price (what serving saw); titles come from items.
        frame = frame.merge(part, on=S.ITEM_ID, how="outer", suffixes=("", "_items"))
        for column in (S.CATEGORY, S.PRICE, TITLE):
            extra = f"{column}_items"
            if extra in frame:
                frame[column] = frame[column].where(frame[column].map(_known), frame[extra]) \
                    if column in frame else frame[extra]
                frame = frame.drop(columns=extra)
    return ItemCatalog(frame.set_index(S.ITEM_ID))
