"""SASRec+ with the user context (Feast user_stats, point in time): every training target and
evaluation user gets its own event's context, the bundle carries the transform, serving feeds
it through the same function, and bundles without it still load and serve."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shoprec import schema as S
from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.evaluation.splits import SplitSpec, make_split
from shoprec.features.tables import build_feature_tables
from shoprec.features.user_context import USER_CONTEXT_FEATURES, join_user_stats_asof
from shoprec.models.bundle import CONFIG_FILE, load_bundle
from shoprec.models.contextual import WithUserContext
from shoprec.models.inference import BundleRecommender
from shoprec.sequences import build_vocab
from shoprec.training.batches import ContextBatch, training_windows, window_batches
from shoprec.training.fit import FitConfig, fit_and_evaluate, save_outcome, user_context_inputs
from shoprec.training.loop import TrainConfig


@pytest.fixture(scope="module")
def small():
    data = limit_to_users(load_movielens_100k(), 40)
    return data, build_feature_tables(data.events, data.items).user_stats


@pytest.mark.parametrize("kind", ["leave-one-out", "temporal"])
def test_every_target_gets_the_context_of_its_own_event(small, kind):
    data, user_stats = small
    events = data.events
    vocab = build_vocab(events, data.items)
    split = make_split(events, vocab, SplitSpec(kind))
    inputs = user_context_inputs(events, vocab, split, USER_CONTEXT_FEATURES, user_stats)
    items = vocab.index(events[S.ITEM_ID].to_numpy())
    # The event-row split names, element for element, the events of the item split.
    for seq, rows in zip(split.train, inputs.data.train_rows):
        assert np.array_equal(items[np.asarray(rows) - 1], seq)
    valid_rows = make_split(events.assign(**{S.ITEM_ID: np.arange(len(events)).astype(str)}),
                            type(vocab)(tuple(np.arange(len(events)).astype(str))), split.spec).valid.targets
    assert np.array_equal(items[valid_rows - 1], split.valid.targets)
    # ... and each context is its event's user_stats as of strictly before it, transformed.
    joined = join_user_stats_asof(events, user_stats)
    expected = inputs.transform.apply(joined.iloc[valid_rows - 1])
    np.testing.assert_array_equal(inputs.data.valid, expected)
    assert len(inputs.test) == len(split.test)


def test_context_batches_line_up_with_their_targets():
    sequences = [np.array([5, 6, 7, 8]), np.array([3, 4])]
    rows = [np.array([11, 12, 13, 14]), np.array([21, 22])]
    windows, context = training_windows(sequences, 3), training_windows(rows, 3)
    plain = list(window_batches(windows, 8, np.random.default_rng(0)))
    batches = list(window_batches(windows, 8, np.random.default_rng(0), context_windows=context))
    assert all(isinstance(b, ContextBatch) for b in batches)
    for with_context, without in zip(batches, plain):  # the same data order either way
        assert torch.equal(with_context.inputs, without.inputs)
        # The context of a target is that of the event predicted: row 10 + item - 4 or 20 + item - 2.
        for target, row in zip(with_context.targets.flatten().tolist(), with_context.context_rows.flatten().tolist()):
            assert (target, row) == (0, 0) or row == (10 + target - 4 if target >= 5 else 20 + target - 2)


@pytest.fixture(scope="module")
def fitted(small, tmp_path_factory):
    data, user_stats = small
    config = FitConfig(model={"hidden": 16, "max_len": 20, "blocks": 1, "dropout": 0.1},
                       train=TrainConfig(max_epochs=2, batch_size=32, progress=False), content=False,
                       bootstrap=20, baselines=("mostpop",), user_context=USER_CONTEXT_FEATURES)
    outcome = fit_and_evaluate(data, config, user_stats=user_stats)
    path = save_outcome(outcome, tmp_path_factory.mktemp("bundle") / "b", source="ml-100k sample")
    return outcome, path


def test_the_bundle_carries_the_transform_and_serving_applies_it(fitted, small):
    outcome, path = fitted
    bundle = load_bundle(path)
    assert bundle.user_context == outcome.user_context and bundle.model.user_features == outcome.user_context.width
    assert "user features (Feast user_stats" in (path / "MODEL_CARD.md").read_text()
    recommender = BundleRecommender(bundle)
    history = [bundle.vocab.ids[i] for i in (3, 8, 13)]
    light = {name: 1 for name in outcome.user_context.columns}
    heavy = {name: 400 for name in outcome.user_context.columns}
    served = recommender.recommend(history, k=5, user_stats=heavy)
    # The same input as the library's transform gives, scored by the model directly.
    context = outcome.user_context.apply([heavy])
    scores = bundle.model.score_all([bundle.vocab.index(history)], context=context)[0]
    scores[bundle.vocab.index(history)] = float("-inf")  # ML-100K excludes seen items
    assert [r.item_id for r in served] == bundle.vocab.item_ids(torch.argsort(scores, descending=True, stable=True)[:5])
    assert [r.score for r in served] != [r.score for r in recommender.recommend(history, k=5, user_stats=light)]
    # No row (a request with items and no user): the mean user, as SASRec scores without context.
    assert recommender.recommend(history, k=5) == recommender.recommend_batch([history], 5, user_stats=[None])[0]


def test_the_evaluator_sees_each_users_context_and_nothing_else(fitted):
    outcome, _ = fitted
    model = outcome.models["sasrec"]
    test = outcome.split.test
    bound = WithUserContext(model, test.histories, np.zeros((len(test), model.user_features), np.float32))
    assert bound.score_all(test.histories[:3]).shape == (3, model.n_items + 1)
    with pytest.raises(ValueError, match="not of this evaluation set"):
        bound.score_all([np.array(test.histories[0])])  # equal items, another array: refused


def test_a_bundle_without_user_context_loads_and_ignores_user_stats(fitted, tmp_path):
    _, path = fitted
    import shutil

    old = tmp_path / "old"
    shutil.copytree(path, old)
    config = json.loads((old / CONFIG_FILE).read_text())
    # As bundles were before: no transform, no user_features in the model's arguments.
    config.pop("user_context")
    config["model_config"].pop("user_features")
    (old / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="user_context"):  # its weights hold the context layer
        load_bundle(old)
    # A genuinely older bundle: a model fit without the user context.
    data = limit_to_users(load_movielens_100k(), 20)
    plain = fit_and_evaluate(data, FitConfig(model={"hidden": 16, "max_len": 20, "blocks": 1},
                                             train=TrainConfig(max_epochs=1, progress=False), content=False,
                                             bootstrap=10, baselines=("mostpop",)))
    written = save_outcome(plain, tmp_path / "plain", source="ml-100k sample")
    config = json.loads((written / CONFIG_FILE).read_text())
    config["model_config"].pop("user_features")
    (written / CONFIG_FILE).write_text(json.dumps(config))
    bundle = load_bundle(written)
    assert bundle.user_context is None and bundle.model.user_features == 0
    recommender = BundleRecommender(bundle)
    history = [bundle.vocab.ids[i] for i in (1, 2)]
    assert recommender.recommend(history, k=5, user_stats={"views_all": 9}) == recommender.recommend(history, k=5)


def test_the_predictor_refuses_a_bundle_whose_user_context_serving_does_not_send(fitted):
    """Serving does not forward user_stats to the predictor yet: such a bundle is refused at
    load with the reason, never served as if every user were the average one."""
    from shoprec.errors import BundleError
    from shoprec.serving.predictor import LiveModel

    _, path = fitted
    with pytest.raises(BundleError, match="reads a user context .* does not send"):
        LiveModel(bundle_dir=path).load()
