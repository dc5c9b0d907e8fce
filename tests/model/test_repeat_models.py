"""Repeat-purchase models: the time-decayed frequency, TIFU-KNN, their tuning on held-out
training items, and the transformer's whole-history repeat bonus, on tiny literal data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoprec.evaluation.splits import EvalSet
from shoprec.evaluation.tuning import baseline_kinds, fit_baseline, holdout
from shoprec.models.baselines import TIFUKNN, BuyAgain, DecayedFrequency, decayed_counts, tifu_vectors
from shoprec.models.bundle import load_bundle, save_bundle
from shoprec.models.inference import BundleRecommender
from shoprec.models.sasrec import SASRec
from shoprec.sequences import ItemVocab


def arrays(*histories: list[int]) -> list[np.ndarray]:
    return [np.array(h, dtype=np.int64) for h in histories]


def test_decayed_counts_weigh_each_purchase_by_the_items_bought_since():
    counts = decayed_counts(arrays([1, 2, 1], []), n_items=3, decay=0.5).toarray()
    # item 1: 0.5 ** 2 (two items since) + 0.5 ** 0 (the newest); item 2: 0.5 ** 1.
    assert counts[0].tolist() == [0.0, 1.25, 0.5, 0.0] and counts[1].tolist() == [0.0] * 4


def test_decayed_frequency_prefers_what_the_user_buys_now_and_is_buy_again_at_decay_one():
    history = arrays([1, 1, 1, 2, 2])  # bought 1 three times long ago, 2 twice lately
    popular = arrays([3, 3, 3, 3])
    recent = DecayedFrequency(3, decay=0.5).fit(popular)
    assert recent.topk(history, 3, exclude=False)[0].tolist() == [[2, 1, 3]]
    counts = DecayedFrequency(3, decay=1.0).fit(popular)
    assert counts.topk(history, 3, exclude=False)[0].tolist() == \
        BuyAgain(3).fit(popular).topk(history, 3, exclude=False)[0].tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError):
        DecayedFrequency(3, decay=0.0)


def test_tifu_vector_is_the_paper_formula_on_a_hand_computed_history():
    # Baskets of 2 counted from the newest: [1, 2] then [3, 4]; 3 groups asked, 2 baskets, so
    # one basket per group. Old basket: 0.9 (within) x 0.7 (group) / 2 groups; new one: 1 / 2.
    vector = tifu_vectors(arrays([1, 2, 3, 4]), 4, basket_size=2, within_decay=0.9,
                          group_decay=0.7, groups=3).toarray()[0]
    assert vector.tolist() == pytest.approx([0.0, 0.315, 0.315, 0.5, 0.5])
    # Five baskets of one item in 2 groups ([a, b, c] and [d, e]): within-decay over all baskets.
    five = tifu_vectors(arrays([1, 2, 3, 4, 5]), 5, basket_size=1, within_decay=0.5,
                        group_decay=0.5, groups=2).toarray()[0]
    expected = [0.0, 0.5 ** 4 * 0.5 / 3 / 2, 0.5 ** 3 * 0.5 / 3 / 2, 0.5 ** 2 * 0.5 / 3 / 2, 0.5 / 2 / 2, 1 / 2 / 2]
    assert five.tolist() == pytest.approx(expected)


def test_tifu_knn_recommends_what_similar_users_buy_and_its_own_items_first():
    # Two tastes: {1, 2, 3} buyers also buy 4; {5, 6, 7} buyers also buy 8.
    train = arrays(*([[1, 2, 3, 4]] * 5 + [[5, 6, 7, 8]] * 5))
    model = TIFUKNN(8, neighbours=5, alpha=0.7, basket_size=2).fit(train)
    top = model.topk(arrays([1, 2, 3], [5, 6]), 4, exclude=False)[0].tolist()
    assert set(top[0][:3]) == {1, 2, 3} and top[0][3] == 4
    assert set(top[1][:2]) == {5, 6} and set(top[1][2:4]) == {7, 8}


def test_tifu_knn_neighbour_search_in_user_blocks_equals_the_brute_force_one(monkeypatch):
    rng = np.random.default_rng(3)
    train = [rng.integers(1, 30, size=rng.integers(2, 25)) for _ in range(60)]
    queries = [rng.integers(1, 30, size=rng.integers(1, 25)) for _ in range(9)]
    model = TIFUKNN(30, neighbours=7, basket_size=3).fit(train)
    users, q = model.vectors(train).toarray(), model.vectors(queries).toarray()
    brute = np.argsort(((q[:, None, :] - users[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :7]
    monkeypatch.setattr(TIFUKNN, "USER_BLOCK", 8)  # 8 blocks: only 2k candidates kept at a time
    found = model.nearest(model.vectors(queries))
    assert [sorted(r) for r in found.tolist()] == [sorted(r) for r in brute.tolist()]
    full = model.score_all(queries)
    monkeypatch.setattr(TIFUKNN, "USER_BLOCK", 4096)
    assert torch.allclose(full, model.score_all(queries))


def test_baselines_are_tuned_on_held_out_training_items_and_the_best_setting_is_refit():
    # Each user's newest purchases repeat their latest staple, not their most frequent one:
    # a strong decay predicts the held-out items, plain counts do not.
    rng = np.random.default_rng(0)
    sequences = []
    for _ in range(80):
        old, new = rng.choice(np.arange(1, 41), size=2, replace=False)
        sequences.append(np.array([old] * 8 + [int(x) for x in rng.integers(1, 41, size=6)] + [new] * 3 + [new]))
    train, valid = holdout(sequences)
    assert len(valid) == 80 and all(len(t) == len(s) - 1 for t, s in zip(train, sequences))
    assert valid.targets.tolist() == [int(s[-1]) for s in sequences]
    tuned = fit_baseline("decayfreq", 40, sequences, exclude_seen=False)
    assert tuned.chosen["decay"] < 1.0
    assert tuned.scores[f"decay={tuned.chosen['decay']:g}"] == max(tuned.scores.values())
    assert tuned.scores[f"decay={tuned.chosen['decay']:g}"] > tuned.scores["decay=1"]
    # Refit on the whole sequences (the held-out items included).
    assert tuned.model.popularity.sum() == sum(len(s) for s in sequences)
    assert baseline_kinds(exclude_seen=True) == ["mostpop", "markov1", "itemknn"]
    assert baseline_kinds(exclude_seen=False)[-3:] == ["buyagain", "decayfreq", "tifuknn"]


def test_tifu_knn_saves_and_loads_through_a_bundle(tmp_path):
    train = arrays([1, 2, 3], [2, 3, 4], [4, 5])
    model = TIFUKNN(5, neighbours=2, basket_size=1).fit(train)
    vocab = ItemVocab(tuple(f"i{i}" for i in range(1, 6)))
    path = save_bundle(tmp_path / "tifu", model, vocab, exclude_seen=False, metrics={})
    loaded = load_bundle(path).model
    assert isinstance(loaded, TIFUKNN) and loaded.config() == model.config()
    assert torch.equal(loaded.score_all(arrays([1, 2])), model.score_all(arrays([1, 2])))


def test_the_repeat_bonus_counts_the_whole_history_not_only_the_window(tmp_path):
    """The transformer reads its newest max_len items; the repeat bonus reads everything the
    history carries, and serving (which passes the request's history) scores the same."""
    torch.manual_seed(0)
    model = SASRec(6, max_len=3, hidden=8, blocks=1, dropout=0.0, repeat_weight=5.0, repeat_decay=0.9).eval()
    history = arrays([1, 1, 1, 1, 2, 3, 4])  # item 1 only before the window of 3
    bonus = model.repeat_bonus(history)[0]
    assert bonus[1] == pytest.approx(5.0 * np.log1p(sum(0.9 ** a for a in (3, 4, 5, 6))))
    assert bonus[4] == pytest.approx(5.0 * np.log1p(1.0)) and bonus[5] == 0.0
    plain = model.transformer_scores(history)
    assert torch.allclose(model.score_all(history), plain + bonus)
    # Serving: a bundle and BundleRecommender rank exactly as the model did in evaluation.
    vocab = ItemVocab(tuple(f"i{i}" for i in range(1, 7)))
    path = save_bundle(tmp_path / "sasrec", model, vocab, exclude_seen=False, metrics={})
    served = BundleRecommender.from_bundle(path).recommend([f"i{i}" for i in history[0]], k=6)
    items, scores = model.topk(history, 6, exclude=False)
    assert [r.item_id for r in served] == [f"i{i}" for i in items[0].tolist()]
    assert [r.score for r in served] == pytest.approx(scores[0].tolist())
    assert load_bundle(path).model.repeat_decay == 0.9


def test_repeat_tuning_chooses_weight_and_decay_on_validation_only():
    from shoprec.training.fit import tune_repeat_weight

    torch.manual_seed(0)
    model = SASRec(40, max_len=4, hidden=8, blocks=1, dropout=0.0).eval()
    # Validation: the target is each user's most recent staple; an old frequent item misleads
    # plain counts, so a decay below 1 must win, and with it a positive weight (the untrained
    # transformer alone ranks the 40 items at random).
    rng = np.random.default_rng(1)
    pairs = [rng.choice(np.arange(1, 41), size=5, replace=False) for _ in range(30)]
    histories = [np.array([p[0]] * 6 + [p[1], p[2], p[3], p[4], p[4]]) for p in pairs]
    valid = EvalSet(np.arange(30).astype(object), histories, np.array([p[4] for p in pairs]))
    found = tune_repeat_weight(model, valid, (0.0, 1.0, 64.0), decays=(1.0, 0.5))
    assert set(found) == {"0@1", "0@0.5", "1@1", "1@0.5", "64@1", "64@0.5"}
    assert model.repeat_weight > 0 and model.repeat_decay == 0.5
    assert found[f"{model.repeat_weight:g}@0.5"] == max(found.values()) > found["0@1"]
