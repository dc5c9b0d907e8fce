"""The transformer learns a planted pattern; bundles round-trip exactly and refuse tampering;
serving and evaluation rank through the same path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from shoprec.models.baselines import MostPop
from shoprec.models.bundle import CONFIG_FILE, WEIGHTS_FILE, load_bundle, save_bundle
from shoprec.errors import BundleIntegrityError
from shoprec.evaluation.evaluate import rank_targets
from shoprec.models.inference import BundleRecommender
from shoprec.models.sasrec import SASRec, ChunkedSoftmaxCrossEntropy, FastDropout
from shoprec.training.fit import FitConfig, fit_and_evaluate, save_outcome
from shoprec.sequences import ItemVocab
from shoprec.training.loop import TrainConfig

SMALL = {"hidden": 32, "max_len": 20, "blocks": 2, "dropout": 0.1}


def small_config(**train) -> FitConfig:
    settings = {"max_epochs": 40, "batch_size": 32, "learning_rate": 5e-3, "patience": 5,
                "progress": False, "seed": 0, **train}
    return FitConfig(model=SMALL, train=TrainConfig(**settings), content=False, bootstrap=50)


@pytest.fixture(scope="module")
def outcome(planted):
    return fit_and_evaluate(planted, small_config())


def test_chunked_cross_entropy_matches_the_plain_one():
    torch.manual_seed(0)
    hidden = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 11, (37,))
    chunked = ChunkedSoftmaxCrossEntropy.apply(hidden, weight, targets, 5, torch.float64)
    grads = torch.autograd.grad(chunked, (hidden, weight))
    logits = hidden @ weight.T
    logits[:, 0] = float("-inf")  # padding is never a candidate
    plain = F.cross_entropy(logits, targets)
    expected = torch.autograd.grad(plain, (hidden, weight))
    # log-sum-exp and softmax run in float32 by design: agreement to float32 precision
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("stored", [True, False], ids=["softmax-kept", "softmax-rebuilt"])
def test_both_backward_paths_of_the_chunked_loss_match_the_plain_one(monkeypatch, stored):
    # Kept: the forward pass's softmax becomes the gradient; rebuilt: each chunk is recomputed
    # (catalogues too large to keep). Same loss and gradients, in bf16 as in training.
    from shoprec.models import sasrec

    monkeypatch.setattr(sasrec, "STORED_SOFTMAX_BYTES", 1 << 30 if stored else 0)
    torch.manual_seed(0)
    hidden = torch.randn(300, 16, requires_grad=True)
    weight = (0.5 * torch.randn(41, 16)).requires_grad_()
    targets = torch.randint(1, 41, (300,))
    loss = ChunkedSoftmaxCrossEntropy.apply(hidden, weight, targets, 64, torch.bfloat16)
    grads = torch.autograd.grad(loss, (hidden, weight))
    logits = hidden @ weight.T
    logits[:, 0] = float("-inf")
    plain = F.cross_entropy(logits, targets)
    expected = torch.autograd.grad(plain, (hidden, weight))
    assert loss.item() == pytest.approx(plain.item(), rel=1e-2)  # bf16 logits
    for got, want in zip(grads, expected):
        assert float((got - want).norm() / want.norm()) < 0.02
        assert got.dtype == want.dtype


def test_the_kept_softmax_refuses_a_second_backward_pass():
    hidden = torch.randn(7, 4, requires_grad=True)
    weight = torch.randn(5, 4, requires_grad=True)
    loss = ChunkedSoftmaxCrossEntropy.apply(hidden, weight, torch.tensor([1, 2, 3, 4, 1, 2, 3]), 4, torch.float32)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_gated_residual_blocks_learn_and_round_trip_through_a_bundle(planted, tmp_path, activation):
    model = {**SMALL, "residual_gates": True, "ffn_activation": activation, "ffn_multiplier": 2}
    config = FitConfig(model=model, train=TrainConfig(max_epochs=40, batch_size=32, learning_rate=5e-3, patience=5,
                                                      progress=False, seed=0),
                       content=False, bootstrap=50, baselines=("mostpop",))
    gated = fit_and_evaluate(planted, config)
    assert gated.results["sasrec"].metrics["NDCG@10"] > 0.7  # the planted next item is learned
    net = gated.models["sasrec"]
    assert all(layer.gates is not None for layer in net.layers)
    assert (type(net.layers[0].ff).__name__ == "SwiGLU") == (activation == "swiglu")
    bundle = load_bundle(save_outcome(gated, tmp_path / "bundle", source="planted", snapshot_id="planted-0"))
    assert bundle.model.config()["residual_gates"] is True
    assert bundle.model.config()["ffn_activation"] == activation
    histories = gated.split.test.histories[:20]
    assert torch.equal(bundle.model.score_all(histories), net.score_all(histories))


def test_unknown_feed_forward_activation_is_refused():
    with pytest.raises(ValueError, match="ffn_activation must be 'gelu' or 'swiglu', not 'relu6'"):
        SASRec(10, ffn_activation="relu6")


def test_fast_dropout_drops_at_its_rate_keeps_the_mean_and_repeats_under_a_seed():
    layer = FastDropout(0.1).train()
    x = torch.ones(200, 500)
    torch.manual_seed(1)
    first = layer(x)
    dropped = float((first == 0).float().mean())
    assert abs(dropped - 26 / 256) < 0.005  # the rate, rounded to 1/256
    assert abs(float(first.mean()) - 1.0) < 0.01  # survivors are scaled up: the mean is kept
    values = torch.unique(first).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(256 / 230)
    torch.manual_seed(1)
    assert torch.equal(FastDropout(0.1).train()(x), first)  # one seed, one mask
    assert not torch.equal(layer(x), first)  # a new mask on every call
    assert torch.equal(layer.eval()(x), x)  # inference: identity
    grad = torch.autograd.grad(FastDropout(0.5).train()(x.requires_grad_()).sum(), x)[0]
    assert set(torch.unique(grad).tolist()) == {0.0, 2.0}  # gradients flow through the kept units
    with pytest.raises(ValueError, match="dropout rate"):
        FastDropout(1.0)


def test_training_attention_path_matches_inference_attention():
    # Training on CPU attends with three batched products, inference with SDPA: same function.
    torch.manual_seed(0)
    model = SASRec(30, max_len=12, hidden=16, blocks=2, heads=2, dropout=0.0)
    inputs = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12], [0] * 10 + [3, 29]])
    model.train()  # dropout 0: training mode changes only the attention path
    with torch.enable_grad():
        trained_path = model.encode(inputs)
    with torch.no_grad():
        inference_path = model.encode(inputs)
    real = inputs != 0
    assert torch.allclose(trained_path[real], inference_path[real], atol=1e-5)


def test_attention_dropout_acts_only_in_training():
    torch.manual_seed(0)
    model = SASRec(30, max_len=12, hidden=16, blocks=1, dropout=0.0, attention_dropout=0.5)
    plain = SASRec(30, max_len=12, hidden=16, blocks=1, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    inputs = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    real = inputs != 0
    model.train(), plain.train()
    with torch.enable_grad():
        dropped, undropped = model.encode(inputs)[real], plain.encode(inputs)[real]
    assert not torch.allclose(dropped, undropped, atol=1e-3)  # weights were dropped
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode(inputs), plain.encode(inputs))  # inference: none
    assert model.config()["attention_dropout"] == 0.5


def test_transformer_learns_the_planted_pattern_and_beats_mostpop(outcome):
    sasrec = outcome.results["sasrec"].metrics["NDCG@10"]
    mostpop = outcome.results["mostpop"].metrics["NDCG@10"]
    assert outcome.results["sasrec"].metrics["HR@10"] > 0.9
    assert sasrec > 0.7 and sasrec > 3 * mostpop
    losses = [h["loss"] for h in outcome.train_result.history]
    assert losses[-1] < 0.5 * losses[0]  # it converged, not just got lucky
    assert outcome.train_result.best_valid_ndcg == max(h["valid_ndcg"] for h in outcome.train_result.history)


def test_item_features_fuse_into_the_item_vectors():
    model = SASRec(4, n_categories=2, text_dim=3, **SMALL)
    before = model.item_matrix().detach().clone()
    model.set_item_features(torch.tensor([0, 1, 1, 2, 0]), torch.eye(5, 3))
    after = model.item_matrix().detach()
    assert torch.equal(after[0], torch.zeros(32))  # padding stays zero
    assert not torch.allclose(before[1:4], after[1:4])  # items with features moved
    loss = model(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 3]]))
    loss.backward()
    assert model.category_embedding.weight.grad.abs().sum() > 0
    assert model.text_projection.weight.grad.abs().sum() > 0


def test_bundle_round_trip_gives_identical_scores(outcome, planted, tmp_path):
    path = save_outcome(outcome, tmp_path / "bundle", source="planted", snapshot_id="planted-0")
    names = sorted(p.name for p in path.iterdir())
    assert names == ["MODEL_CARD.md", "config.json", "items.json", "metrics.json",
                     "model.safetensors", "weights.sha256"]
    config = json.loads((path / "config.json").read_text())
    assert config["feature_service"] == "recommender_v1" and config["snapshot_id"] == "planted-0"
    assert config["exclude_seen"] is True
    assert "mostpop" in (path / "MODEL_CARD.md").read_text()
    bundle = load_bundle(path)
    histories = outcome.split.test.histories[:20]
    assert torch.equal(bundle.model.score_all(histories), outcome.models["sasrec"].score_all(histories))


def test_tampered_weights_are_refused(outcome, tmp_path):
    path = save_outcome(outcome, tmp_path / "bundle", source="planted")
    raw = bytearray((path / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0x01  # one bit of one weight
    (path / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(BundleIntegrityError, match="refusing to load"):
        load_bundle(path)


def test_serving_path_equals_the_evaluated_ranking(outcome, tmp_path):
    path = save_outcome(outcome, tmp_path / "bundle", source="planted")
    recommender = BundleRecommender.from_bundle(path)
    test = outcome.split.test
    _, lists = rank_targets(recommender.bundle.model, test, exclude_seen=True, k=10)
    for row in range(5):
        history = outcome.vocab.item_ids(test.histories[row])
        served = [r.item_id for r in recommender.recommend(history, k=10)]
        assert served == outcome.vocab.item_ids(lists[row])
        assert not set(served) & set(history)  # MovieLens-style policy from the bundle
    kept = [r.item_id for r in recommender.recommend(history, k=40, exclude=False)]
    assert set(history) <= set(kept)


def test_same_seed_same_model(planted):
    first = fit_and_evaluate(planted, small_config(max_epochs=2))
    second = fit_and_evaluate(planted, small_config(max_epochs=2))
    histories = first.split.test.histories[:10]
    assert torch.equal(first.models["sasrec"].score_all(histories), second.models["sasrec"].score_all(histories))
    other = fit_and_evaluate(planted, small_config(max_epochs=2, seed=1))
    assert not torch.equal(first.models["sasrec"].score_all(histories), other.models["sasrec"].score_all(histories))


def test_score_items_equals_score_all_columns_and_the_cached_items_follow_the_weights():
    torch.manual_seed(0)
    model = SASRec(30, max_len=12, hidden=16, blocks=1, n_categories=3, text_dim=5)
    model.set_item_features(torch.randint(0, 4, (31,)), torch.randn(31, 5)).eval()
    histories = [np.array([3, 4, 5]), np.array([7]), np.array([], dtype=np.int64)]
    columns = torch.tensor([1, 9, 30, 4])
    assert torch.allclose(model.score_items(histories, columns), model.score_all(histories)[:, columns], atol=1e-5)
    before = model.score_all(histories[:1])
    with torch.no_grad():
        model.item_embedding.weight[9] += torch.randn(16)  # in place, as an optimizer step
    after = model.score_all(histories[:1])
    assert not torch.allclose(before[:, 9], after[:, 9])  # the cached item matrix was rebuilt
    assert torch.allclose(after, model.score_all(histories[:1]))  # and is reused when nothing changed
    model.set_item_features(text=torch.zeros(31, 5))
    assert torch.allclose(model.score_all(histories[:1])[:, 1:], torch.as_tensor(
        (model.encode(torch.tensor([[3, 4, 5]]))[:, -1] @ model.item_matrix().T)[:, 1:]), atol=1e-5)


def test_reasons_are_the_leave_one_out_argmax_over_the_newest_items():
    from shoprec.serving.reasons import reason_indices

    torch.manual_seed(1)
    model = SASRec(40, max_len=64, hidden=16, blocks=2).eval()
    history = np.random.default_rng(0).integers(1, 41, 70)
    items = [5, 17, 33]
    window, context = 8, 30
    got = reason_indices(model, [history], [items], window=window, context=context)[0]
    recent = history[-context:]
    base = model.score_all([recent])[0]
    for n, item in enumerate(items):
        drops = [float(base[item] - model.score_all([np.delete(recent, p)])[0, item])
                 for p in range(context - window, context)]
        best = int(np.argmax(drops))
        assert got[n] == (int(recent[context - window + best]) if drops[best] > 1e-9 else None)


def test_repeat_bonus_is_tuned_on_validation_and_travels_with_the_bundle(tmp_path):
    """Grocery-like data: each user's next item is one of their own earlier items. The bonus
    picked on validation lifts the transformer, and the bundle scores with it after loading."""
    import pandas as pd

    from shoprec import schema as S
    from shoprec.data.dataset import EventData

    rng = np.random.default_rng(0)
    rows = []
    for user in range(120):
        staples = rng.choice(np.arange(1, 41), size=4, replace=False)
        for t in range(24):
            item = staples[t % 4] if rng.random() < 0.8 else rng.integers(1, 41)
            rows.append((f"u{user}", f"i{item}", t))
    events = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, "t"])
    events[S.TIMESTAMP] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(events.pop("t"), unit="h")
    events[S.EVENT_TYPE] = S.PURCHASE
    data = EventData(events, None, None, "repeat", {"repeat_purchase": True})
    config = small_config(max_epochs=3)
    outcome = fit_and_evaluate(data, config)
    tuning = outcome.repeat_tuning
    assert tuning is not None and set(tuning) == {
        f"{w:g}@{d:g}" for w in config.repeat_weights for d in config.repeat_decays}
    chosen, decay = outcome.models["sasrec"].repeat_weight, outcome.models["sasrec"].repeat_decay
    assert tuning[f"{chosen:g}@{decay:g}"] == max(tuning.values()) and chosen > 0
    assert tuning[f"{chosen:g}@{decay:g}"] > tuning["0@1"]  # the bonus helps on this data
    bundle = save_outcome(outcome, tmp_path / "bundle", source="repeat")
    loaded = load_bundle(bundle)
    assert (loaded.model.repeat_weight, loaded.model.repeat_decay) == (chosen, decay)
    assert "repeat-purchase bonus weight" in (bundle / "MODEL_CARD.md").read_text() or \
        any("repeat-purchase bonus weight" in p.read_text() for p in bundle.glob("*.md"))
    history = [outcome.split.test.histories[0]]
    assert torch.equal(loaded.model.score_all(history), outcome.models["sasrec"].score_all(history))


def test_the_bundle_records_the_model_window_and_reads_it_back(tmp_path):
    vocab = ItemVocab(tuple(f"i{n}" for n in range(1, 6)))
    bundle = save_bundle(tmp_path / "sasrec", SASRec(vocab.n_items, max_len=20, hidden=8, blocks=1),
                         vocab, exclude_seen=True, metrics={})
    config = json.loads((bundle / CONFIG_FILE).read_text())
    assert config["max_len"] == 20 and load_bundle(bundle).max_len == 20

    del config["max_len"]  # a bundle saved before the window was recorded at the top level
    (bundle / CONFIG_FILE).write_text(json.dumps(config))
    assert load_bundle(bundle).max_len == 20  # read from model_config

    baseline = save_bundle(tmp_path / "mostpop", MostPop(vocab.n_items).fit([np.array([1, 2])]),
                           vocab, exclude_seen=True, metrics={})
    assert "max_len" not in json.loads((baseline / CONFIG_FILE).read_text())
    assert load_bundle(baseline).max_len is None  # no window: nothing to check against the features
