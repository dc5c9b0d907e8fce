"""Evaluation cost stays linear in the log: evaluation sets are a fixed, reproducible sample past
`eval_users`, and ranking keeps only each batch's top k (not a whole score ordering per batch)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from shoprec.evaluation.splits import EvalSet, SplitSpec, cap_users, make_split
from shoprec.sequences import build_vocab


def _eval_set(users: int) -> EvalSet:
    ids = np.array([f"u{i}" for i in range(users)], dtype=object)
    return EvalSet(ids, [np.array([i % 7 + 1, i % 5 + 1]) for i in range(users)],
                   np.arange(users, dtype=np.int64) % 9 + 1)


def test_a_large_evaluation_set_is_a_fixed_sample_the_same_in_any_order():
    full = _eval_set(1000)
    kept = cap_users(full, 100, seed=0)

    assert len(kept) == 100 and set(kept.users) <= set(full.users)
    position = {user: i for i, user in enumerate(full.users)}
    for user, history, target in zip(kept.users, kept.histories, kept.targets):
        i = position[user]  # each kept user keeps their own history and target
        assert np.array_equal(history, full.histories[i]) and target == full.targets[i]
    order = np.random.default_rng(1).permutation(1000)
    shuffled = EvalSet(full.users[order], [full.histories[i] for i in order], full.targets[order])
    assert set(cap_users(shuffled, 100, seed=0).users) == set(kept.users)  # the hash, not a draw
    assert set(cap_users(full, 100, seed=1).users) != set(kept.users)
    assert cap_users(full, 5000) is full and cap_users(full, None) is full


def test_make_split_caps_both_evaluation_sets_and_records_the_cap():
    import pandas as pd

    from shoprec import schema as S

    users, per_user = 300, 6
    events = pd.DataFrame({
        S.USER_ID: np.repeat([f"u{i}" for i in range(users)], per_user),
        S.ITEM_ID: [f"i{(u * 3 + j) % 40}" for u in range(users) for j in range(per_user)],
        S.TIMESTAMP: pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
            np.tile(np.arange(per_user), users) * 86400 + np.repeat(np.arange(users), per_user), unit="s"),
    })
    vocab = build_vocab(events, None)

    split = make_split(events, vocab, SplitSpec("temporal", eval_users=50))
    uncapped = make_split(events, vocab, SplitSpec("temporal", eval_users=None))

    assert len(split.valid) == 50 and len(split.test) == 50
    assert len(uncapped.test) > 50 and len(uncapped.valid) > 50
    assert len(split.train) == len(uncapped.train)  # training sequences untouched
    assert split.spec.eval_users == 50 and SplitSpec.from_dict(split.spec.to_dict()) == split.spec
    assert "at most 50 users" in split.spec.describe()
    again = make_split(events.sample(frac=1.0, random_state=3), vocab, SplitSpec("temporal", eval_users=50))
    assert list(again.test.users) == list(split.test.users)  # the gate rebuilds the same set


def test_ranking_a_large_catalogue_does_not_keep_every_batchs_ordering():
    # 4,096 users x 20,001 items in batches of 512: keeping each batch's full ordering (int64)
    # costs 8 x 82 MB; keeping only the top k costs nothing that grows with the batches.
    probe = textwrap.dedent("""
        import json, numpy as np
        from shoprec.evaluation.evaluate import rank_targets
        from shoprec.evaluation.splits import EvalSet
        from shoprec.models.baselines import MostPop
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        n = 20000
        model = MostPop(n).fit([np.arange(1, n + 1) % n + 1])
        users = 4096
        ev = EvalSet(np.arange(users).astype(object), [np.array([1 + i % n]) for i in range(users)],
                     np.arange(users) % n + 1)
        rank_targets(model, EvalSet(ev.users[:8], ev.histories[:8], ev.targets[:8]), False)  # warm up
        before = hwm()
        ranks, lists = rank_targets(model, ev, False)
        print(json.dumps({"grew_mb": hwm() - before, "lists": list(lists.shape)}))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["lists"] == [4096, 10]
    assert result["grew_mb"] < 300, result


def test_a_budget_shorter_than_one_epoch_stops_inside_it_with_a_validated_model():
    # One epoch of a large log can outlast the whole budget: the loop must stop inside the epoch
    # (validating what it learnt), not run the epoch to its end.
    from shoprec.models.sasrec import SASRec
    from shoprec.training.loop import TrainConfig, train

    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 200, size=30) for _ in range(6000)]  # ~190 batches of 32 per epoch
    valid = EvalSet(np.arange(50).astype(object), [s[:-1] for s in sequences[:50]],
                    np.array([int(s[-1]) for s in sequences[:50]]))
    model = SASRec(200, max_len=30, hidden=16, blocks=1, heads=1)
    config = TrainConfig(max_epochs=3, batch_size=32, budget_minutes=0.5 / 60, progress=False)

    result = train(model, sequences, valid, config, exclude_seen=False)

    assert result.stopped == "budget" and result.epochs == 1
    assert result.best_epoch == 1 and result.best_valid_ndcg >= 0.0  # validated before stopping
    batches = -(-len(sequences) // 32)
    assert 0 < result.history[0]["steps"] < batches, result.history  # stopped inside the epoch
