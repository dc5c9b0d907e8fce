"""The repeat head inside the transformer: session openings through the split, the bundle,
the evaluator and the gate's window; chosen on validation; served (the predictor takes each
history's `session_starts`: tests/serving/test_session_starts.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.errors import DataSourceError
from shoprec.evaluation.evaluate import rank_targets
from shoprec.evaluation.splits import EvalSet, SplitSpec, make_split
from shoprec.lifecycle.window import GateWindow, newest_window, score_model
from shoprec.models.bundle import load_bundle, save_bundle
from shoprec.models.repeat_head import RepeatHead, mixture_scores
from shoprec.models.sasrec import SASRec
from shoprec.sequences import FlatSequences, build_vocab, session_starts
from shoprec.serving.predictor import LiveModel
from shoprec.training.fit import FitConfig, fit_and_evaluate
from shoprec.training.loop import TrainConfig


def habit_log(users: int = 30, sessions: int = 8, seed: int = 0) -> EventData:
    """Purchases in sessions a day apart, items a second apart: each user opens every session
    with their staple and ends it with their filler bought three times, two random items between."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for user in range(users):
        for session in range(sessions):
            items = [f"staple{user}", *(f"x{i}" for i in rng.integers(0, 40, size=2)), *[f"filler{user}"] * 3]
            when = start + pd.Timedelta(days=session, hours=user % 12)
            rows += [(f"u{user:02d}", item, when + pd.Timedelta(seconds=i), S.PURCHASE, f"o{user}-{session}")
                     for i, item in enumerate(items)]
    events = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.EVENT_TYPE, S.SESSION_ID])
    return EventData(events, None, None, "habit", {"repeat_purchase": True})


def test_the_temporal_split_carries_each_historys_session_openings() -> None:
    data = habit_log(users=6, sessions=5)
    vocab = build_vocab(data.events)
    spec = SplitSpec("temporal", pd.Timestamp("2024-01-05", tz="UTC"))
    plain = make_split(data.events, vocab, spec)
    split = make_split(data.events, vocab, spec, sessions=True)
    assert plain.test.starts is None and plain.train_starts is None
    assert [h.tolist() for h in split.test.histories] == [h.tolist() for h in plain.test.histories]
    seqs = FlatSequences.from_events(data.events, vocab, with_rows=True)
    whole = session_starts(data.events, seqs.rows, seqs.offsets)
    for i, (history, opens) in enumerate(zip(split.test.histories, split.test.starts)):
        assert len(opens) == len(history)
        # Sessions of 6 events, the user's first event opening the first one.
        assert np.flatnonzero(opens).tolist() == list(range(0, len(history), 6))
        assert opens.tolist() == whole[seqs.offsets[i]:seqs.offsets[i] + len(history)].tolist()
    assert all(len(o) == len(t) for o, t in zip(split.train_starts, split.train))
    assert all(len(o) == len(h) for o, h in zip(split.valid.starts, split.valid.histories))
    with pytest.raises(DataSourceError, match="temporal split, not leave-one-out"):
        make_split(data.events, vocab, SplitSpec("leave-one-out"), sessions=True)


def test_a_temporal_split_can_validate_on_each_users_newest_session_opening() -> None:
    data = habit_log(users=6, sessions=5)
    vocab = build_vocab(data.events)
    cut = pd.Timestamp("2024-01-05", tz="UTC")
    newest = make_split(data.events, vocab, SplitSpec("temporal", cut), sessions=True)
    spec = SplitSpec("temporal", cut, validation="opening")
    split = make_split(data.events, vocab, spec, sessions=True)
    assert split.spec.validation == "opening" and "newest session opening" in split.spec.describe()
    assert SplitSpec.from_dict(split.spec.to_dict()) == split.spec
    for user, history, target, opens, train in zip(split.valid.users, split.valid.histories, split.valid.targets,
                                                   split.valid.starts, split.train):
        # Each user's 4 sessions before the cut (6 items each): the 4th opens at item 18 with the staple.
        assert len(history) == 18 and vocab.ids[target - 1] == f"staple{int(user[1:])}"
        assert len(opens) == 18 and train.tolist() == history.tolist()
    assert [len(h) for h in newest.valid.histories] == [23] * 6  # the newest item: the filler
    # The test set does not change: every item before the cut is history.
    assert [h.tolist() for h in split.test.histories] == [h.tolist() for h in newest.test.histories]
    with pytest.raises(DataSourceError, match="only applies to a temporal split"):
        SplitSpec("leave-one-out", validation="opening")
    with pytest.raises(DataSourceError, match="unknown validation target"):
        SplitSpec("temporal", validation="last")


