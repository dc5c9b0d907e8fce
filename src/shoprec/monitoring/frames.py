"""The frames a drift report compares, built the same way for the reference and the current side.

- user / item features: the `user_stats` and `item_stats` tables (`build_table_frames`) of
  one window's events, taken at the window's end (one row per user / item active in the window). Both sides are windows of the
  same length, so a 7-day count is compared with a 7-day count, never with a 90-day one.
- predictions: one row per recommended item (popularity percentile, category, score, rank,
  fallback): from the model on the validation users (reference) or the prediction log (current).
- quality: Evidently's recsys layout (user, item, rank, relevance) where ground truth exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.errors import EmptyWindowError
from shoprec.features import names as N
from shoprec.features.tables import build_table_frames
from shoprec.serving.cold_start import FEATURES_UNAVAILABLE

# Feature columns under drift test. Cumulative "_all" counts are left out: they grow with the
# history a window happens to have, not with how people behave.
USER_NUMERICAL: tuple[str, ...] = tuple(
    f"{N.EVENT_PLURAL[kind]}_{w}" for w in ("7d", "30d") for kind in S.EVENT_TYPES
) + (N.DISTINCT_ITEMS, N.DAYS_SINCE_LAST_EVENT, N.MEAN_PRICE)
USER_CATEGORICAL: tuple[str, ...] = (N.TOP_CATEGORY,)
ITEM_NUMERICAL: tuple[str, ...] = ("events_7d", "events_30d", N.ITEM_USERS_ALL, N.PURCHASE_SHARE, N.ITEM_PRICE)
ITEM_CATEGORICAL: tuple[str, ...] = (N.ITEM_CATEGORY,)

POPULARITY_PERCENTILE = "popularity_percentile"
SCORE = "score"
RANK = "rank"
FALLBACK = "fallback"
MODEL_ANSWERED = "none"  # the fallback column's value when the model itself answered
# Fallbacks that say the serving stack was down (the feature store did not answer), not that
# shoppers or items changed: an outage is an alert, never drift, so these answers are kept out
# of the drift and quality frames and counted on their own (`outage_rate`).
OUTAGE_FALLBACKS: tuple[str, ...] = (FEATURES_UNAVAILABLE,)
PREDICTION_NUMERICAL: tuple[str, ...] = (POPULARITY_PERCENTILE, SCORE, RANK)
PREDICTION_CATEGORICAL: tuple[str, ...] = (S.CATEGORY, FALLBACK)

# Evidently's recsys columns.
QUALITY_USER = "user_id"
QUALITY_ITEM = "item_id"
QUALITY_PREDICTION = "prediction"  # the rank, 1 = best
QUALITY_TARGET = "target"  # 1 = the user did interact with the item afterwards


def utc(value: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def window_events(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Events with start <= timestamp < end."""
    times = pd.to_datetime(events[S.TIMESTAMP], utc=True)
    return events[(times >= start) & (times < end)].reset_index(drop=True)


def last_window(events: pd.DataFrame, days: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The newest `days` of `events`: (start, end) with end just after the last event."""
    if events.empty:
        raise EmptyWindowError("current events", "(no events at all)")
    end = pd.to_datetime(events[S.TIMESTAMP], utc=True).max() + pd.Timedelta(seconds=1)
    return end - pd.Timedelta(days=days), end


def feature_frames(
    events: pd.DataFrame, items: pd.DataFrame | None, start: pd.Timestamp, end: pd.Timestamp,
    what: str = "current",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(user features, item features) of the users and items active in [start, end), as of end.

    Raises:
        EmptyWindowError: no event in the window.
    """
    from shoprec.monitoring.drift import window_label

    inside = window_events(events, start, end)
    if inside.empty:
        raise EmptyWindowError(f"{what} events", window_label(start, end))
    tables, cutoff = build_table_frames(inside, items, end, (N.USER_STATS, N.ITEM_STATS))
    users = tables[N.USER_STATS][tables[N.USER_STATS][N.FEATURE_TIMESTAMP] == cutoff]
    item_rows = tables[N.ITEM_STATS][tables[N.ITEM_STATS][N.FEATURE_TIMESTAMP] == cutoff]
    return (
        users[list(USER_NUMERICAL + USER_CATEGORICAL)].reset_index(drop=True),
        item_rows[list(ITEM_NUMERICAL + ITEM_CATEGORICAL)].reset_index(drop=True),
    )


def _session_openings(ordered: pd.DataFrame) -> dict[str, list[bool]]:
    """Per user, True where each of their events (in `ordered`'s order: by user, then time)
    opens a session, as training reads them (`sequences.session_starts`)."""
    from shoprec.sequences import session_starts

    users = ordered[S.USER_ID].to_numpy()
    offsets = np.concatenate(([0], np.flatnonzero(users[1:] != users[:-1]) + 1, [len(users)]))
    flags = session_starts(ordered.reset_index(drop=True), np.arange(len(ordered)), offsets)
    return {str(users[a]): flags[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])}


