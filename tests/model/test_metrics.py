"""Metric functions against hand-computed tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shoprec.evaluation import metrics as M

NEG = float("-inf")


def test_pessimistic_ranks_count_ties_against_the_target():
    scores = torch.tensor([
        [NEG, 0.9, 0.5, 0.5, 0.1],  # target 2 ties with item 3, below item 1 -> rank 2
        [NEG, 0.2, 0.2, 0.2, 0.2],  # all equal: target 4 is behind the 3 others -> rank 3
        [NEG, 0.1, 0.3, 0.2, 0.9],  # target 4 is best -> rank 0
        [NEG, 0.5, NEG, 0.1, 0.2],  # target 2 masked (-inf) -> behind all 3 other items
    ])
    ranks = M.pessimistic_ranks(scores, torch.tensor([2, 4, 4, 2]))
    assert ranks.tolist() == [2, 3, 0, 3]


def test_hit_rate_ndcg_mrr_by_hand():
    ranks = np.array([0, 1, 4, 10])
    assert M.hit_rate_at_k(ranks, 5).tolist() == [1, 1, 1, 0]
    assert M.ndcg_at_k(ranks, 5) == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0])
    assert M.mrr_at_k(ranks, 5) == pytest.approx([1.0, 0.5, 0.2, 0.0])
    assert M.hit_rate_at_k(ranks, 1).mean() == 0.25


def test_coverage_popularity_and_diversity_by_hand():
    lists = np.array([[1, 2], [1, 3]])
    assert M.catalog_coverage(lists, 4) == 0.75
    percentiles = M.popularity_percentiles(np.array([0, 10, 5, 5, 1]))
    # counts 10, 5, 5, 1 -> ranks 3, (1+2)/2, (1+2)/2, 0 over 3
    assert percentiles.tolist() == pytest.approx([0, 1.0, 0.5, 0.5, 0.0])
    assert M.popularity_bias(lists, percentiles).tolist() == pytest.approx([0.75, 0.75])
    category = np.array([0, 7, 7, 8, 9])
    assert M.intra_list_diversity(np.array([[1, 2], [1, 3], [1, 3]]), category).tolist() == [0.0, 1.0, 1.0]
    assert M.intra_list_diversity(np.array([[1, 2, 3]]), category).tolist() == pytest.approx([4 / 6])


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    values = np.r_[np.ones(30), np.zeros(70)]
    low, high = M.bootstrap_interval(values, 500, seed=1)
    assert low < 0.3 < high
    assert 0.15 < low and high < 0.45
    assert (low, high) == M.bootstrap_interval(values, 500, seed=1)
    assert M.bootstrap_interval(np.ones(10), 100) == (1.0, 1.0)