def _model_with_head(n_items: int, share: float = 0.9) -> SASRec:
    torch.manual_seed(0)
    model = SASRec(n_items, max_len=10, hidden=16, blocks=1)
    head = RepeatHead(8)
    torch.nn.init.normal_(head.net[0].weight)
    model.attach_repeat_head(head, share)
    return model.eval()


def test_a_model_with_a_head_scores_the_mixture_saves_whole_and_refuses_histories_without_sessions(tmp_path) -> None:
    model = _model_with_head(6)
    histories = [np.array([1, 2, 1, 3]), np.array([4])]
    starts = [np.array([1, 0, 1, 0], dtype=bool), np.array([1], dtype=bool)]
    expected = mixture_scores(model.repeat_scorer.item_scores(histories, starts),
                              model.transformer_scores(histories), 0.9)
    assert torch.equal(model.score_all(histories, starts=starts), expected)
    assert model.repeat_weight == 0.0 and model.needs_sessions
    with pytest.raises(ValueError, match="pass starts"):
        model.score_all(histories)
    with pytest.raises(ValueError, match="carries none"):
        rank_targets(model, EvalSet(np.array(["a", "b"], dtype=object), histories, np.array([2, 5])), False)
    ranks, _ = rank_targets(model, EvalSet(np.array(["a", "b"], dtype=object), histories, np.array([2, 5]), starts),
                            False)
    assert len(ranks) == 2

    from shoprec.sequences import ItemVocab
    directory = save_bundle(tmp_path / "bundle", model, ItemVocab(tuple("abcdef")), exclude_seen=False, metrics={})
    loaded = load_bundle(directory).model
    assert loaded.config()["repeat_head_hidden"] == 8 and loaded.config()["repeat_share"] == 0.9
    assert torch.equal(loaded.score_all(histories, starts=starts), expected)
    live = LiveModel(bundle_dir=directory)
    live.load()  # served: requests carry each history's session openings
    answer = live.predict_v1({"instances": [{"items": list("abac"), "session_starts": [True, False, True, False],
                                             "k": 6}]})
    top = torch.argsort(expected[0], descending=True, stable=True)[:6]
    assert answer["predictions"][0]["items"] == ["abcdef"[int(i) - 1] for i in top if int(i) > 0]


def test_the_gate_window_keeps_session_openings_and_drops_unknown_items_without_losing_a_session(tmp_path) -> None:
    data = habit_log(users=4, sessions=4)
    spec = SplitSpec("temporal", pd.Timestamp("2024-01-04", tz="UTC"))
    assert newest_window(data.events, None, spec).session_openings == ()  # only when a model reads them
    window = newest_window(data.events, None, spec, sessions=True)
    assert len(window.session_openings) == len(window.histories)
    assert window.session_openings[0][:3] == (0, 6, 12)
    assert GateWindow.read(window.write(tmp_path / "window.json")) == window
    # A model that does not know the staples: each session then opens at its first known item.
    vocab = build_vocab(data.events[~data.events[S.ITEM_ID].str.startswith("staple")])
    model = _model_with_head(vocab.n_items)
    seen = []
    original = model.score_all

    def spy(histories, context=None, starts=None):
        seen.extend(starts)
        return original(histories, context, starts)

    model.score_all = spy  # type: ignore[method-assign]
    scores = score_model(model, vocab, False, window)
    assert len(scores.ndcg) == len(window)
    first = seen[0]
    assert np.flatnonzero(first).tolist()[:3] == [0, 5, 10]  # 5 known items per session


