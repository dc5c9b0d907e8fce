"""Online reads and pushes: what serving asks of the online store, per user, on the hot path.

Reads go through the `recommender_v1` service and come back as one dict per user, with
`USER_DEFAULTS` and the `missing` flag for users the store does not know; `user_rows` builds
those rows for the SDK read here and for the feature-server client alike, so both answer the
same. `push_events` appends new events to the users' online `recent_items` and
`history_items`, with the history's session flags (the offline tables get them at the next
build). Both take an opened store (`store.open_store`) and never open, apply or materialize
one; a store that does not answer raises FeatureStoreUnavailable naming it
(`settings.online_errors`).
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
from shoprec.features.tables import SESSION_GAP_NS, features_history_len, features_max_len

if TYPE_CHECKING:  # Feast takes seconds to import: only the functions that need it import it.
    from feast import FeatureStore

# What an online read returns for a user the store does not know (with `missing` = True).
# Counts are zero; `days_since_last_event` -1 means "never seen"; a price nobody paid is NaN;
# no last event: time 0 and no session id ("").
USER_DEFAULTS: dict[str, Any] = {
    **{name: 0 for name in N.USER_COUNT_FEATURES},
    N.DISTINCT_ITEMS: 0,
    N.DAYS_SINCE_LAST_EVENT: -1.0,
    N.MEAN_PRICE: math.nan,
    N.TOP_CATEGORY: N.UNKNOWN_CATEGORY,
    N.RECENT_ITEMS: [],
    N.HISTORY_ITEMS: [],
    N.HISTORY_SESSION_STARTS: [],
    N.HISTORY_LAST_EVENT_NS: 0,
    N.HISTORY_LAST_SESSION: "",
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
    from `columns` counts as unknown) as one dict per user: defaults for nulls, the list
    features as lists, and `missing` when the store knew nothing of the user. Shared by the
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
    """What a push wrote: per user, the new online lists (`history_session_starts` aligned with
    `history_items`; both empty where the store has no such field)."""

    users: int
    events: int
    recent_items: dict[str, list[str]] = field(default_factory=dict)
    history_items: dict[str, list[str]] = field(default_factory=dict)
    history_session_starts: dict[str, list[bool]] = field(default_factory=dict)


# What a push writes to user_history beside the items, where the view has them (a repo applied
# before they existed has the items alone, and Feast writes a view's fields all or none).
_HISTORY_EXTRAS = (N.HISTORY_SESSION_STARTS, N.HISTORY_LAST_EVENT_NS, N.HISTORY_LAST_SESSION)


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

    The history's session flags grow with its items (and are cut with them): a pushed event
    opens a session as `tables.user_history_table` marks one, its previous event being the
    user's previous pushed event, else the newest on record online (`history_last_event_ns`,
    `history_last_session`); a user with no history online opens one with its first event.
    Events may carry `session_id` (optional; missing values are no id, ids compare as text).
    The newest pushed event becomes the user's last event on record. A `user_history` view
    without these fields (applied before them) gets the items alone.

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
            S.SESSION_ID: _session_ids(events),
        }
    )
    new[S.TIMESTAMP] = pd.to_datetime(new[S.TIMESTAMP], utc=True).dt.as_unit("ns")
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
    extras: list[str] = []  # the user_history fields beside the items that this store's view has
    if _has_view(store, N.USER_HISTORY):
        history_view = store.get_feature_view(N.USER_HISTORY)
        keep[N.HISTORY_ITEMS] = history_len or (features_history_len(features_dir) if features_dir else None) or int(
            history_view.tags.get("history_len", DEFAULT_HISTORY_LEN))
        views[N.HISTORY_ITEMS] = (N.USER_HISTORY, N.HISTORY_PUSH_SOURCE)
        fields = {feature.name for feature in history_view.features}
        extras = [name for name in _HISTORY_EXTRAS if name in fields]
    users = list(dict.fromkeys(new[S.USER_ID]))
    refs = [f"{view}:{name}" for name, (view, _) in views.items()] + [f"{N.USER_HISTORY}:{name}" for name in extras]
    current = online_user_features(store, users, refs=refs, settings=settings)
    lists: dict[str, dict[str, list[str]]] = {name: {} for name in views}
    history: dict[str, list[Any]] = {name: [] for name in extras}  # one value per user, in push order
    stamps = []
    for n, (user, group) in enumerate(new.groupby(S.USER_ID, sort=False)):
        added = group[S.ITEM_ID].tolist()
        for name in views:
            lists[name][str(user)] = (list(current[name].iloc[n]) + added)[-keep[name]:]
        stamps.append(group[S.TIMESTAMP].max())
        if extras:
            row = current.iloc[n]
            items_before = len(row[N.HISTORY_ITEMS])
            flags = _aligned(list(row.get(N.HISTORY_SESSION_STARTS, [])), items_before)
            last_ns = int(row.get(N.HISTORY_LAST_EVENT_NS, 0)) if items_before else 0
            opens = _session_opens(group[S.TIMESTAMP].array.asi8.tolist(), group[S.SESSION_ID].tolist(),
                                   last_ns or None, row.get(N.HISTORY_LAST_SESSION) or None)
            values = {
                N.HISTORY_SESSION_STARTS: (flags + opens)[-keep[N.HISTORY_ITEMS]:],
                N.HISTORY_LAST_EVENT_NS: int(group[S.TIMESTAMP].array.asi8[-1]),
                N.HISTORY_LAST_SESSION: group[S.SESSION_ID].iloc[-1] or "",
            }
            for name in extras:
                history[name].append(values[name])
    with online_errors(settings):
        for name, (_, source) in views.items():
            frame = pd.DataFrame({S.USER_ID: list(lists[name]), N.FEATURE_TIMESTAMP: stamps,
                                  name: list(lists[name].values())})
            if name == N.HISTORY_ITEMS:  # the view's other fields go with its items, in one write
                for extra in extras:
                    frame[extra] = history[extra]
            store.push(source, frame, to=PushMode.ONLINE)
    starts = dict(zip(lists[N.HISTORY_ITEMS], history[N.HISTORY_SESSION_STARTS])) \
        if N.HISTORY_SESSION_STARTS in history else {}
    return PushSummary(users=len(stamps), events=len(new), recent_items=lists[N.RECENT_ITEMS],
                       history_items=lists.get(N.HISTORY_ITEMS, {}), history_session_starts=starts)


def _session_ids(events: pd.DataFrame) -> list[str | None]:
    """The events' session ids as text, None where an event has none (or the column is absent;
    a blank id is none, as validation reads it and as `history_last_session` records it)."""
    if S.SESSION_ID not in events:
        return [None] * len(events)
    column = events[S.SESSION_ID]
    return [None if missing or not str(value).strip() else str(value)
            for value, missing in zip(column.tolist(), pd.isna(column).tolist())]


def _session_opens(times_ns: list[int], sessions: list[str | None], last_ns: int | None,
                   last_session: str | None) -> list[bool]:
    """Whether each of a user's events (in time order) opens a session, as
    `tables.user_history_table` marks it: a change of session id where the event and the one
    before both have one, else a gap of more than `SESSION_GAP_NS`; the one before the first is
    the user's last event on record (`last_ns` None: there is none, and the first opens one)."""
    opens = []
    previous_ns, previous_session = last_ns, last_session
    for at, session in zip(times_ns, sessions):
        if previous_ns is None:
            opens.append(True)
        elif session is not None and previous_session is not None:
            opens.append(session != previous_session)
        else:
            opens.append(at - previous_ns > SESSION_GAP_NS)
        previous_ns, previous_session = at, session
    return opens


def _aligned(flags: list[bool], length: int) -> list[bool]:
    """`flags` made one per history item, so the model's input stays aligned: the build and
    every push write as many as items, but a row written before the view had flags (a store
    re-applied and not yet materialized) has none. Cut to the newest, or padded at the oldest
    end with False (not known to open a session)."""
    flags = [bool(flag) for flag in flags][-length:] if length else []
    return [False] * (length - len(flags)) + flags


def _has_view(store: "FeatureStore", name: str) -> bool:
    from feast.errors import FeatureViewNotFoundException

    try:
        store.get_feature_view(name)
    except FeatureViewNotFoundException:
        return False
    return True
