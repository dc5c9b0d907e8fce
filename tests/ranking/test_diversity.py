"""MMR diversity: 0 leaves the list unchanged, 1 raises intra-list diversity; categories and
embeddings; the serving adapter on a model's score row."""

from __future__ import annotations

import numpy as np
import pytest

from shoprec.models.baselines import MostPop
from shoprec.ranking.diversity import intra_list_diversity, mmr
from shoprec.sequences import ItemVocab
from shoprec.serving.diversity import diversified

# Items 1..8 best first; the best four share category 1.
CATEGORY = np.array([0, 1, 1, 1, 1, 2, 2, 3, 3])
POOL = np.arange(1, 9)


def test_diversity_zero_leaves_the_list_unchanged() -> None:
    assert mmr(POOL, CATEGORY, 5, 0.0).tolist() == [1, 2, 3, 4, 5]


def test_diversity_one_raises_intra_list_diversity() -> None:
    plain, diverse = mmr(POOL, CATEGORY, 4, 0.0), mmr(POOL, CATEGORY, 4, 1.0)
    assert intra_list_diversity(diverse, CATEGORY) > intra_list_diversity(plain, CATEGORY)
    assert diverse.tolist() == [1, 5, 7, 2]  # best of each category first, the best item first
    assert intra_list_diversity(plain, CATEGORY) == 0.0


def test_small_diversity_moves_less_than_large() -> None:
    moved = [int((mmr(POOL, CATEGORY, 6, d) != POOL[:6]).sum()) for d in (0.0, 0.1, 0.5)]
    assert moved[0] == 0 and moved[0] <= moved[1] <= moved[2] and moved[2] > 0


def test_embeddings_spread_near_duplicates() -> None:
    vectors = np.zeros((5, 2))
    vectors[1:4] = [1.0, 0.0]  # items 1-3: the same direction
    vectors[4] = [0.0, 1.0]
    order = mmr(np.array([1, 2, 3, 4]), vectors, 2, 0.8)
    assert order.tolist() == [1, 4]
    assert intra_list_diversity(np.array([1, 4]), vectors) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([1, 2]), vectors) == pytest.approx(0.0)


def test_out_of_range_diversity_is_refused() -> None:
    with pytest.raises(ValueError, match="diversity"):
        mmr(POOL, CATEGORY, 3, 1.5)


def test_serving_adapter_reranks_the_score_row() -> None:
    sequences = [np.array([i] * (9 - i)) for i in range(1, 9)]  # popularity falls with the index
    model, vocab = MostPop(8).fit(sequences), ItemVocab(tuple(f"i{i}" for i in range(1, 9)))
    scores = model.score_all([np.zeros(0, dtype=np.int64)]).float()
    plain = diversified(scores, vocab, CATEGORY, k=4, diversity=0.0)
    assert plain["items"] == ["i1", "i2", "i3", "i4"] and plain["diversity@4"] == 0.0
    scores[0, 5] = float("-inf")  # excluded: never in the pool
    diverse = diversified(scores, vocab, CATEGORY, k=4, diversity=1.0)
    assert diverse["items"] == ["i1", "i6", "i7", "i2"]
    assert diverse["scores"][1] == pytest.approx(float(scores[0, 6]))
    assert diverse["diversity@4"] > plain["diversity@4"]
