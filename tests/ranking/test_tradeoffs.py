"""Exposure metrics on hand-made lists, and the trade-off evaluations on a real model."""

from __future__ import annotations

import numpy as np
import pytest

from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.evaluation.exposure import gini, group_exposure, long_tail_share, ndcg_of_lists
from shoprec.evaluation.splits import SplitSpec, make_split
from shoprec.evaluation.tradeoffs import diversity_tradeoff, sponsored_cost
from shoprec.models.baselines import ItemKNN
from shoprec.models.content import category_codes
from shoprec.sequences import build_vocab


def test_exposure_metrics() -> None:
    lists = np.array([[1, 2, 0], [3, 1, 2]])
    head = np.array([False, True, True, False])
    assert long_tail_share(lists, head) == pytest.approx(1 / 5)
    groups = np.array([None, "A", "A", "B"], dtype=object)
    frame = group_exposure(lists, groups)
    assert frame.loc["A", "slots"] == 4 and frame.loc["B", "slot_share"] == pytest.approx(0.2)
    assert frame.loc["B", "exposure_ratio"] == pytest.approx(0.2 / (1 / 3))
    assert gini(np.array([1.0, 1.0])) == 0.0 and gini(np.array([0.0, 0.0, 1.0])) > 0.6
    assert ndcg_of_lists(lists, np.array([2, 9]), 3).tolist() == [pytest.approx(1 / np.log2(3)), 0.0]


@pytest.fixture(scope="module")
def fitted():
    data = limit_to_users(load_movielens_100k(), 200)
    vocab = build_vocab(data.events, data.items)
    split = make_split(data.events, vocab, SplitSpec("leave-one-out"))
    popularity = np.zeros(vocab.n_items + 1)
    np.add.at(popularity, np.concatenate(split.train), 1.0)
    return ItemKNN(vocab.n_items).fit(split.train), split, category_codes(data.items, vocab)[0].numpy(), popularity


def test_sponsored_cost_floor_controls_fill(fitted) -> None:
    model, split, _, _ = fitted
    rows = sponsored_cost(model, split.test, exclude_seen=True, floors=(0.0, 0.99, 1.0), bootstrap=50)
    organic, low, high, top = rows
    assert organic["floor"] is None and low["fill"] == 2.0  # 20 candidates: two always clear 0
    assert high["fill"] < low["fill"] and top["fill"] == 0.0  # nothing is strictly above 1
    assert top["NDCG@10"] == organic["NDCG@10"] and low["NDCG@10"] <= organic["NDCG@10"]
    assert high["sponsored_relevance"] > 0.99


def test_diversity_tradeoff_rows(fitted) -> None:
    model, split, codes, popularity = fitted
    rows = diversity_tradeoff(model, split.test, exclude_seen=True, features=codes, popularity=popularity,
                              values=(0.0, 1.0), bootstrap=50)
    plain, diverse = rows
    assert plain["delta"] == 0.0 and diverse["ILD@10"] > plain["ILD@10"]
    assert 0.0 <= diverse["long_tail_share"] <= 1.0 and diverse["coverage"] >= plain["coverage"] * 0.5
