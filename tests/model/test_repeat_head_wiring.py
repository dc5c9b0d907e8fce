"""The repeat head inside the transformer: session openings through the split, the bundle,
the evaluator and the gate's window; chosen on validation; refused by the predictor until
serving sends sessions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.errors import BundleError, DataSourceError
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
    with pytest.raises(BundleError, match="repeat head .* serving path does not send"):
        LiveModel(bundle_dir=directory).load()


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
