"""Diversity: maximal marginal relevance (MMR, Carbonell & Goldstein 1998) re-ranking and
intra-list diversity, over item categories or content embeddings.

MMR builds the list greedily from a candidate pool (the model's best items, best first): each
next item maximises

    (1 - diversity) x relevance(item) - diversity x max similarity(item, items already chosen)

Relevance here is the item's place in the pool, 1 for the model's best down to 0 for the
pool's last: rank-based, so the trade-off means the same for every model whatever its score
scale (a count, a logit). Similarity is 1 between items of the same category (0 otherwise),
or the cosine of their content embeddings clipped at 0 (a zero vector, an item without a
title, is similar to nothing). diversity 0 keeps the model's order exactly; 1 ignores
relevance after the first item (ties always go to the better-ranked item).
"""

from __future__ import annotations

import numpy as np

DEFAULT_POOL = 100  # candidates considered per list: enough room for k = 10 to vary


def similarity(features: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[C, C] similarity of the item indices `items` given `features`: [N+1] integer category
    codes (1 when equal, else 0) or [N+1, D] embeddings (cosine clipped at 0)."""
    features = np.asarray(features)
    picked = features[np.asarray(items, dtype=np.int64)]
    if picked.ndim == 1:
        return (picked[:, None] == picked[None, :]).astype(np.float64)
    vectors = picked.astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
    return np.clip(unit @ unit.T, 0.0, 1.0)


def mmr(pool: np.ndarray, features: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """The k items of `pool` (item indices, best first) in MMR order; see the module docstring."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], not {diversity}")
    pool = np.asarray(pool, dtype=np.int64)
    k = min(k, len(pool))
    if diversity == 0.0 or k == 0:
        return pool[:k].copy()
    c = len(pool)
    relevance = 1.0 - np.arange(c) / max(1, c - 1)
    sims = similarity(features, pool)
    closest = np.zeros(c)  # max similarity to the items chosen so far
    taken = np.zeros(c, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    for step in range(k):
        value = (1.0 - diversity) * relevance - diversity * closest
        value[taken] = -np.inf
        best = int(np.argmax(value))  # the first maximum: ties go to the better-ranked item
        order[step], taken[best] = best, True
        closest = np.maximum(closest, sims[best])
    return pool[order]


def intra_list_diversity(items: np.ndarray, features: np.ndarray) -> float:
    """1 - mean pairwise similarity of one list (0: all alike; with categories, the share of
    pairs in different categories, as `evaluation.metrics.intra_list_diversity`)."""
    items = np.asarray(items, dtype=np.int64)
    n = len(items)
    if n < 2:
        return 0.0
    sims = similarity(features, items)
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))
