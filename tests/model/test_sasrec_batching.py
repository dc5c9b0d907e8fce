"""Random batches (`TrainConfig.batching="random"`, SASRec+'s reference DataLoader) beside
the default batches of similar lengths."""

from __future__ import annotations

import numpy as np
import pytest

from shoprec.evaluation.splits import EvalSet
from shoprec.models.sasrec import SASRec
from shoprec.sequences import PAD
from shoprec.training.batches import training_windows, window_batches
from shoprec.training.loop import TrainConfig, train


def _sequences() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(1, 30, size=n) for n in rng.integers(3, 40, size=400)]


def _rows(batches) -> list[tuple[int, ...]]:
    return [tuple(int(t) for t in row[row != PAD]) for b in batches for row in b.targets.numpy()]


@pytest.mark.parametrize("by_length", [True, False])
def test_every_window_is_trained_on_once_per_epoch(by_length):
    windows = training_windows(_sequences(), max_len=50, crops="last")
    batches = list(window_batches(windows, 32, np.random.default_rng(0), by_length=by_length))
    expected = sorted(tuple(int(t) for t in w[1:][w[:-1] != PAD]) for w in windows)
    assert sorted(_rows(batches)) == expected


def test_random_batches_mix_lengths_and_length_batches_do_not():
    windows = training_windows(_sequences(), max_len=50, crops="last")

    def spread(by_length: bool) -> float:
        batches = window_batches(windows, 32, np.random.default_rng(0), by_length=by_length)
        lengths = [(b.targets != PAD).sum(1).numpy() for b in batches]
        return float(np.mean([x.max() - x.min() for x in lengths]))

    # 400 sequences of 3-39 items: similar-length batches span a few items, random ones most of the range.
    assert spread(True) < 5 < 20 < spread(False)


def test_unknown_batching_is_refused():
    model = SASRec(30, max_len=8, hidden=8)
    valid = EvalSet(np.array(["u"], dtype=object), [np.array([1, 2])], np.array([3]))
    with pytest.raises(ValueError, match="batching must be 'length' or 'random', not 'sorted'"):
        train(model, _sequences(), valid, TrainConfig(batching="sorted", progress=False), exclude_seen=True)