@pytest.fixture(scope="module")
def head_outcome():
    data = habit_log()
    config = FitConfig(model={"hidden": 16, "max_len": 20, "blocks": 1, "dropout": 0.1},
                       train=TrainConfig(max_epochs=2, batch_size=32, progress=False, seed=0),
                       content=False, bootstrap=20, split=SplitSpec("temporal"), repeat_head=True,
                       baselines=("mostpop",))
    return data, fit_and_evaluate(data, config)


def test_fit_chooses_between_bonus_and_head_on_session_openings_and_evaluates_with_them(head_outcome) -> None:
    data, outcome = head_outcome
    config = outcome.config
    side = outcome.repeat_side
    assert side is not None and "bonus" in side and {f"head@{s:g}" for s in config.repeat_shares} <= set(side)
    model = outcome.models["sasrec"]
    best_head = max(v for k, v in side.items() if k != "bonus")
    assert bool(model.repeat_head_hidden) == (best_head > side["bonus"])
    # On this log the staple opens every session and the filler is bought more and later: the
    # head learns the opening, the bonus ranks the filler first.
    assert model.repeat_head_hidden and model.repeat_weight == 0.0
    assert outcome.split.test.starts is not None
    assert outcome.results["sasrec"].metrics["NDCG@10"] > outcome.results["decayfreq"].metrics["NDCG@10"]


def test_the_evaluate_and_promote_steps_score_a_head_with_the_sessions_of_their_window(head_outcome, tmp_path) -> None:
    from shoprec.evaluation.report import evaluate_bundle
    from shoprec.lifecycle.gate import Check, Policy
    from shoprec.lifecycle.promotion import run_promotion
    from shoprec.lifecycle.registry import Registry
    from shoprec.training.fit import save_outcome

    data, outcome = head_outcome
    bundle = save_outcome(outcome, tmp_path / "bundle", source="habit")
    assert "learned repeat head" in (bundle / "MODEL_CARD.md").read_text()
    evaluated = evaluate_bundle(bundle, data, baselines=("mostpop",), bootstrap=20, tradeoffs=True)
    # The evaluate step rebuilds the split with sessions and gets the training run's figure.
    assert evaluated.scalars["sasrec_NDCG@10"] == pytest.approx(outcome.results["sasrec"].metrics["NDCG@10"])
    promoted = run_promotion(bundle, data.write(tmp_path / "data"), Registry(tmp_path / "registry"),
                             Policy(bootstrap=20), infra_check=lambda _: Check("infra check", True, "not in this test"))
    assert promoted.decision.metrics["candidate NDCG@10"] == pytest.approx(outcome.results["sasrec"].metrics["NDCG@10"])


def test_choosing_the_repeat_side_reads_at_most_a_fixed_sample_of_users(head_outcome, monkeypatch) -> None:
    import shoprec.training.fit as fit

    _, outcome = head_outcome
    split = outcome.split
    read: list[list[str]] = []
    original = fit.session_examples

    def spy(sequences, starts, *args, **kwargs):
        read.append([np.asarray(s).tobytes().hex()[:32] for s in sequences])
        return original(sequences, starts, *args, **kwargs)

    monkeypatch.setattr(fit, "session_examples", spy)
    def fresh() -> SASRec:  # choosing may attach a head: each call gets its own model
        return SASRec(outcome.n_items, max_len=20, hidden=16, blocks=1).eval()

    for _ in range(2):
        fit.choose_repeat_side(fresh(), split.train, split.train_starts, (0.9,), seed=0, max_users=5)
    fit.choose_repeat_side(fresh(), split.train, split.train_starts, (0.9,), seed=0)
    assert len(read[0]) == 5 and read[0] == read[1]  # the same fixed sample each time
    assert len(read[2]) == len(split.train)


