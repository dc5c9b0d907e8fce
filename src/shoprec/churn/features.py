"""Churn features: `user_stats` as it stood at each snapshot, read back through Feast.

The platform's `user_stats` table is a history with a row per user at each event time and one
at the build's `as_of`; only at those rows are the window counts and `days_since_last_event`
current. A churn snapshot falls between events, so the churn home's table gains, for every
snapshot `s`, each active user's row computed as of `s` (by the same SQL, from events <= s
only). Feast's historical retrieval at `s` then returns exactly the values a server would
have read online at `s`: the model never sees a stale window count nor a later event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from shoprec import schema as S
from shoprec.errors import FeatureStoreError
from shoprec.features import names as N
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import apply_definitions
from shoprec.features.tables import FeatureTables, build_feature_tables, build_table_frames
from shoprec.home import Home

if TYPE_CHECKING:
    from feast import FeatureStore

# The model's inputs, all from the user_stats view: activity counts by type and window, how many
# distinct items, and recency. `mean_price` is left out (most logs carry no price: a constant
# says nothing) and so is `top_category` (a string with an open vocabulary).
CHURN_FEATURES: tuple[str, ...] = (*N.USER_COUNT_FEATURES, N.DISTINCT_ITEMS, N.DAYS_SINCE_LAST_EVENT)
FEATURE_VIEW = N.USER_STATS
CHURN_HOME_DIR = "churn"  # the churn Feast home inside a shoprec home: <home>/churn/features


def feature_refs(features: Sequence[str] = CHURN_FEATURES) -> list[str]:
    """The features as Feast "view:feature" references."""
    return [f"{FEATURE_VIEW}:{name}" for name in features]


def churn_home(home: Home | str) -> Home:
    """Where a shoprec home keeps the churn training store (its own Feast registry and tables)."""
    return Home(Home.at(home).root / CHURN_HOME_DIR)


def snapshot_user_stats(
    events: pd.DataFrame, items: pd.DataFrame | None, snapshots: Sequence[pd.Timestamp]
) -> pd.DataFrame:
    """Each active user's `user_stats` row as of each snapshot (timestamp = the snapshot), built
    by the platform's own table SQL from the events at or before it."""
    rows = []
    for s in snapshots:
        stamp = pd.Timestamp(s)
        table = build_table_frames(events, items, stamp, (N.USER_STATS,))[0][N.USER_STATS]
        at = pd.to_datetime(table[N.FEATURE_TIMESTAMP], utc=True) == stamp
        rows.append(table[at.to_numpy()])
    return pd.concat(rows, ignore_index=True)


def churn_feature_tables(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    snapshots: Sequence[pd.Timestamp],
    as_of: pd.Timestamp | None = None,
) -> FeatureTables:
    """The platform's feature tables as of `as_of` (default: the last event) with every
    snapshot's `user_stats` rows added; a (user, time) the history already has keeps its row
    (the two are equal: both are computed from events <= that time)."""
    base = build_feature_tables(events, items, as_of=as_of)
    extra = snapshot_user_stats(events, items, snapshots)
    stats = pd.concat([base.user_stats, extra], ignore_index=True)
    stats[N.FEATURE_TIMESTAMP] = pd.to_datetime(stats[N.FEATURE_TIMESTAMP], utc=True).dt.as_unit("ns")
    stats = stats.drop_duplicates([S.USER_ID, N.FEATURE_TIMESTAMP], keep="first")
    stats = stats.sort_values([S.USER_ID, N.FEATURE_TIMESTAMP], ignore_index=True)
    return FeatureTables(user_stats=stats, item_stats=base.item_stats,
                         user_recent_items=base.user_recent_items, as_of=base.as_of,
                         max_len=base.max_len, user_history=base.user_history,
                         history_len=base.history_len, info={**base.info, "churn_snapshots": [str(s) for s in snapshots]})


def publish_churn_store(tables: FeatureTables, settings: FeatureStoreSettings) -> "FeatureStore":
    """Write the tables into the settings' home and apply the repo's definitions there (the
    offline store is all training needs: nothing is materialized)."""
    tables.write(settings.features_dir)
    return apply_definitions(settings)


def historical_churn_features(
    store: "FeatureStore", labels: pd.DataFrame, features: Sequence[str] = CHURN_FEATURES
) -> pd.DataFrame:
    """Feast's point-in-time join of `features` to the label rows, as of each row's snapshot
    (the newest user_stats row at or before it). Returns the rows in their input order.

    Raises:
        FeatureStoreError: a labelled user has no user_stats row by its snapshot (the labels
            and the store were built from different events).
    """
    entity = pd.DataFrame({
        S.USER_ID: labels[S.USER_ID].astype(str).to_numpy(),
        N.FEATURE_TIMESTAMP: pd.to_datetime(labels[S.TIMESTAMP], utc=True).dt.as_unit("ns").array,
        "_row": range(len(labels)),
    })
    joined = store.get_historical_features(entity_df=entity, features=feature_refs(features)).to_df()
    joined = joined.sort_values("_row", kind="stable").reset_index(drop=True)
    missing = joined[list(features)].isna().all(axis=1)
    if missing.any():
        raise FeatureStoreError(f"{int(missing.sum())} labelled (user, snapshot) rows have no user_stats "
                                f"row by their snapshot, e.g. {joined.loc[missing, S.USER_ID].iloc[0]!r}")
    out = labels.reset_index(drop=True).copy()
    for name in features:
        out[name] = joined[name].astype("float64").to_numpy()
    return out
