"""Online reads and pushes: what serving asks of the online store, per user, on the hot path.

Reads go through the `recommender_v1` service and come back as one dict per user, with
`USER_DEFAULTS` and the `missing` flag for users the store does not know; `user_rows` builds
those rows for the SDK read here and for the feature-server client alike, so both answer the
same. `push_events` appends new events to the users' online `recent_items` and
`history_items` (the offline tables get them at the next build). Both take an opened store (`store.open_store`)
and never open, apply or materialize one; a store that does not answer raises
FeatureStoreUnavailable naming it (`settings.online_errors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from shoprec import schema as S
from shoprec.config import DEFAULT_HISTORY_LEN, DEFAULT_MAX_LEN
from shoprec.errors import FeatureStoreError
from shoprec.features import names as N
from shoprec.features.settings import FeatureStoreSettings, online_errors
from shoprec.features.tables import features_history_len, features_max_len

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
    N.HISTORY_ITEMS: [],
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
            if name in N.LIST_FEATURES:
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
    history_items: dict[str, list[str]] = field(default_factory=dict)


def push_events(
    store: "FeatureStore",
    events: pd.DataFrame,
    settings: FeatureStoreSettings | None = None,
    max_len: int | None = None,
    history_len: int | None = None,
) -> PushSummary:
    """Push new events to the online store at once: each user's `recent_items` becomes the
    online list followed by the new items (by time), cut to the last N: `max_len`, else the
    N the tables were built with (features.json in the settings' home), else the view's tag;
    `history_items` the same, cut to `history_len` (or the tables' / the tag's). A store
    without `user_history` (a repo applied before it) gets the recent items only.

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
    features_dir = settings.features_dir if settings else None
    keep = {
        N.RECENT_ITEMS: max_len or (features_max_len(features_dir) if features_dir else None) or int(
            store.get_feature_view(N.USER_RECENT_ITEMS).tags.get("max_len", DEFAULT_MAX_LEN)),
    }
    views = {N.RECENT_ITEMS: (N.USER_RECENT_ITEMS, N.PUSH_SOURCE)}
    if _has_view(store, N.USER_HISTORY):
        keep[N.HISTORY_ITEMS] = history_len or (features_history_len(features_dir) if features_dir else None) or int(
            store.get_feature_view(N.USER_HISTORY).tags.get("history_len", DEFAULT_HISTORY_LEN))
        views[N.HISTORY_ITEMS] = (N.USER_HISTORY, N.HISTORY_PUSH_SOURCE)
    users = list(dict.fromkeys(new[S.USER_ID]))
    refs = [f"{view}:{name}" for name, (view, _) in views.items()]
    current = online_user_features(store, users, refs=refs, settings=settings)
    lists: dict[str, dict[str, list[str]]] = {name: {} for name in views}
    stamps = []
    for n, (user, group) in enumerate(new.groupby(S.USER_ID, sort=False)):
        added = group[S.ITEM_ID].tolist()
        for name in views:
            lists[name][str(user)] = (list(current[name].iloc[n]) + added)[-keep[name]:]
        stamps.append(group[S.TIMESTAMP].max())
    with online_errors(settings):
        for name, (_, source) in views.items():
            frame = pd.DataFrame({S.USER_ID: list(lists[name]), N.FEATURE_TIMESTAMP: stamps,
                                  name: list(lists[name].values())})
            store.push(source, frame, to=PushMode.ONLINE)
    return PushSummary(users=len(stamps), events=len(new), recent_items=lists[N.RECENT_ITEMS],
                       history_items=lists.get(N.HISTORY_ITEMS, {}))


def _has_view(store: "FeatureStore", name: str) -> bool:
    from feast.errors import FeatureViewNotFoundException

    try:
        store.get_feature_view(name)
    except FeatureViewNotFoundException:
        return False
    return True
