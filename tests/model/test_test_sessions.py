"""A temporal test set over every session of the test period (`SplitSpec.test_sessions`): one
target per session opening after the cut, histories that grow through the period, users kept
whole by the evaluation cap, and intervals that resample users with all their targets, the
same in the evaluator, the evaluate step and the gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shoprec.errors import DataSourceError
from shoprec.evaluation import metrics as M
from shoprec.evaluation.evaluate import evaluate
from shoprec.evaluation.report import evaluate_bundle
from shoprec.evaluation.splits import EvalSet, SplitSpec, cap_users, make_split
from shoprec.lifecycle.gate import Policy, decide_promotion, paired_bootstrap
from shoprec.lifecycle.window import GateScores, GateWindow, newest_window, score_bundle
from shoprec.models.baselines import BASELINES
from shoprec.sequences import build_vocab
from shoprec.training.fit import FitConfig, fit_and_evaluate, save_outcome
from shoprec.training.loop import TrainConfig

from .test_repeat_head_wiring import habit_log

CUT = pd.Timestamp("2024-01-06", tz="UTC")  # habit_log: sessions a day apart from 2024-01-01


def test_a_temporal_split_tests_every_session_opening_after_the_cut_up_to_the_cap() -> None:
    data = habit_log(users=4, sessions=8)
    vocab = build_vocab(data.events)
    first = make_split(data.events, vocab, SplitSpec("temporal", CUT), sessions=True)
    split = make_split(data.events, vocab, SplitSpec("temporal", CUT, test_sessions=2), sessions=True)
    every = make_split(data.events, vocab, SplitSpec("temporal", CUT, test_sessions=10), sessions=True)
    assert len(first.test) == 4 and first.test.n_users == 4
    # Sessions on days 6, 7 and 8 (0-based 5, 6, 7) fall after the cut: three openings per user.
    assert len(every.test) == 12 and every.test.n_users == 4 and len(split.test) == 8
    assert every.test.describe_size() == "4 users, 12 targets"
    for user in range(4):
        rows = np.flatnonzero(every.test.users == f"u{user:02d}")
        histories = [every.test.histories[r] for r in rows]
        # Each later target's history is the earlier one's plus the whole session between.
        assert [len(h) for h in histories] == [30, 36, 42]
        assert histories[1][:30].tolist() == histories[0].tolist()
        assert all(vocab.ids[t - 1] == f"staple{user}" for t in every.test.targets[rows])
        assert [np.flatnonzero(every.test.starts[r]).tolist()[-1] for r in rows] == [24, 30, 36]
    # The first target of each user is the one the single-target split tests.
    firsts = [np.flatnonzero(every.test.users == u)[0] for u in first.test.users]
    assert every.test.targets[firsts].tolist() == first.test.targets.tolist()
    # Training and validation do not change with the test set.
    assert [s.tolist() for s in every.train] == [s.tolist() for s in first.train]


def test_test_sessions_is_recorded_and_refused_where_it_has_no_meaning() -> None:
    spec = SplitSpec("temporal", CUT, test_sessions=10)
    assert SplitSpec.from_dict(spec.to_dict()) == spec
    assert SplitSpec.from_dict({"kind": "temporal"}).test_sessions == 1  # bundles recorded before it
    assert "at most 10 per user" in spec.describe()
    with pytest.raises(DataSourceError, match="test_sessions=3 only applies to a temporal split"):
        SplitSpec("leave-one-out", test_sessions=3)
    with pytest.raises(DataSourceError, match="test_sessions must be a positive number"):
        SplitSpec("temporal", test_sessions=0)


def test_the_evaluation_cap_keeps_or_drops_a_user_with_all_their_targets() -> None:
    data = habit_log(users=12, sessions=8)
    split = make_split(data.events, build_vocab(data.events), SplitSpec("temporal", CUT, test_sessions=10,
                                                                        eval_users=5))
    assert split.test.n_users == 5 and len(split.test) == 15
    uncapped = make_split(data.events, build_vocab(data.events), SplitSpec("temporal", CUT, eval_users=None))
    capped_first = cap_users(uncapped.test, 5)
    assert sorted(set(split.test.users)) == sorted(capped_first.users)  # the same users as with one target


def test_grouped_bootstrap_resamples_users_with_all_their_values() -> None:
    rng = np.random.default_rng(0)
    per_user = rng.random(40)
    # Every user with their value three times: resampling users is the plain bootstrap of the
    # users' values, draw for draw; resampling rows would pretend to three times the users.
    tripled, users = np.repeat(per_user, 3), np.repeat(np.arange(40), 3)
    assert M.bootstrap_interval(tripled, 500, seed=3, groups=users) == pytest.approx(
        M.bootstrap_interval(per_user, 500, seed=3), abs=1e-12)
    low, high = M.bootstrap_interval(tripled, 500, seed=3)
    grouped_low, grouped_high = M.bootstrap_interval(tripled, 500, seed=3, groups=users)
    assert grouped_high - grouped_low > 1.5 * (high - low)
    # One value per user: the grouping changes nothing.
    assert M.bootstrap_interval(per_user, 500, seed=3, groups=np.arange(40)) == M.bootstrap_interval(per_user, 500, seed=3)
    # Unequal counts: the resampled statistic is the mean over every value, not over users.
    values, groups = np.array([1.0, 1.0, 1.0, 0.0]), np.array(["a", "a", "a", "b"])
    low, high = M.bootstrap_interval(values, 2000, seed=0, groups=groups)
    assert low == 0.0 and high == 1.0 and M.bootstrap_interval(values[:3], 10, groups=groups[:3]) == (1.0, 1.0)


def test_the_gate_resamples_users_with_all_their_targets() -> None:
    users = tuple(np.repeat([f"u{i}" for i in range(30)], 4).tolist())
    rng = np.random.default_rng(1)
    base = rng.random(30).repeat(4)
    candidate = GateScores("sasrec", users, base + 0.02, 0.5)
    other = {name: GateScores(name, users, base, 0.5) for name in ("mostpop", "markov1")}
    decision = decide_promotion(candidate, None, short_history=np.zeros(120, bool), baselines=other)
    check = next(c for c in decision.checks if c.name == "NDCG@10 significance vs mostpop")
    expected = paired_bootstrap(candidate.ndcg, base, 1000, 0.95, Policy().seed, groups=np.asarray(users, object))
    assert (check.values["low"], check.values["high"]) == pytest.approx(expected[1:])
    assert "30 users, 120 targets" in check.detail
    assert decision.metrics["users"] == 30 and decision.metrics["targets"] == 120


@pytest.fixture(scope="module")
def sessions_outcome():
    data = habit_log(users=30, sessions=8, seed=2)
    config = FitConfig(model={"hidden": 16, "max_len": 20, "blocks": 1, "dropout": 0.1},
                       train=TrainConfig(max_epochs=2, batch_size=32, progress=False, seed=0),
                       content=False, bootstrap=50,
                       split=SplitSpec("temporal", CUT, validation="opening", test_sessions=3),
                       repeat_head=True, baselines=("mostpop", "markov1"))
    return data, fit_and_evaluate(data, config)


def test_training_the_evaluate_step_and_the_gate_score_the_same_targets(sessions_outcome, tmp_path) -> None:
    data, outcome = sessions_outcome
    test = outcome.split.test
    assert len(test) > test.n_users  # several targets per user
    result = outcome.results["sasrec"]
    assert result.users == test.n_users and result.targets == len(test)
    bundle = save_outcome(outcome, tmp_path / "bundle", source="habit")
    evaluated = evaluate_bundle(bundle, data, baselines=("mostpop",), bootstrap=50, tradeoffs=False)
    assert evaluated.scalars["sasrec_NDCG@10"] == pytest.approx(result.metrics["NDCG@10"])
    assert evaluated.scalars["test_targets"] == len(test) and evaluated.scalars["test_users"] == test.n_users
    assert f"{test.n_users} users, {len(test)} targets" in evaluated.markdown
    window = newest_window(data.events, None, outcome.split.spec, sessions=True)
    assert len(window) == len(test) and window.users == tuple(str(u) for u in test.users)
    assert score_bundle(bundle, window).mean_ndcg == pytest.approx(result.metrics["NDCG@10"])
    # The window keeps each user's events once; every target's history and openings are prefixes.
    assert len(window.sequences) == test.n_users
    vocab = outcome.vocab
    for row in range(len(test)):
        assert list(window.histories[row]) == vocab.item_ids(test.histories[row])
        assert list(window.session_openings[row]) == np.flatnonzero(test.starts[row]).tolist()
    assert sum(len(s) for s in window.sequences.values()) < sum(window.lengths)
    assert GateWindow.read(window.write(tmp_path / "window.json")) == window


def test_the_evaluators_interval_resamples_users(sessions_outcome) -> None:
    _, outcome = sessions_outcome
    test, popularity = outcome.split.test, outcome.popularity
    model = BASELINES["mostpop"](outcome.vocab.n_items).fit(outcome.split.train)
    result = evaluate(model, test, exclude_seen=False, popularity=popularity, bootstrap=300)
    from shoprec.evaluation.evaluate import rank_targets
    ranks, _ = rank_targets(model, test, False, 10)
    assert result.intervals["NDCG@10"] == M.bootstrap_interval(M.ndcg_at_k(ranks, 10), 300, groups=test.users)
    single = EvalSet(test.users[:3], test.histories[:3], test.targets[:3])
    assert evaluate(model, single, exclude_seen=False, popularity=popularity, bootstrap=10).targets in (None, 3)
