"""The evaluator (seen items, ties), the splits and the baselines on tiny literal data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import pandas as pd
import torch

from shoprec import schema as S
from shoprec.evaluation.evaluate import evaluate, rank_targets
from shoprec.evaluation.splits import EvalSet, leave_one_out, temporal_split
from shoprec.models.base import Recommender
from shoprec.models.baselines import BuyAgain, ItemKNN, Markov1, MostPop
from shoprec.sequences import Sequences, build_sequences, build_vocab
from shoprec.training.batches import training_windows


class FixedScores(Recommender):
    """Scores item i as `values[i]` for everyone."""

    kind = "fixed"

    def __init__(self, values: list[float]) -> None:
        super().__init__(len(values) - 1)
        self.values = torch.tensor(values, dtype=torch.float32)

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        scores = self.values.expand(len(histories), -1).clone()
        scores[:, 0] = float("-inf")
        return scores


def eval_set(histories, targets) -> EvalSet:
    return EvalSet(np.array([f"u{i}" for i in range(len(targets))], dtype=object),
                   [np.array(h, dtype=np.int64) for h in histories], np.array(targets))


def test_evaluator_excludes_seen_items_when_the_policy_says_so():
    model = FixedScores([0, 5, 4, 3, 2, 1])  # items 1 > 2 > 3 > 4 > 5
    data = eval_set([[1, 2]], [3])
    ranks, lists = rank_targets(model, data, exclude_seen=True, k=3)
    assert ranks.tolist() == [0] and lists.tolist() == [[3, 4, 5]]
    ranks, lists = rank_targets(model, data, exclude_seen=False, k=3)
    assert ranks.tolist() == [2] and lists.tolist() == [[1, 2, 3]]
    # A target already in the history cannot be recommended under exclusion: it ranks last.
    ranks, _ = rank_targets(model, eval_set([[1, 3]], [3]), exclude_seen=True)
    assert ranks.tolist() == [4]  # behind all 4 other items (padding is not an item)


def test_evaluator_handles_ties_pessimistically():
    constant = FixedScores([0, 1, 1, 1, 1, 1])
    result = evaluate(constant, eval_set([[1]] * 4, [2, 3, 4, 5]), exclude_seen=True,
                      popularity=np.ones(6), k=3, bootstrap=50)
    # 4 candidates tie for each user: every target has 3 others at or above it -> rank 3
    assert result.metrics["HR@3"] == 0.0 and result.metrics["NDCG@3"] == 0.0
    assert result.intervals["NDCG@3"] == (0.0, 0.0)


def test_evaluator_reports_segments_and_list_metrics():
    model = FixedScores([0, 5, 4, 3, 2, 1])
    data = eval_set([[5], [5, 4, 3, 2]], [1, 1])
    popularity = np.array([0, 1, 10, 10, 10, 10])  # item 1 is long tail
    result = evaluate(model, data, exclude_seen=True, popularity=popularity,
                      category=np.array([0, 1, 1, 2, 2, 3]), k=2, short_history=1, bootstrap=20)
    assert result.metrics["HR@2"] == 1.0
    assert result.segments["short history (<= 1 items)"]["users"] == 1
    assert result.segments["long-tail targets"]["HR@2"] == 1.0
    assert result.metrics["coverage"] == 3 / 5  # lists [1, 2] and [1, 5] -> items 1, 2, 5


def test_leave_one_out_and_temporal_split():
    events = pd.DataFrame({
        S.USER_ID: ["a"] * 4 + ["b"] * 2,
        S.ITEM_ID: ["x", "y", "z", "w", "y", "x"],
        S.TIMESTAMP: pd.to_datetime([1, 2, 3, 4, 1, 5], unit="D", utc=True),
    })
    vocab = build_vocab(events)
    assert vocab.ids == ("w", "x", "y", "z")
    seqs = build_sequences(events.sample(frac=1, random_state=0), vocab)  # order restored by time
    assert [s.tolist() for s in seqs.items] == [[2, 3, 4, 1], [3, 2]]
    split = leave_one_out(seqs)
    assert [s.tolist() for s in split.train] == [[2, 3], [3]]
    assert split.valid.targets.tolist() == [4] and split.test.targets.tolist() == [1, 2]
    assert [h.tolist() for h in split.test.histories] == [[2, 3, 4], [3]]
    temporal = temporal_split(events, vocab, pd.Timestamp("1970-01-04 12:00"))
    assert temporal.test.targets.tolist() == [1, 2]  # a: w at day 4; b: x at day 5
    assert [h.tolist() for h in temporal.test.histories] == [[2, 3, 4], [3]]
    assert [s.tolist() for s in temporal.train] == [[2, 3], [3]]


def test_leave_one_out_with_a_validation_sample_trains_the_others_on_their_second_last_item():
    users = np.array([f"u{i}" for i in range(6)], dtype=object)
    items = [np.arange(1, 6) + 10 * i for i in range(5)] + [np.array([61, 62])]
    seqs = Sequences(users, items)
    split = leave_one_out(seqs, validation_users=2, seed=3)
    validated = set(split.valid.users.tolist())
    assert len(validated) == 2 and validated <= {f"u{i}" for i in range(5)}  # 3+ items only
    for user, seq, train in zip(users, items, split.train):
        if user in validated:
            assert train.tolist() == seq[:-2].tolist()
        elif len(seq) >= 3:
            assert train.tolist() == seq[:-1].tolist()  # the second-last item is trained on
        else:
            assert train.tolist() == seq[:1].tolist()
        assert seq[-1] not in train  # never a test target
    # validation targets are the validated users' second-last items; the test is unchanged
    assert split.valid.targets.tolist() == [int(items[int(u[1:])][-2]) for u in split.valid.users]
    assert split.test.targets.tolist() == [int(s[-1]) for s in items]
    assert [h.tolist() for h in split.test.histories] == [s[:-1].tolist() for s in items]
    # the same seed picks the same users; None (and a sample as large as everyone) validates all
    assert leave_one_out(seqs, 2, seed=3).valid.users.tolist() == split.valid.users.tolist()
    assert len(leave_one_out(seqs).valid) == len(leave_one_out(seqs, 50).valid) == 5


def test_training_windows_cover_every_transition_once():
    windows = training_windows([np.arange(1, 8)], max_len=3, crops="all")
    # [1..7] -> windows of 4 items ending at 7, then ending at 4, sharing boundaries
    assert windows.tolist() == [[4, 5, 6, 7], [1, 2, 3, 4]]
    assert training_windows([np.arange(1, 8)], max_len=3, crops="last").tolist() == [[4, 5, 6, 7]]
    assert training_windows([np.array([5, 6])], max_len=3).tolist() == [[0, 0, 5, 6]]


def test_baselines_on_tiny_sequences():
    train = [np.array([1, 2, 3]), np.array([1, 2]), np.array([2, 3, 3])]
    pop = MostPop(4).fit(train)
    assert pop.topk([np.array([])], 2, exclude=False)[0].tolist() == [[2, 3]]  # 2: 3x, 3: 3x, tie by index
    markov = Markov1(4).fit(train)
    # after 2 came 3 twice and nothing else; then popularity decides
    assert markov.topk([np.array([1, 2])], 2, exclude=True)[0].tolist() == [[3, 4]]
    assert markov.topk([np.array([1, 2])], 1, exclude=False)[0].tolist() == [[3]]
    knn = ItemKNN(4, neighbours=2).fit(train)
    scores = knn.score_all([np.array([1])])
    assert scores[0, 2] > scores[0, 4]  # 2 co-occurs with 1; 4 never occurs
    again = BuyAgain(4).fit(train)
    assert again.topk([np.array([4, 1, 4])], 2, exclude=False)[0].tolist() == [[4, 1]]
    assert torch.isfinite(again.loss(_batch([[4, 1]], [[1, 4]])))


def _batch(inputs, targets):
    from shoprec.sequences import Batch

    return Batch(torch.tensor(inputs), torch.tensor(targets))


def test_cosine_schedule_warms_up_decays_and_plans_by_the_budget():
    from shoprec.training.loop import TrainConfig, planned_epochs, scheduled_rate

    cosine = TrainConfig(learning_rate=1.0, schedule="cosine", warmup=0.1, min_lr_ratio=0.0)
    assert scheduled_rate(cosine, 0.05) == pytest.approx(0.5)  # half-way up the warm-up
    assert scheduled_rate(cosine, 0.1) == pytest.approx(1.0)
    assert scheduled_rate(cosine, 0.55) == pytest.approx(0.5)  # half-way down the cosine
    assert scheduled_rate(cosine, 1.0) == pytest.approx(0.0)
    assert scheduled_rate(TrainConfig(learning_rate=0.3), 0.9) == 0.3  # constant
    with pytest.raises(ValueError, match="schedule"):
        scheduled_rate(TrainConfig(schedule="linear"), 0.5)
    budget = TrainConfig(max_epochs=400, budget_minutes=10)
    assert planned_epochs(budget, 0, 0.0) == 400  # nothing timed yet
    assert planned_epochs(budget, 2, 60.0) == 20  # 30 s per epoch: 20 fit in 600 s
    assert planned_epochs(TrainConfig(max_epochs=5, budget_minutes=10), 2, 60.0) == 5
    assert planned_epochs(TrainConfig(max_epochs=50), 2, 60.0) == 50


def test_vocab_index_by_dict_and_by_pandas_agree():
    from shoprec.sequences import ItemVocab

    vocab = ItemVocab(tuple(f"i{n}" for n in range(20_000)))
    ids = [f"i{n}" for n in range(0, 20_000, 7)] + ["nope", 5]
    small = vocab.index(ids[:50] + ["nope"])
    assert small.tolist() == [n + 1 for n in range(0, 350, 7)] + [0]
    big = vocab.index(ids * 4)  # the pandas path (more than 10,000 ids)
    assert big[:len(ids)].tolist() == [vocab.index([i])[0] for i in ids]


def test_stable_topk_equals_a_full_stable_sort_with_ties_and_minus_infinity():
    from shoprec.models.base import stable_topk

    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (6, 200), generator=generator).float()  # many ties
    scores[1, 3:] = float("-inf")  # fewer finite scores than k
    scores[2] = 1.0  # all tied
    for k in (1, 10, 50):
        want = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
        assert torch.equal(stable_topk(scores, k), want)


def _dense_item_knn(sequences: Sequence[np.ndarray], n_items: int, neighbours: int) -> np.ndarray:
    """Oracle: the whole [N+1, N+1] cosine matrix, each row's `neighbours` most similar items
    kept (positive only, ties to the lower index)."""
    users = np.zeros((len(sequences), n_items + 1))
    for u, seq in enumerate(sequences):
        users[u, seq] = 1.0
    norms = np.sqrt(users.sum(0))
    norms[norms == 0] = 1.0
    sims = (users.T @ users) / np.outer(norms, norms)
    np.fill_diagonal(sims, 0.0)
    kept = np.zeros_like(sims)
    for row in range(n_items + 1):
        order = np.lexsort((np.arange(n_items + 1), -sims[row]))
        chosen = [c for c in order[:neighbours] if sims[row, c] > 0]
        kept[row, chosen] = sims[row, chosen]
    return kept


@pytest.mark.parametrize("block_entries", [1, 50, 8_000_000])
def test_item_knn_keeps_each_items_nearest_neighbours_in_sparse_blocks(monkeypatch, block_entries):
    """The sparse, blocked fit equals the dense cosine top-k (ties to the lower index), whatever
    the block size: one row per block, a few rows, the whole matrix in one block."""
    import shoprec.models.baselines as baselines

    monkeypatch.setattr(baselines, "KNN_BLOCK_ENTRIES", block_entries)
    rng = np.random.default_rng(3)
    n_items = 40
    sequences = [rng.integers(1, n_items + 1, size=rng.integers(1, 15)) for _ in range(60)]
    model = ItemKNN(n_items, neighbours=5).fit(sequences)
    fitted = model._matrix().toarray()
    expected = _dense_item_knn(sequences, n_items, 5)
    assert (fitted > 0).sum(1).max() <= 5
    np.testing.assert_allclose(fitted, expected, rtol=1e-6, atol=1e-7)
