"""Cold-start answers: what a shopper gets when the model has nothing to go on.

Which fallback answered is always named in the answer:
- "unknown_user": the feature store does not know the user;
- "empty_history": the user (or cart) has no item the model knows;
- "features_unavailable": the feature store was slow or down, so the history is unknown.

What they get: the most popular items of the user's recent category (the `top_category`
feature) when it is known, else the trending items of the latest window. A category filter in
the request always wins: popular items of that category.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

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
