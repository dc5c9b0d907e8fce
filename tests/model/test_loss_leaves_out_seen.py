"""`TrainConfig.loss_leaves_out_seen`: where seen items are never recommended, each position's
softmax leaves out the other items of its window (never its own target), as the reference
SASRec+'s negatives are drawn outside the user's sequence."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from shoprec.models.sasrec import ChunkedSoftmaxCrossEntropy, LeftOut, SASRec
from shoprec.training.fit import FitConfig, fit_and_evaluate
from shoprec.training.loop import TrainConfig


def plain_left_out_loss(hidden, weight, targets, left_out: LeftOut):
    logits = hidden @ weight.T
    logits[:, 0] = float("-inf")
    logits = logits.masked_fill(left_out.block(0, len(targets), targets), float("-inf"))
    return F.cross_entropy(logits, targets)


@pytest.mark.parametrize("stored", [True, False], ids=["softmax-kept", "softmax-rebuilt"])
def test_the_chunked_loss_leaves_out_the_window_items_in_both_backward_paths(monkeypatch, stored):
    from shoprec.models import sasrec

    monkeypatch.setattr(sasrec, "STORED_SOFTMAX_BYTES", 1 << 30 if stored else 0)
    torch.manual_seed(0)
    inputs = torch.tensor([[0, 0, 3, 5, 7], [2, 4, 6, 8, 9]])
    targets = torch.tensor([[0, 3, 5, 7, 10], [4, 6, 8, 9, 1]])
    real = targets != 0
    left_out = LeftOut.of_windows(inputs, targets, real, 11)
    assert left_out.seen[0].nonzero().flatten().tolist() == [3, 5, 7, 10]
    hidden = torch.randn(int(real.sum()), 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    wanted = targets[real]
    loss = ChunkedSoftmaxCrossEntropy.apply(hidden, weight, wanted, 3, torch.float64, None, left_out)
    grads = torch.autograd.grad(loss, (hidden, weight))
    plain = plain_left_out_loss(hidden, weight, wanted, left_out)
    expected = torch.autograd.grad(plain, (hidden, weight))
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-6)
    full = ChunkedSoftmaxCrossEntropy.apply(hidden, weight, wanted, 3, torch.float64)
    assert full.item() > loss.item()  # fewer competitors, a smaller loss


def test_the_option_is_refused_where_seen_items_are_recommended_again_and_with_sampled_softmax(planted):
    config = FitConfig(model={"hidden": 16, "max_len": 10}, content=False, bootstrap=10, baselines=("mostpop",),
                       train=TrainConfig(max_epochs=1, progress=False, loss_leaves_out_seen=True))
    repeat = dataclasses.replace(planted, info={**planted.info, "repeat_purchase": True})
    with pytest.raises(ValueError, match="loss_leaves_out_seen is for data whose seen items are never recommended"):
        fit_and_evaluate(repeat, config)
    model = SASRec(12, max_len=4, hidden=8, loss="sampled")
    with pytest.raises(ValueError, match="needs the full softmax"):
        model(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[2, 3, 4, 5]]), leave_out_window=True)


def test_a_model_trained_so_learns_the_planted_pattern(planted):
    config = FitConfig(model={"hidden": 32, "max_len": 20, "blocks": 2, "dropout": 0.1}, content=False, bootstrap=50,
                       baselines=("mostpop",),
                       train=TrainConfig(max_epochs=40, batch_size=32, learning_rate=5e-3, patience=5, progress=False,
                                         seed=0, loss_leaves_out_seen=True))
    outcome = fit_and_evaluate(planted, config)
    assert outcome.results["sasrec"].metrics["NDCG@10"] > 0.7
