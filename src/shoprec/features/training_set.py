"""Training data by point-in-time join through the `recommender_v1` feature service.

Each training row gets the feature values as they stood strictly before its timestamp:
the join time is moved back one microsecond, so an event never sees itself (nor anything at
or after its own time) in `recent_items` or in the counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.errors import FeatureStoreError
from shoprec.features import names as N

if TYPE_CHECKING:
    from feast import FeatureStore

_ROW = "_shoprec_row"
_JUST_BEFORE = pd.Timedelta(microseconds=1)


def next_item_examples(events: pd.DataFrame) -> pd.DataFrame:
    """Entity rows for next-item training: one row per event (user_id, item_id = the target,
    timestamp = when it happened), in time order."""
    frame = pd.DataFrame(
        {
            S.USER_ID: events[S.USER_ID].astype(str).to_numpy(),
            S.ITEM_ID: events[S.ITEM_ID].astype(str).to_numpy(),
            S.TIMESTAMP: pd.to_datetime(events[S.TIMESTAMP], utc=True).to_numpy(),
        }
    )
    frame[S.TIMESTAMP] = pd.to_datetime(frame[S.TIMESTAMP], utc=True)
    return frame.sort_values([S.TIMESTAMP, S.USER_ID], kind="stable", ignore_index=True)


def build_training_set(
    store: "FeatureStore",
    entities: pd.DataFrame,
    service: str = N.FEATURE_SERVICE,
    strictly_before: bool = True,
) -> pd.DataFrame:
    """Join the service's features to `entities` as of each row's timestamp (Feast, DuckDB store).

    Args:
        entities: user_id, item_id and timestamp (the moment of the training example); other
            columns (labels) pass through.
        strictly_before: join the values as of just before the timestamp (default), so the
            target event is never part of its own features.

    Returns:
        The entity rows in their input order with one column per feature; `recent_items` is a
        list (empty when the user had no history yet).
    """
    lacking = [c for c in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP) if c not in entities.columns]
    if lacking:
        raise FeatureStoreError(f"training entities lack column(s) {lacking}; have {list(entities.columns)}")
    frame = entities.copy()
    frame[S.USER_ID] = frame[S.USER_ID].astype(str)
    frame[S.ITEM_ID] = frame[S.ITEM_ID].astype(str)
    when = pd.to_datetime(frame[S.TIMESTAMP], utc=True)
    frame[N.FEATURE_TIMESTAMP] = when - _JUST_BEFORE if strictly_before else when
    frame[_ROW] = np.arange(len(frame))
    job = store.get_historical_features(entity_df=frame, features=store.get_feature_service(service))
    joined = job.to_df().sort_values(_ROW, kind="stable").reset_index(drop=True)
    joined[S.TIMESTAMP] = when.to_numpy()
    joined[S.TIMESTAMP] = pd.to_datetime(joined[S.TIMESTAMP], utc=True)
    if N.RECENT_ITEMS in joined:
        joined[N.RECENT_ITEMS] = [_as_list(v) for v in joined[N.RECENT_ITEMS]]
    return joined.drop(columns=[_ROW, N.FEATURE_TIMESTAMP])


def _as_list(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in list(value)]  # type: ignore[call-overload]
