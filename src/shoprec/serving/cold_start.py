"""Cold-start answers: what a shopper gets when the model has nothing to go on.

Which fallback answered is always named in the answer:
- "unknown_user": the feature store does not know the user;
- "empty_history": the user (or cart) has no item the model knows;
- "features_unavailable": the feature store was slow or down, so the history is unknown.

What they get: the most popular items of the user's recent category (the `top_category`
feature) when it is known, else the trending items of the latest window. A category filter in
the request always wins: popular items of that category.

A new user may also state preferences (`onboarding_items`): `{"categories": [...],
"attributes": {"age": 30, "gender": "F", ...}}`. Then the answer is popular within those
categories / in that user segment (`shoprec.ranking.onboarding`), and the fallback is named
by what was used: "categories_in_segment", "stated_categories", "segment" or "popular".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shoprec import schema as S
from shoprec.ranking.onboarding import POPULAR, STATED_CATEGORIES, OnboardingPopularity
from shoprec.serving.catalog import ItemCatalog

UNKNOWN_USER = "unknown_user"
EMPTY_HISTORY = "empty_history"
FEATURES_UNAVAILABLE = "features_unavailable"
FALLBACKS = (UNKNOWN_USER, EMPTY_HISTORY, FEATURES_UNAVAILABLE)


@dataclass(frozen=True)
class FallbackItem:
    item_id: str
    score: float
    reason: str


def fallback_items(catalog: ItemCatalog, k: int, *, recent_category: str | None = None,
                   category: str | None = None, exclude: Collection[str] = ()) -> list[FallbackItem]:
    """Up to k items, best first, scored by their popularity count in the window used.

    category: the request's filter (only items of it); recent_category: the user's
    `top_category`, used when there is no filter and the catalogue knows it."""
    skip = set(exclude)
    if category is not None:
        ranked, window, reason = catalog.items_in(category), "popular", f"popular in {category}"
    elif recent_category and catalog.items_in(recent_category):
        ranked, window, reason = (catalog.items_in(recent_category), "popular",
                                  f"popular in {recent_category}, your recent category")
    else:
        ranked, window, reason = catalog.trending(), "trending", "trending now"
    out: list[FallbackItem] = []
    for item in ranked:
        if item in skip:
            continue
        out.append(FallbackItem(item, catalog.popularity(item, window), reason))
        if len(out) == k:
            break
    return out


@dataclass(frozen=True)
class Preferences:
    """What a new user stated: preferred categories and attributes (age, gender, ...)."""

    categories: tuple[str, ...] = ()
    attributes: tuple[tuple[str, Any], ...] = ()

    @property
    def stated(self) -> bool:
        return bool(self.categories or self.attributes)


MAX_PREFERRED = 50  # categories one request may state


def preferences_from(raw: Any) -> Preferences:
    """The request's `"preferences"` object; ValueError naming the fault (a 400 upstream)."""
    if not isinstance(raw, Mapping) or not set(raw) <= {"categories", "attributes"}:
        raise ValueError("'preferences' must be an object with 'categories' (a list) and/or "
                         "'attributes' (an object such as {\"age\": 30, \"gender\": \"F\"})")
    categories = raw.get("categories", [])
    if not isinstance(categories, list) or not all(isinstance(c, str) and c for c in categories) \
            or len(categories) > MAX_PREFERRED:
        raise ValueError(f"'preferences.categories' must be a list of at most {MAX_PREFERRED} category names")
    attributes = raw.get("attributes", {})
    if not isinstance(attributes, Mapping) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in attributes.values()):
        raise ValueError("'preferences.attributes' must map attribute names to strings or numbers")
    return Preferences(tuple(dict.fromkeys(categories)), tuple(sorted(attributes.items())))


def check_preferences(preferences: Preferences, *, table: OnboardingPopularity | None = None,
                      catalog: ItemCatalog | None = None) -> None:
    """ValueError naming what `onboarding_items` could not use (unknown categories or
    attributes): checked for every instance that states preferences, cold or not, so the same
    typo is a 400 whether or not this user happens to be known today."""
    if table is not None:
        table.check(preferences.categories, dict(preferences.attributes))
        return
    if catalog is None:
        raise ValueError("onboarding needs an item catalogue or a popularity table")
    if preferences.attributes:
        raise ValueError(f"user attributes {[a for a, _ in preferences.attributes]} cannot be used: "
                         f"this server has no users table to segment by")
    unknown = [c for c in preferences.categories if not catalog.items_in(c)]
    if unknown:
        raise ValueError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown[:5]}")


def onboarding_items(k: int, preferences: Preferences, *, table: OnboardingPopularity | None = None,
                     catalog: ItemCatalog | None = None,
                     exclude: Collection[str] = ()) -> tuple[str, list[FallbackItem]]:
    """(the fallback used, up to k items) for a new user's stated preferences.

    With a `table` (built at server start from the events and users tables) categories and
    segment are used; with only a `catalog`, categories (popular in them by the catalogue's
    counts). ValueError names unknown categories or attributes, and attributes no table can use."""
    if table is not None:
        answer = table.recommend(k, preferences.categories, dict(preferences.attributes), exclude)
        return answer.fallback, [FallbackItem(i, s, answer.reason) for i, s in zip(answer.items, answer.scores)]
    check_preferences(preferences, catalog=catalog)
    assert catalog is not None  # checked above
    if not preferences.categories:
        return POPULAR, fallback_items(catalog, k, exclude=exclude)
    skip = set(exclude)
    # Each category's list is already by popularity: the best k of the union lie in the first
    # k (plus the excluded) of each, so no whole category is sorted per request.
    pool = {i for c in preferences.categories for i in catalog.items_in(c)[:k + len(skip)]} - skip
    ranked = sorted(pool, key=lambda i: (-catalog.popularity(i), i))[:k]
    reason = f"popular in {', '.join(preferences.categories)}"
    return STATED_CATEGORIES, [FallbackItem(i, catalog.popularity(i), reason) for i in ranked]


def load_onboarding(dataset_dir: str | Path, catalog: ItemCatalog | None = None) -> OnboardingPopularity:
    """The onboarding popularity table, built once at server start from a dataset directory
    (`EventData.write`): its events (user and item ids only: the largest table, read narrow),
    its items table's categories (else the catalogue's) and, when there is one, its users
    table (segments by age band, gender, occupation). DataSourceError without events."""
    from shoprec.data.dataset import events_file, read_companions

    events = pd.read_parquet(events_file(dataset_dir), columns=[S.USER_ID, S.ITEM_ID])
    items, users, _, _ = read_companions(dataset_dir)
    if (items is None or S.CATEGORY not in items) and catalog is not None:
        # The catalogue knows the categories serving shows (item_stats), whatever the dataset kept.
        items = catalog.frame[[S.CATEGORY]].rename_axis(S.ITEM_ID).reset_index()
    return OnboardingPopularity(events, items, users)
