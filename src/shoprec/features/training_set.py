"""Training data by point-in-time join through the `recommender_v1` feature service.

Each training row gets the feature values as they stood strictly before its timestamp:
the join time is moved back one microsecond, so an event never sees itself (nor anything at
or after its own time) in `recent_items` or in the counts.

A training set carries only the features its reader uses: `build_training_set` joins the whole
service only when asked for nothing narrower, and the train step asks for `TRAINING_FEATURES`.
Feast's point-in-time join (ibis over DuckDB) pairs every entity row with every earlier feature
row of its key before keeping the newest, so its cost grows with the sum of squared events per
user and per item: on the 150k-event Instacart sample the whole service (with the 50-item
`recent_items` lists) peaked at 20 GB, user_stats + item_stats alone at 7.8 GB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.errors import FeatureStoreError
from shoprec.features import names as N

if TYPE_CHECKING:
    from feast import FeatureStore

_ROW = "_shoprec_row"
_JUST_BEFORE = pd.Timedelta(microseconds=1)

# The features the train step joins to its examples, as "view:feature" references of the
# service: none by default. SASRec+ and the baselines read item ids, and rebuild each example's
# input sequence from the entity rows themselves (equal to the `recent_items` the store would
# join, by construction: tests/features/test_point_in_time.py). SASRec+'s optional user context
# (`FitConfig.user_context`, off: it did not help on validation, figures in
# `training.fit.FEATURE_VALIDATION`) reads user_stats columns: a run that turns it on joins
# `training_feature_refs(those columns)`, just those, point in time.
TRAINING_FEATURES: tuple[str, ...] = ()


def training_feature_refs(user_context: Sequence[str] = ()) -> list[str]:
    """What a training run joins: `TRAINING_FEATURES` plus the user_stats columns its user
    context reads (`features.user_context.feature_refs`), never `recent_items`."""
    return list(TRAINING_FEATURES) + [f"{N.USER_STATS}:{name}" for name in user_context]


def next_item_examples(events: pd.DataFrame) -> pd.DataFrame:
    """Entity rows for next-item training: one row per event (user_id, item_id = the target,
    timestamp = when it happened; session_id where the log has one, which the join carries
    through for the repeat head's session openings), in time order."""
    frame = pd.DataFrame(
        {
            S.USER_ID: events[S.USER_ID].astype(str).to_numpy(),
            S.ITEM_ID: events[S.ITEM_ID].astype(str).to_numpy(),
            # UTC in nanoseconds, kept a datetime array (to_numpy() would make a Timestamp object per row)
            S.TIMESTAMP: pd.to_datetime(events[S.TIMESTAMP], utc=True).dt.as_unit("ns").array,
        }
    )
    if S.SESSION_ID in events and events[S.SESSION_ID].notna().any():  # a column of nulls says nothing
        frame[S.SESSION_ID] = events[S.SESSION_ID].to_numpy()
    return frame.sort_values([S.TIMESTAMP, S.USER_ID], kind="stable", ignore_index=True)


def service_features(store: "FeatureStore", service: str = N.FEATURE_SERVICE) -> list[str]:
    """Every feature of `service` as a "view:feature" reference, in the service's order."""
    found = store.get_feature_service(service)
    return [f"{view.name_to_use()}:{feature.name}"
            for view in found.feature_view_projections for feature in view.features]


def training_features(
    store: "FeatureStore", service: str = N.FEATURE_SERVICE,
    without: Sequence[str] = N.LIST_FEATURES,
) -> list[str]:
    """The service's features minus those named in `without` (by feature name): by default every
    statistic of user_stats and item_stats, without the `recent_items` and `history_items`
    lists (training builds its sequences from the events; `user_history` is a snapshot)."""
    dropped = set(without)
    return [ref for ref in service_features(store, service) if ref.split(":", 1)[1] not in dropped]


def build_training_set(
    store: "FeatureStore",
    entities: pd.DataFrame,
    service: str = N.FEATURE_SERVICE,
    strictly_before: bool = True,
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Join features to `entities` as of each row's timestamp (Feast, DuckDB store).

    Args:
        entities: user_id, item_id and timestamp (the moment of the training example); other
            columns (labels) pass through.
        strictly_before: join the values as of just before the timestamp (default), so the
            target event is never part of its own features.
        features: which features of `service` to join, as "view:feature" references (each must
            belong to the service); None = all of the service's features; empty = none: the
            entity rows come back as they would with features, without a join.

    Returns:
        The entity rows in their input order with one column per feature; `recent_items` (when
        joined) is a list (empty when the user had no history yet).

    Raises:
        FeatureStoreError: the entities lack a key column, or a feature is not in the service.
    """
    lacking = [c for c in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP) if c not in entities.columns]
    if lacking:
        raise FeatureStoreError(f"training entities lack column(s) {lacking}; have {list(entities.columns)}")
    frame = entities.copy()
    frame[S.USER_ID] = frame[S.USER_ID].astype(str)
    frame[S.ITEM_ID] = frame[S.ITEM_ID].astype(str)
    when = pd.to_datetime(frame[S.TIMESTAMP], utc=True)
    stamps = when.dt.as_unit("ns").reset_index(drop=True)  # the rows' times as returned (UTC, ns)
    chosen: Any = store.get_feature_service(service)  # an unknown service fails, features or not
    if features is not None and len(features) == 0:
        frame = frame.reset_index(drop=True)
        frame[S.TIMESTAMP] = stamps  # the rows a join would return, without one: nothing to add
        return frame
    if features is not None:
        offered = service_features(store, service)
        unknown = [ref for ref in features if ref not in offered]
        if unknown:
            raise FeatureStoreError(f"feature(s) {unknown} are not in the feature service {service!r}; "
                                    f"it offers {offered}")
        chosen = list(features)
    frame[N.FEATURE_TIMESTAMP] = when - _JUST_BEFORE if strictly_before else when
    frame[_ROW] = np.arange(len(frame))
    job = store.get_historical_features(entity_df=frame, features=chosen)
    joined = job.to_df().sort_values(_ROW, kind="stable").reset_index(drop=True)
    joined[S.TIMESTAMP] = stamps
    for name in N.LIST_FEATURES:
        if name in joined:
            joined[name] = [_as_list(v) for v in joined[name]]
    return joined.drop(columns=[_ROW, N.FEATURE_TIMESTAMP])


def _as_list(value: object) -> list[str] | list[bool]:
    """A joined list feature as a Python list: item ids as text, session flags as bools."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    values = list(value)  # type: ignore[call-overload]
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return [bool(v) for v in values]
    return [str(v) for v in values]
