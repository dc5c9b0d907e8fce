"""New-user onboarding: what someone who has just signed up gets from what they told us.

A new user may state preferred categories and, where the shop keeps them, attributes (ML-100K:
age, gender, occupation). The answer is the items most popular (distinct users who interacted)
within those categories, among users of the same segment, and names the fallback it used:

- "categories_in_segment": stated categories, ranked by popularity in the user's segment;
- "stated_categories": stated categories, ranked by popularity among everyone;
- "segment": no categories, popularity in the user's segment;
- "popular": nothing usable was stated, popularity among everyone.

A segment is the users sharing every stated attribute (ages in bands). A segment of fewer than
`min_users` users says little, so attributes are dropped from the end of `ATTRIBUTE_ORDER`
(occupation, then gender, then age) until one is large enough; the answer names the segment
used. Items nobody in the segment touched follow by overall popularity, so the list is full.
Unknown categories, attribute names or values are ValueErrors naming them: a typo must not
silently become a "popular" answer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shoprec import schema as S

CATEGORIES_IN_SEGMENT = "categories_in_segment"
STATED_CATEGORIES = "stated_categories"
SEGMENT = "segment"
POPULAR = "popular"
ONBOARDING_FALLBACKS = (CATEGORIES_IN_SEGMENT, STATED_CATEGORIES, SEGMENT, POPULAR)

AGE = "age"
ATTRIBUTE_ORDER = (AGE, "gender", "occupation")  # backoff drops from the end
# Lower bounds of the age bands (MovieLens-1M's groups): a band, not a year, defines a segment.
AGE_BANDS = (0, 18, 25, 35, 45, 50, 56)
MIN_SEGMENT_USERS = 20
MAX_NAMED = 5


def age_band(age: Any) -> str:
    """"25-34" for 30, "56+" for 60; ValueError for what is not an age."""
    try:
        years = float(age)
    except (TypeError, ValueError):
        raise ValueError(f"age must be a number of years, not {age!r}") from None
    if not math.isfinite(years) or years < 0:
        raise ValueError(f"age must be a number of years, not {age!r}")
    index = int(np.searchsorted(AGE_BANDS, years, side="right")) - 1
    if index == len(AGE_BANDS) - 1:
        return f"{AGE_BANDS[-1]}+"
    low, high = AGE_BANDS[index], AGE_BANDS[index + 1] - 1
    return f"<{high + 1}" if low == 0 else f"{low}-{high}"


@dataclass(frozen=True)
class OnboardingList:
    """Best first: items and their popularity in the population used; the fallback's name,
    a sentence saying what was used, and the segment (attribute -> value) actually used."""

    items: list[str]
    scores: list[float]
    fallback: str
    reason: str
    segment: dict[str, str] = field(default_factory=dict)


class OnboardingPopularity:
    """Popularity overall, per category and per user segment, counted once from the events."""

    def __init__(self, events: pd.DataFrame, items: pd.DataFrame | None = None,
                 users: pd.DataFrame | None = None, attributes: Sequence[str] = ATTRIBUTE_ORDER,
                 min_users: int = MIN_SEGMENT_USERS) -> None:
        """events: user_id, item_id (the history to count, e.g. before a cut); items: item_id,
        category (optional); users: user_id plus attribute columns (optional)."""
        pairs = events[[S.USER_ID, S.ITEM_ID]].astype(str).drop_duplicates()
        self.min_users = min_users
        overall = pairs.groupby(S.ITEM_ID).size()
        if items is not None and S.ITEM_ID in items:  # items nobody touched yet still exist
            overall = overall.reindex(pd.Index(items[S.ITEM_ID].astype(str)).union(overall.index), fill_value=0)
        self.item_ids = overall.index.to_numpy(dtype=object)
        self.overall = overall.to_numpy(dtype=np.float64)
        self._position = {item: n for n, item in enumerate(self.item_ids)}
        self.category = np.full(len(self.item_ids), None, dtype=object)
        if items is not None and S.CATEGORY in items:
            known = items.dropna(subset=[S.CATEGORY])
            where = np.array([self._position.get(str(i), -1) for i in known[S.ITEM_ID]], dtype=np.int64)
            self.category[where[where >= 0]] = known[S.CATEGORY].astype(str).to_numpy()[where >= 0]
        self.categories = sorted({c for c in self.category if c is not None})
        self.attributes: tuple[str, ...] = ()
        self.values: dict[str, set[str]] = {}
        self._segments: dict[tuple[tuple[str, str], ...], tuple[int, pd.Series]] = {}
        if users is not None and S.USER_ID in users:
            self._count_segments(pairs, users, attributes)

    def _count_segments(self, pairs: pd.DataFrame, users: pd.DataFrame, attributes: Sequence[str]) -> None:
        present = [a for a in ATTRIBUTE_ORDER if a in attributes and a in users]
        table = users[[S.USER_ID, *present]].copy()
        table[S.USER_ID] = table[S.USER_ID].astype(str)
        for name in present:
            column = table[name]
            table[name] = column.map(lambda v: age_band(v) if pd.notna(v) else None) if name == AGE \
                else column.where(column.isna(), column.astype(str))
        self.attributes = tuple(present)
        self.values = {a: set(table[a].dropna()) for a in present}
        active = table[table[S.USER_ID].isin(set(pairs[S.USER_ID]))]
        joined = pairs.merge(active, on=S.USER_ID)
        # Every combination of the attributes, so any backoff step is a lookup, not a group-by.
        for size in range(1, len(present) + 1):
            for combo in itertools.combinations(present, size):
                sizes = active.dropna(subset=list(combo)).groupby(list(combo)).size()
                counts = joined.dropna(subset=list(combo)).groupby([*combo, S.ITEM_ID]).size()
                levels = list(range(size)) if size > 1 else 0
                for key, group in counts.groupby(level=levels):
                    key = key if isinstance(key, tuple) else (key,)
                    self._segments[tuple(zip(combo, map(str, key)))] = (
                        int(sizes.loc[key if size > 1 else key[0]]), group.droplevel(levels))

    def check(self, categories: Collection[str] = (), attributes: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The stated attributes as segment values (ages banded); ValueError naming unknown
        categories, attribute names or values."""
        unknown = [c for c in categories if c not in set(self.categories)]
        if categories and not self.categories:
            raise ValueError("preferred categories were given, but this data's items have no categories")
        if unknown:
            raise ValueError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {_named(unknown)}; "
                             f"known: {_named(self.categories)} ({len(self.categories)} in all)")
        stated: dict[str, str] = {}
        for name, value in (attributes or {}).items():
            if name not in self.attributes:
                raise ValueError(f"unknown user attribute {name!r}: this data segments users by "
                                 f"{list(self.attributes) or 'nothing (no users table)'}")
            if value is None:
                continue
            text = age_band(value) if name == AGE else str(value)
            if text not in self.values[name]:
                raise ValueError(f"unknown {name} {value!r}; known: {_named(sorted(self.values[name]))}")
            stated[name] = text
        return stated

    def segment_for(self, stated: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The largest-enough segment: every stated attribute, dropping the last in
        ATTRIBUTE_ORDER while it has fewer than `min_users` users; () when none is."""
        names = [a for a in ATTRIBUTE_ORDER if a in stated]
        while names:
            key = tuple((a, stated[a]) for a in names)
            if key in self._segments and self._segments[key][0] >= self.min_users:
                return key
            names.pop()
        return ()

    def recommend(self, k: int, categories: Collection[str] = (), attributes: Mapping[str, Any] | None = None,
                  exclude: Collection[str] = ()) -> OnboardingList:
        """Up to k items, best first, for a new user with these stated preferences."""
        stated = self.check(categories, attributes)
        segment = self.segment_for(stated)
        scores = self.overall
        if segment:
            scores = self._segments[segment][1].reindex(self.item_ids, fill_value=0).to_numpy(dtype=np.float64)
        allowed = np.ones(len(self.item_ids), dtype=bool)
        if categories:
            allowed &= np.isin(self.category, list(categories))
        if exclude:
            allowed &= ~np.isin(self.item_ids, [str(e) for e in exclude])
        rows = np.flatnonzero(allowed)
        # Segment popularity, then overall popularity, then the id: a full, stable list.
        order = rows[np.lexsort((self.item_ids[rows].astype(str), -self.overall[rows], -scores[rows]))][:k]
        fallback = (CATEGORIES_IN_SEGMENT if segment else STATED_CATEGORIES) if categories else \
            (SEGMENT if segment else POPULAR)
        return OnboardingList([str(i) for i in self.item_ids[order]], scores[order].tolist(), fallback,
                              _reason(categories, segment, stated), dict(segment))


def _reason(categories: Collection[str], segment: tuple[tuple[str, str], ...], stated: Mapping[str, str]) -> str:
    where = f" in {', '.join(categories)}" if categories else ""
    among = f" among users with {', '.join(f'{a} {v}' for a, v in segment)}" if segment else " among all users"
    dropped = [a for a in stated if a not in dict(segment)]
    note = f" ({', '.join(dropped)} left out: too few such users)" if dropped else ""
    return f"popular{where}{among}{note}"


def _named(items: Sequence[object]) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")
