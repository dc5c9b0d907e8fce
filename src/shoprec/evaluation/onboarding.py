"""Onboarding evaluated on new users' first interactions, against plain popularity.

New users are those who arrived last: a user whose first event falls after the `share`
quantile of all users' first events is new, and popularity (overall, per category, per
segment) is counted from the events before that cut only, so nothing a new user did leaks into
what they are recommended. Each new user's answer is scored against their first `first_n`
distinct items (precision@k, recall@k, NDCG@k with binary relevance), paired with plain
popularity user by user (95% bootstrap interval of the mean difference).

What a method may know, stated honestly:
- segment methods use the users table's attributes (ML-100K: age, gender, occupation), which
  a sign-up form can ask;
- "first-basket categories" (data with item categories but no user attributes: the synthetic
  shop; the Instacart sample carries neither) stands in for stated preferences with the
  categories of the user's first session; those items are then known, so they are not targets:
  the answer is scored on the first `first_n` distinct items after the first session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.evaluation import metrics as M
from shoprec.ranking.onboarding import ATTRIBUTE_ORDER, OnboardingPopularity

NEW_USER_SHARE = 0.2


@dataclass
class NewUsers:
    """The events before the cut (what popularity may count), and per new user their
    stated categories (first-basket protocol only) and first distinct items (the targets)."""

    known: pd.DataFrame
    users: list[str]
    targets: list[list[str]]
    categories: list[tuple[str, ...]]
    cut: pd.Timestamp


def new_users(data: EventData, share: float = NEW_USER_SHARE, first_n: int = 10,
              first_basket: bool = False) -> NewUsers:
    """The newest `share` of users by first event, and their targets (see the module docstring)."""
    events = data.events.sort_values([S.USER_ID, S.TIMESTAMP], kind="stable")
    events = events.assign(**{S.USER_ID: events[S.USER_ID].astype(str), S.ITEM_ID: events[S.ITEM_ID].astype(str)})
    first_seen = events.groupby(S.USER_ID)[S.TIMESTAMP].min()
    cut = first_seen.quantile(1.0 - share)
    arriving = set(first_seen.index[first_seen >= cut])
    category = {}
    if first_basket:
        if data.items is None or S.CATEGORY not in data.items or S.SESSION_ID not in events:
            raise ValueError("the first-basket protocol needs sessions and item categories")
        category = dict(zip(data.items[S.ITEM_ID].astype(str), data.items[S.CATEGORY].astype(str)))
    users, targets, stated = [], [], []
    for user, rows in events[events[S.USER_ID].isin(arriving)].groupby(S.USER_ID, sort=True):
        items = rows[S.ITEM_ID].to_numpy()
        cats: tuple[str, ...] = ()
        if first_basket:
            in_first = (rows[S.SESSION_ID] == rows[S.SESSION_ID].iloc[0]).to_numpy()
            cats = tuple(sorted({category[i] for i in items[in_first] if i in category}))
            items = items[~in_first]
        distinct = list(dict.fromkeys(items))[:first_n]
        if distinct:
            users.append(str(user)), targets.append(distinct), stated.append(cats)
    return NewUsers(events[events[S.TIMESTAMP] < cut], users, targets, stated, cut)


def list_metrics(recommended: list[str], targets: list[str], k: int) -> tuple[float, float, float]:
    """(precision@k, recall@k, NDCG@k) of one list against a set of relevant items."""
    relevant = set(targets)
    gains = np.array([1.0 if item in relevant else 0.0 for item in recommended[:k]])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[:min(len(relevant), k)].sum()
    hits = gains.sum()
    return hits / k, hits / min(len(relevant), k), float(gains @ discounts[:len(gains)] / ideal)


def evaluate_onboarding(data: EventData, *, k: int = 10, first_n: int = 10, share: float = NEW_USER_SHARE,
                        first_basket: bool = False, bootstrap: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per method, plain popularity first: users, precision/recall/NDCG@k, the paired
    NDCG difference from popularity, and which fallbacks answered (name -> users)."""
    split = new_users(data, share, first_n, first_basket)
    table = OnboardingPopularity(split.known, data.items, data.users)
    attributes = {}
    if data.users is not None and table.attributes:
        users = data.users.assign(**{S.USER_ID: data.users[S.USER_ID].astype(str)}).set_index(S.USER_ID)
        attributes = {u: {a: users.at[u, a] for a in table.attributes if pd.notna(users.at[u, a])}
                      for u in split.users if u in users.index}
    methods: dict[str, Callable[[int], tuple[tuple[str, ...], dict[str, Any]]]] = {
        "popular": lambda n: ((), {})}
    for name in table.attributes:
        methods[f"segment: {name}"] = lambda n, name=name: (
            (), {name: attributes.get(split.users[n], {}).get(name)})
    if len(table.attributes) > 1:
        methods[f"segment: {' + '.join(table.attributes)} (backoff)"] = lambda n: (
            (), attributes.get(split.users[n], {}))
    if first_basket:
        methods["first-basket categories"] = lambda n: (split.categories[n], {})
    rows: list[dict[str, Any]] = []
    base: np.ndarray | None = None
    for method, stated in methods.items():
        scores, fallbacks = [], {}
        for n, target in enumerate(split.targets):
            categories, attrs = stated(n)
            attrs = {a: v for a, v in attrs.items() if v is not None and a in ATTRIBUTE_ORDER}
            answer = table.recommend(k, categories, attrs)
            fallbacks[answer.fallback] = fallbacks.get(answer.fallback, 0) + 1
            scores.append(list_metrics(answer.items, target, k))
        values = np.array(scores).reshape(-1, 3)
        base = values[:, 2] if base is None else base
        low, high = M.bootstrap_interval(values[:, 2] - base, bootstrap, seed=seed)
        rows.append({"method": method, "users": len(values), f"P@{k}": float(values[:, 0].mean()),
                     f"R@{k}": float(values[:, 1].mean()), f"NDCG@{k}": float(values[:, 2].mean()),
                     "delta": float((values[:, 2] - base).mean()), "delta_low": low, "delta_high": high,
                     "fallbacks": fallbacks, "cut": str(split.cut)})
    return rows