def popularity_table(events: pd.DataFrame) -> pd.DataFrame:
    """item_id -> popularity percentile (0-100, by event count; 100 = the most popular)."""
    counts = events[S.ITEM_ID].astype(str).value_counts()
    percentile = counts.rank(method="max", pct=True) * 100.0
    return pd.DataFrame({S.ITEM_ID: percentile.index.to_numpy(), POPULARITY_PERCENTILE: percentile.to_numpy()})


def prediction_rows(
    items: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]],
    categories: Sequence[Sequence[str | None]],
    fallbacks: Sequence[str | None],
    popularity: pd.DataFrame,
) -> pd.DataFrame:
    """One row per recommended item; an answer with no items keeps one row (its fallback counts)."""
    percentile = dict(zip(popularity[S.ITEM_ID].astype(str), popularity[POPULARITY_PERCENTILE]))
    rows: list[tuple] = []
    for answer_items, answer_scores, answer_cats, fallback in zip(items, scores, categories, fallbacks):
        label = MODEL_ANSWERED if fallback is None or (isinstance(fallback, float) and np.isnan(fallback)) else str(fallback)
        answer_items = list(answer_items or [])
        if not answer_items:
            rows.append((np.nan, np.nan, np.nan, None, label))
            continue
        cats = list(answer_cats or []) + [None] * len(answer_items)
        for rank, (item, score) in enumerate(zip(answer_items, list(answer_scores or [])), start=1):
            # An item the training data never saw is as unpopular as an item can be.
            rows.append((percentile.get(str(item), 0.0), float(score), float(rank), cats[rank - 1], label))
    return pd.DataFrame(rows, columns=[POPULARITY_PERCENTILE, SCORE, RANK, S.CATEGORY, FALLBACK])


def is_outage(log: pd.DataFrame) -> pd.Series:
    """True for each logged answer that was a fallback because the serving stack was down."""
    return log[FALLBACK].isin(OUTAGE_FALLBACKS) if len(log) else pd.Series([], dtype=bool)


def without_outage(log: pd.DataFrame) -> pd.DataFrame:
    """The logged answers given while the serving stack was up (what drift is measured on)."""
    return log[~is_outage(log)].reset_index(drop=True) if len(log) else log


def fallback_rate(log: pd.DataFrame) -> float:
    """Share of answers not given by the model for a reason about the shoppers (unknown user,
    empty history), among the answers given while the serving stack was up: the drift signal.
    Outage fallbacks are `outage_rate`'s."""
    served = without_outage(log)
    return float(served[FALLBACK].notna().mean()) if len(served) else 0.0


def outage_rate(log: pd.DataFrame) -> float:
    """Share of all answers that were fallbacks because the feature store was unavailable:
    the alert signal."""
    return float(is_outage(log).mean()) if len(log) else 0.0


def log_prediction_frame(log: pd.DataFrame, popularity: pd.DataFrame) -> pd.DataFrame:
    """The prediction log window (`read_predictions`) as prediction rows."""
    return prediction_rows(log["items"], log["scores"], log["categories"], log[FALLBACK], popularity)


