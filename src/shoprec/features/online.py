"""Online reads and pushes: what serving asks of the online store, per user, on the hot path.

Reads go through the `recommender_v1` service and come back as one dict per user, with
`USER_DEFAULTS` and the `missing` flag for users the store does not know; `user_rows` builds
those rows for the SDK read here and for the feature-server client alike, so both answer the
same. `push_events` appends new events to the users' online `recent_items` (the offline
history gets them at the next table build). Both take an opened store (`store.open_store`)
and never open, apply or materialize one; a store that does not answer raises
FeatureStoreUnavailable naming it (`settings.online_errors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from shoprec import schema as S
from shoprec.config import DEFAULT_MAX_LEN
from shoprec.errors import FeatureStoreError
from shoprec.features import names as N
from shoprec.features.settings import FeatureStoreSettings, online_errors
from shoprec.features.tables import features_max_len

if TYPE_CHECKING:  # Feast takes seconds to import: only the functions that need it import it.
    from feast import FeatureStore

# What an online read returns for a user the store does not know (with `missing` = True).
# Counts are zero; `days_since_last_event` -1 means "never seen"; a price nobody paid is NaN.
USER_DEFAULTS: dict[str, Any] = {
    **{name: 0 for name in N.USER_COUNT_FEATURES},
    N.DISTINCT_ITEMS: 0,
    N.DAYS_SINCE_LAST_EVENT: -1.0,
    N.MEAN_PRICE: math.nan,
    N.TOP_CATEGORY: N.UNKNOWN_CATEGORY,
    N.RECENT_ITEMS: [],
}
MISSING_FLAG = "missing"


# --- online reads -----------------------------------------------------------------------------


def user_feature_refs(store: "FeatureStore", service: str = N.FEATURE_SERVICE) -> list[str]:
    """The service's user-keyed features as "view:feature" references (what serving reads per user)."""
    feature_service = store.get_feature_service(service)
    refs: list[str] = []
    for projection in feature_service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        if view.entities == ["user"]:
            refs.extend(f"{projection.name}:{f.name}" for f in projection.features)
    return refs


def online_user_rows(
    store: "FeatureStore",
    user_ids: Sequence[str],
    refs: Sequence[str] | None = None,
    settings: FeatureStoreSettings | None = None,
) -> list[dict[str, Any]]:
    """The online features of `user_ids` through `recommender_v1`: one dict per user, in order
    (the serving hot path: no DataFrame, which costs more than the store read itself).

    A user the store does not know gets `USER_DEFAULTS` and `missing` = True (no exception);
    a known user's null values (e.g. no prices seen) get the same defaults.

    Pass `refs` from `user_feature_refs` to skip the service lookup on hot paths.
    """
    chosen = list(refs) if refs is not None else user_feature_refs(store)
    users = [str(user) for user in user_ids]
    with online_errors(settings):
        values = store.get_online_features(features=chosen, entity_rows=[{S.USER_ID: u} for u in users]).to_dict()
    return user_rows(users, [ref.split(":", 1)[1] for ref in chosen], values)


def user_rows(user_ids: Sequence[str], names: Sequence[str], columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Online feature columns (name -> one value per user, None where unknown; a name absent
    from `columns` counts as unknown) as one dict per user: defaults for nulls, the recent
    items as a list, and `missing` when the store knew nothing of the user. Shared by the
    SDK read and the feature-server client, so both answer alike."""
    unknown = [None] * len(user_ids)
    rows = []
    for i, user in enumerate(user_ids):
        row: dict[str, Any] = {S.USER_ID: user}
        for name in names:
            value = columns.get(name, unknown)[i]
            if name == N.RECENT_ITEMS:
                row[name] = list(value) if value is not None else []
            else:
                row[name] = USER_DEFAULTS.get(name) if value is None else value
        row[MISSING_FLAG] = all(columns.get(name, unknown)[i] is None for name in names)
        rows.append(row)
    return rows


def online_user_features(
    store: "FeatureStore",
    user_ids: Sequence[str],
    refs: Sequence[str] | None = None,
    settings: FeatureStoreSettings | None = None,
) -> pd.DataFrame:
    """`online_user_rows` as a frame: one row per user id, in order, with the `missing` flag."""
    chosen = list(refs) if refs is not None else user_feature_refs(store)  # looked up once
    rows = online_user_rows(store, user_ids, chosen, settings)
    return pd.DataFrame(rows, columns=[S.USER_ID, *(ref.split(":", 1)[1] for ref in chosen), MISSING_FLAG])


# --- push -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushSummary:
    users: int
    events: int
    recent_items: dict[str, list[str]] = field(default_factory=dict)


def push_events(
    store: "FeatureStore",
    events: pd.DataFrame,
    settings: FeatureStoreSettings | None = None,
    max_len: int | None = None,
) -> PushSummary:
    """Push new events to the online store at once: each user's `recent_items` becomes the
    online list followed by the new items (by time), cut to the last N: `max_len`, else the
    N the tables were built with (features.json in the settings' home), else the view's tag.

    Only the online store changes; the offline history gets these events at the next
    `build_features` from the event log, so training never sees a pushed-only value.

    Raises:
        FeatureStoreError: the events lack user_id, item_id or timestamp.
    """
    from feast.data_source import PushMode

    lacking = [c for c in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP) if c not in events.columns]
    if lacking:
        raise FeatureStoreError(f"pushed events lack column(s) {lacking}; have {list(events.columns)}")
    if events.empty:
        return PushSummary(0, 0)
    new = pd.DataFrame(
        {
            S.USER_ID: events[S.USER_ID].astype(str).to_numpy(),
            S.ITEM_ID: events[S.ITEM_ID].astype(str).to_numpy(),
            S.TIMESTAMP: pd.to_datetime(events[S.TIMESTAMP], utc=True).to_numpy(),
        }
    )
    new[S.TIMESTAMP] = pd.to_datetime(new[S.TIMESTAMP], utc=True)
    if new[S.TIMESTAMP].isna().any():
        bad = int(new[S.TIMESTAMP].isna().sum())
        raise FeatureStoreError(f"{bad} pushed event(s) have no parseable timestamp; nothing pushed")
    new = new.sort_values([S.USER_ID, S.TIMESTAMP], kind="stable")
    keep = max_len or _tables_max_len(settings) or int(
        store.get_feature_view(N.USER_RECENT_ITEMS).tags.get("max_len", DEFAULT_MAX_LEN)
    )
    users = list(dict.fromkeys(new[S.USER_ID]))
    current = online_user_features(store, users, refs=[f"{N.USER_RECENT_ITEMS}:{N.RECENT_ITEMS}"], settings=settings)
    lists: dict[str, list[str]] = {}
    stamps = []
    for (user, group), before in zip(new.groupby(S.USER_ID, sort=False), current[N.RECENT_ITEMS]):
        lists[str(user)] = (list(before) + group[S.ITEM_ID].tolist())[-keep:]
        stamps.append(group[S.TIMESTAMP].max())
    frame = pd.DataFrame(
        {S.USER_ID: list(lists), N.FEATURE_TIMESTAMP: stamps, N.RECENT_ITEMS: list(lists.values())}
    )
    with online_errors(settings):
        store.push(N.PUSH_SOURCE, frame, to=PushMode.ONLINE)
    return PushSummary(users=len(lists), events=len(new), recent_items=lists)


def _tables_max_len(settings: FeatureStoreSettings | None) -> int | None:
    """The `max_len` the published tables were built with (features.json), if known."""
    return features_max_len(settings.features_dir) if settings else None
