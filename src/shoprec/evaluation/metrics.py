"""Ranking metrics as pure functions of 0-based ranks and recommendation lists.

A rank is the number of items placed above the target; ties count against the target
(pessimistic), so a model that scores everything equal gets no credit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """0-based rank of each target: the number of OTHER items scoring >= the target.

    scores [B, N+1] (masked items -inf), targets [B]. A target scored -inf (e.g. excluded
    as seen) ranks behind every item."""
    scores = scores.float()
    target_scores = scores.gather(1, targets.view(-1, 1))  # [B, 1]
    # Column 0 is padding, never a candidate; minus one for the target itself.
    at_or_above = (scores[:, 1:] >= target_scores).sum(1) - 1
    return at_or_above.cpu().numpy().astype(np.int64)


def hit_rate_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per user: 1 if the target is in the top k."""
    return (np.asarray(ranks) < k).astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per user, one relevant item: 1 / log2(rank + 2) inside the top k, else 0."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def mrr_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per user: 1 / (rank + 1) inside the top k, else 0."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1.0 / (ranks + 1.0), 0.0)


def catalog_coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the N items that appear in at least one list (recommended [B, k], indices 1..N)."""
    return len(np.unique(np.asarray(recommended))) / n_items if n_items else 0.0


def popularity_percentiles(popularity: np.ndarray) -> np.ndarray:
    """[N+1] percentile (0..1, 1 = most popular) of each item by training interactions;
    equal counts share the mean of their ranks. Index 0 (padding) is 0."""
    counts = np.asarray(popularity, dtype=np.float64)[1:]
    order = counts.argsort(kind="stable")
    ranks = np.empty(len(counts))
    ranks[order] = np.arange(len(counts))
    # Average the ranks of ties so two items with the same count get the same percentile.
    _, inverse, tie_counts = np.unique(counts, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    mean_rank = sums[inverse] / tie_counts[inverse]
    out = np.zeros(len(counts) + 1)
    out[1:] = mean_rank / max(1, len(counts) - 1)
    return out


def popularity_bias(recommended: np.ndarray, percentiles: np.ndarray) -> np.ndarray:
    """Per list: the mean popularity percentile of the recommended items."""
    return np.asarray(percentiles)[np.asarray(recommended)].mean(axis=1)


def intra_list_diversity(recommended: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Per list: the share of item pairs whose categories differ (0 = one category)."""
    cats = np.asarray(category)[np.asarray(recommended)]  # [B, k]
    k = cats.shape[1]
    if k < 2:
        return np.zeros(len(cats))
    differ = cats[:, :, None] != cats[:, None, :]  # [B, k, k]
    return differ.sum(axis=(1, 2)) / (k * (k - 1))


def bootstrap_interval(
    values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-user `values`.

    groups: the user of each value where a user has several (an evaluation set with several
    session openings per user, `SplitSpec.test_sessions`): users are resampled with all their
    values (a cluster bootstrap of the mean over every value), since one user's values are not
    independent. Where every value has its own user it is the plain bootstrap, draw for draw."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    tail = (1.0 - confidence) / 2.0
    codes = None
    if groups is not None:
        codes, uniques = pd.factorize(np.asarray(groups, dtype=object))
        if len(uniques) == len(values):
            codes = None
    if codes is not None:
        g = int(codes.max()) + 1
        sums, counts = np.bincount(codes, values, minlength=g), np.bincount(codes, minlength=g).astype(np.float64)
        means = np.concatenate([
            (draws @ sums) / (draws @ counts)
            for draws in (rng.multinomial(g, np.full(g, 1.0 / g), size=min(200, n_resamples - s))
                          for s in range(0, n_resamples, 200))
        ])
        return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))
    # Resample counts per user instead of indices: the same distribution, O(n) memory.
    n = len(values)
    means = np.concatenate([
        rng.multinomial(n, np.full(n, 1.0 / n), size=min(200, n_resamples - s)) @ values / n
        for s in range(0, n_resamples, 200)
    ])
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))
