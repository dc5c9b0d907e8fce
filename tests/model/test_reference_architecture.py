"""The reference SASRec+'s architecture as options of ours (`block="post_norm"`,
`positions="oldest"`): the block computes the original SASRec layer, positions count from the
oldest item, and a model built so learns and round-trips through a bundle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shoprec.models.bundle import load_bundle
from shoprec.models.sasrec import PostNormBlock, SASRec
from shoprec.training.fit import FitConfig, fit_and_evaluate, save_outcome
from shoprec.training.loop import TrainConfig


def reference_layer(block: PostNormBlock, x: torch.Tensor) -> torch.Tensor:
    """The reference's layer written as its code does it (nn.MultiheadAttention on [L, B, d]
    with a causal mask, then its point-wise feed-forward), with `block`'s weights copied in."""
    hidden = x.shape[-1]
    attention = nn.MultiheadAttention(hidden, block.heads, dropout=0.0)
    with torch.no_grad():
        attention.in_proj_weight.copy_(block.qkv.weight)
        attention.in_proj_bias.copy_(block.qkv.bias)
        attention.out_proj.weight.copy_(block.out.weight)
        attention.out_proj.bias.copy_(block.out.bias)
    length = x.shape[1]
    mask = ~torch.tril(torch.ones(length, length, dtype=torch.bool))
    seqs = x.transpose(0, 1)
    q = block.norm_attn(seqs)
    outputs, _ = attention(q, seqs, seqs, attn_mask=mask)
    seqs = (q + outputs).transpose(0, 1)
    seqs = block.norm_ff(seqs)
    first, second = block.ff[0], block.ff[3]
    return second(torch.relu(first(seqs))) + seqs


def test_the_post_norm_block_is_the_reference_layer():
    torch.manual_seed(0)
    block = PostNormBlock(16, heads=2, dropout=0.0).eval()
    block.reset_projection()
    x = torch.randn(3, 7, 16)
    mask = torch.ones(7, 7, dtype=torch.bool).tril()[None, None].expand(3, 1, 7, 7)
    with torch.no_grad():
        ours = block(x, mask)
    assert torch.allclose(ours, reference_layer(block, x), atol=1e-5)
    # nn.MultiheadAttention's Xavier-uniform init: bound sqrt(6 / (d + 3d)), not N(0, 0.02).
    assert float(block.qkv.weight.detach().abs().max()) > 0.1
    assert float(block.qkv.weight.detach().abs().max()) <= (6 / (16 + 48)) ** 0.5


def test_the_model_starts_its_attention_projections_as_the_reference_does():
    model = SASRec(30, max_len=12, hidden=16, block="post_norm")
    assert all(float(layer.qkv.weight.detach().std()) > 0.05 for layer in model.layers)  # Xavier, not 0.02
    assert float(SASRec(30, max_len=12, hidden=16).layers[0].qkv.weight.detach().std()) < 0.03


def test_positions_from_the_oldest_item_make_every_prefix_score_as_inside_the_longer_history():
    # Counted from the oldest item, a history's first k items sit at the same positions
    # whether or not more follow: the causal state after item k is the prefix's last state.
    torch.manual_seed(0)
    history = torch.tensor([[4, 9, 2, 7, 5, 11]])
    for positions, equal in (("oldest", True), ("newest", False)):
        model = SASRec(30, max_len=12, hidden=16, dropout=0.0, block="post_norm", positions=positions).eval()
        with torch.no_grad():
            whole = model.encode(history)[0]
            prefix = model.encode(history[:, :3])[0, -1]
            padded = model.encode(torch.tensor([[0, 0, 4, 9, 2]]))[0, -1]
        assert torch.allclose(whole[2], prefix, atol=1e-5) is equal
        assert torch.allclose(padded, prefix, atol=1e-5)  # left padding changes nothing


def test_training_and_inference_attend_alike_in_the_reference_architecture():
    torch.manual_seed(0)
    model = SASRec(30, max_len=12, hidden=16, heads=2, dropout=0.0, block="post_norm", positions="oldest").train()
    inputs = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12], [0] * 10 + [3, 29]])
    with torch.enable_grad():
        trained_path = model.encode(inputs)  # three batched products with an additive mask
    with torch.no_grad():
        inference_path = model.encode(inputs)  # scaled_dot_product_attention
    real = inputs != 0
    assert torch.allclose(trained_path[real], inference_path[real], atol=1e-5)


def test_unknown_architecture_settings_are_refused():
    with pytest.raises(ValueError, match="block must be one of"):
        SASRec(10, block="post_ln")
    with pytest.raises(ValueError, match="positions must be one of"):
        SASRec(10, positions="middle")
    with pytest.raises(ValueError, match="block 'post_norm' has its own ReLU feed-forward"):
        SASRec(10, block="post_norm", residual_gates=True)


def test_the_reference_architecture_learns_and_round_trips_through_a_bundle(planted, tmp_path):
    model = {"hidden": 32, "max_len": 20, "blocks": 2, "dropout": 0.1, "block": "post_norm", "positions": "oldest"}
    config = FitConfig(model=model, train=TrainConfig(max_epochs=40, batch_size=32, learning_rate=5e-3, patience=5,
                                                      progress=False, seed=0, batching="random"),
                       content=False, bootstrap=50, baselines=("mostpop",))
    outcome = fit_and_evaluate(planted, config)
    assert outcome.results["sasrec"].metrics["NDCG@10"] > 0.7  # the planted next item is learned
    bundle = load_bundle(save_outcome(outcome, tmp_path / "bundle", source="planted", snapshot_id="planted-0"))
    assert bundle.model.config()["block"] == "post_norm" and bundle.model.config()["positions"] == "oldest"
    histories = outcome.split.test.histories[:20]
    assert torch.equal(bundle.model.score_all(histories), outcome.models["sasrec"].score_all(histories))