@pytest.fixture(scope="module")
def opening_outcome():
    data = habit_log(users=30, sessions=8, seed=2)
    config = FitConfig(model={"hidden": 16, "max_len": 20, "blocks": 1, "dropout": 0.1},
                       train=TrainConfig(max_epochs=2, batch_size=32, progress=False, seed=0),
                       content=False, bootstrap=20, split=SplitSpec("temporal", validation="opening"),
                       repeat_head=True, baselines=("mostpop",))
    return data, fit_and_evaluate(data, config)


def test_validating_on_openings_chooses_every_models_settings_on_the_same_held_out_targets(
        opening_outcome, tmp_path, monkeypatch) -> None:
    import shoprec.evaluation.tuning as tuning
    from shoprec.evaluation.report import evaluate_bundle
    from shoprec.lifecycle.window import baseline_scores
    from shoprec.training.fit import save_outcome

    data, outcome = opening_outcome
    split = outcome.split
    # Validation: each user's newest session opening before the cut (their staple), held out of training.
    assert split.spec.validation == "opening" and len(split.valid)
    assert all(outcome.vocab.ids[t - 1].startswith("staple") for t in split.valid.targets)
    assert all(split.train[row].tolist() == h.tolist() for row, h in zip(split.valid.train_rows, split.valid.histories))
    # The repeat side was chosen on those targets: the head (the staple opens every session).
    assert outcome.repeat_side is not None and outcome.models["sasrec"].needs_sessions

    seen: list[list[int]] = []
    original = tuning.rank_targets

    def spy(model, eval_set, *args, **kwargs):
        seen.append(sorted(eval_set.targets.tolist()))
        return original(model, eval_set, *args, **kwargs)

    monkeypatch.setattr(tuning, "rank_targets", spy)
    bundle = save_outcome(outcome, tmp_path / "bundle", source="habit")
    evaluated = evaluate_bundle(bundle, data, baselines=("mostpop",), bootstrap=20, tradeoffs=False)
    wanted = sorted(split.valid.targets.tolist())
    assert seen and all(targets == wanted for targets in seen)  # the decayfreq / TIFU grids, on the valid targets
    for name in ("decayfreq", "tifuknn"):
        assert evaluated.scalars[f"{name}_NDCG@10"] == pytest.approx(outcome.results[name].metrics["NDCG@10"])

    # The gate's window carries the same validation set, in item ids, through its JSON.
    window = newest_window(data.events, None, SplitSpec.from_dict(split.spec.to_dict()), sessions=True)
    assert len(window.validation) == len(split.valid)
    assert GateWindow.read(window.write(tmp_path / "window.json")).validation == window.validation
    assert sorted(item for _, item in window.validation) == sorted(outcome.vocab.item_ids(split.valid.targets))
    seen.clear()
    gate = baseline_scores(window, exclude_seen=False)
    assert len(seen) >= 2 and all(len(targets) == len(split.valid) for targets in seen)
    assert set(gate) >= {"decayfreq", "tifuknn"}


def test_the_monitoring_reference_scores_a_head_with_the_logs_session_openings(tmp_path) -> None:
    from shoprec.monitoring.frames import model_reference, popularity_table
    from shoprec.sequences import ItemVocab

    data = habit_log(users=5, sessions=3)
    vocab = build_vocab(data.events)
    model = _model_with_head(vocab.n_items)
    bundle = save_bundle(tmp_path / "bundle", model, ItemVocab(vocab.ids), exclude_seen=False, metrics={})
    seen = []
    original = SASRec.score_all

    def spy(self, histories, context=None, starts=None):
        seen.extend(np.flatnonzero(s).tolist() for s in starts)
        return original(self, histories, context, starts)

    SASRec.score_all = spy  # type: ignore[method-assign]
    try:
        frame, quality, _ = model_reference(bundle, data.events, None, popularity_table(data.events), k=5)
    finally:
        SASRec.score_all = original  # type: ignore[method-assign]
    # Each user's 18 events but the last, in sessions of 6: openings at 0, 6 and 12 (by order id).
    assert seen == [[0, 6, 12]] * 5 and len(frame) == 25
