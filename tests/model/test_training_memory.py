"""Memory-regression check: SASRec trains one short epoch on a ~30k-event synthetic slice with a
50,000-item catalogue (max_len 50, batch 128, float32, 256 validation users) in a child
process (tests/model/memory_probe.py), and the child's peak resident memory (VmHWM,
torch's own ~290 MB included) must stay under `LIMIT_MB`.

Measured on the 2-core machine (benchmarks/RESULTS.md, "Training memory"): 915-963 MB now
(three runs: sampled softmax above 20,000 items, the bounded allocator); 2,445 MB with the code
before the Scale issue (full softmax over 50k items in uncapped 410 MB chunks, freed memory
kept in blocks up to 1 GiB and never trimmed). For reference, the full softmax forced on this
slice: 1,263 MB with the bounded allocator, 861 MB with glibc's defaults (its chunks are now
capped at 128 MiB, so it is slow rather than large). The limit leaves about a third of
headroom over the measurement; the test also checks that the automatic switch chose the
sampled softmax.

Also here: the kept softmax's reusable buffer (models.sasrec.KeptSoftmax).
"""

from __future__ import annotations

import platform

import pytest
import torch

from shoprec.models.sasrec import ChunkedSoftmaxCrossEntropy, KeptSoftmax, SampledSoftmaxCrossEntropy, SASRec

from .memory_probe import run_probe_in_child

LIMIT_MB = 1300


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc (Linux)")
def test_one_epoch_on_a_large_catalogue_slice_stays_under_the_memory_limit():
    result = run_probe_in_child(items=50_000, events=30_000, max_len=50, batch=128, epochs=1,
                                allocator="keep", valid_users=256, timeout=300)
    assert result["loss"] == "sampled"  # 50,000 items: the automatic switch picked the sampled softmax
    assert result["child_peak_rss_mb"] < LIMIT_MB, result


def test_the_kept_softmax_buffer_is_reused_from_step_to_step_and_released_for_evaluation():
    torch.manual_seed(0)
    for loss in ("full", "sampled"):
        model = SASRec(200, max_len=10, hidden=16, blocks=1, dropout=0.0, loss=loss, negatives=64).train()
        inputs, targets = torch.randint(1, 201, (8, 10)), torch.randint(1, 201, (8, 10))
        model(inputs, targets).backward()
        first = model._kept_softmax.buffer
        assert first is not None
        model(inputs, targets).backward()
        assert model._kept_softmax.buffer.data_ptr() == first.data_ptr()  # the same pages, not new ones
        model.eval()
        assert model._kept_softmax.buffer is None


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_a_kept_softmax_overwritten_by_a_later_forward_pass_is_rebuilt_not_reused(loss):
    # Two forward passes before the first backward pass (not what the loop does, but allowed):
    # the second takes the shared buffer, so the first backward must rebuild its softmax.
    torch.manual_seed(0)
    kept = KeptSoftmax()
    weight = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(1, 13, (9,))
    log_expected = torch.randn(9, dtype=torch.float64)

    def run(hidden, targets, kept_buffer):
        if loss == "full":
            return ChunkedSoftmaxCrossEntropy.apply(hidden, weight, targets, 5, torch.float64, kept_buffer)
        return SampledSoftmaxCrossEntropy.apply(hidden, weight[targets], weight[ids], log_expected, ids, targets,
                                                5, torch.float64, kept_buffer)

    first_h = torch.randn(20, 8, dtype=torch.float64, requires_grad=True)
    first_t = torch.randint(1, 13, (20,))
    expected = torch.autograd.grad(run(first_h, first_t, None), (first_h, weight))
    first = run(first_h, first_t, kept)
    run(torch.randn(20, 8, dtype=torch.float64), torch.randint(1, 13, (20,)), kept)  # overwrites the buffer
    got = torch.autograd.grad(first, (first_h, weight))
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-6)