def log_quality_frame(log: pd.DataFrame, events: pd.DataFrame, k: int, salt: str | None = None) -> pd.DataFrame:
    """Ground truth for logged answers: what each served user did after the answer.

    The log keeps only keyed user hashes, so the events' users are hashed with the same key
    (`SHOPREC_LOG_SALT`). Answers whose user did nothing afterwards (in `events`) have no
    ground truth and are left out."""
    from shoprec.serving.prediction_log import hash_user

    answered = log[(log["kind"] == "user") & log["user_hash"].astype(bool)]
    if answered.empty or events.empty:
        return _quality_frame([])
    ev = events[[S.USER_ID, S.ITEM_ID, S.TIMESTAMP]].copy()
    hashes = {u: hash_user(str(u), salt) for u in ev[S.USER_ID].unique()}
    ev["_hash"] = ev[S.USER_ID].map(hashes)
    ev[S.TIMESTAMP] = pd.to_datetime(ev[S.TIMESTAMP], utc=True)
    by_user = {h: g for h, g in ev[ev["_hash"].isin(set(answered["user_hash"]))].groupby("_hash")}
    rows: list[tuple] = []
    for n, record in enumerate(answered.itertuples(index=False)):
        later = by_user.get(record.user_hash)
        if later is None:
            continue
        relevant = set(later.loc[later[S.TIMESTAMP] > record.time, S.ITEM_ID].astype(str))
        if relevant:
            rows.extend(_ranked_rows(f"{record.user_hash}#{n}", list(record.items)[:k], relevant, k))
    return _quality_frame(rows)


def model_reference(
    bundle_dir: str | Path,
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    popularity: pd.DataFrame,
    k: int = 10,
    max_users: int = 2000,
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The model's recommendations on the validation users of `events` (each user's last item
    is the target, everything before it the history): (prediction rows, quality rows, fallback rate).
    At most `max_users` users (a fixed-seed sample) keep this quick."""
    from shoprec.models.inference import BundleRecommender

    ordered = events.sort_values([S.USER_ID, S.TIMESTAMP], kind="stable")
    sequences = ordered.groupby(S.USER_ID, sort=True)[S.ITEM_ID].agg(lambda s: [str(i) for i in s])
    sequences = sequences[sequences.map(len) >= 2]
    if len(sequences) > max_users:
        sequences = sequences.sample(n=max_users, random_state=0)
    if sequences.empty:
        raise EmptyWindowError("validation users", "(no user with two or more events)")
    recommender = BundleRecommender.from_bundle(bundle_dir)
    starts = None
    if recommender.needs_sessions:  # a repeat head reads where the histories' sessions start
        opens = _session_openings(ordered)
        starts = [opens[str(user)][:-1] for user in sequences.index]
    answers = recommender.recommend_batch([seq[:-1] for seq in sequences], k=k, starts=starts)
    category = _category_map(items)
    rec_items = [[r.item_id for r in answer] for answer in answers]
    frame = prediction_rows(
        rec_items, [[r.score for r in answer] for answer in answers],
        [[category.get(i) for i in row] for row in rec_items],
        [None if row else "empty_history" for row in rec_items], popularity,
    )
    rows: list[tuple] = []
    for user, seq, recs in zip(sequences.index, sequences, rec_items):
        rows.extend(_ranked_rows(str(user), recs, {seq[-1]}, k))
    fallback = float(np.mean([not row for row in rec_items]))
    return frame, _quality_frame(rows), fallback


def _ranked_rows(user: str, recommended: list[str], relevant: set[str], k: int) -> list[tuple]:
    """Recommended items with their rank and relevance, then each relevant item the list
    missed at rank k+1 (so recall counts it)."""
    rows = [(user, str(item), rank, int(str(item) in relevant))
            for rank, item in enumerate(recommended[:k], start=1)]
    missed = relevant - {str(i) for i in recommended[:k]}
    rows += [(user, item, k + 1, 1) for item in sorted(missed)]
    return rows


def _quality_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[QUALITY_USER, QUALITY_ITEM, QUALITY_PREDICTION, QUALITY_TARGET])
    return frame.astype({QUALITY_PREDICTION: "int64", QUALITY_TARGET: "int64"})


def _category_map(items: pd.DataFrame | None) -> dict[str, str]:
    if items is None or S.CATEGORY not in items or S.ITEM_ID not in items:
        return {}
    table = items[[S.ITEM_ID, S.CATEGORY]].dropna()
    return dict(zip(table[S.ITEM_ID].astype(str), table[S.CATEGORY].astype(str)))
