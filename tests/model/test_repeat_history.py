"""The repeat side reads the newest `repeat_history` items of a history: what the feature
store's `user_history` keeps and serving sends, so evaluation scores as serving will."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoprec.config import DEFAULT_HISTORY_LEN
from shoprec.models.bundle import load_bundle, save_bundle
from shoprec.models.sasrec import SASRec
from shoprec.sequences import ItemVocab
from shoprec.training.fit import build_sasrec
from shoprec.models.content import ItemFeatures


def test_the_bonus_reads_only_the_newest_repeat_history_items():
    torch.manual_seed(0)
    model = SASRec(20, max_len=3, hidden=8, blocks=1, dropout=0.0, repeat_weight=1.0, repeat_history=4).eval()
    old_habit = np.array([7, 7, 7, 7, 7, 7, 1, 2, 3, 4])  # item 7 only before the newest four
    bonus = model.repeat_bonus([old_habit])[0]
    assert float(bonus[7]) == 0.0 and float(bonus[4]) > 0.0
    # The whole history and its newest repeat_history items score alike: serving sends the latter.
    assert torch.equal(model.score_all([old_habit]), model.score_all([old_habit[-4:]]))
    whole = SASRec(20, max_len=5, hidden=8, blocks=1, dropout=0.0, repeat_weight=1.0).eval()
    assert float(whole.repeat_bonus([old_habit])[0, 7]) > 0.0  # 0: all of it (older bundles)


def test_repeat_history_travels_with_the_bundle_and_bad_values_are_refused(tmp_path):
    vocab = ItemVocab(tuple(f"i{n}" for n in range(1, 21)))
    model = SASRec(20, max_len=5, hidden=8, blocks=1, repeat_weight=0.5, repeat_history=30)
    bundle = load_bundle(save_bundle(tmp_path / "b", model, vocab, exclude_seen=True, metrics={}))
    assert bundle.model.repeat_history == 30 and bundle.model.config()["repeat_history"] == 30
    with pytest.raises(ValueError, match="repeat_history must be >= 0"):
        SASRec(20, repeat_history=-1)


def test_a_trained_model_reads_the_default_history_unless_told():
    vocab = ItemVocab(tuple(f"i{n}" for n in range(1, 6)))
    features = ItemFeatures(torch.zeros(vocab.n_items + 1, dtype=torch.int64), [], None)
    assert build_sasrec(vocab, features, {"hidden": 8}).repeat_history == DEFAULT_HISTORY_LEN
    assert build_sasrec(vocab, features, {"hidden": 8, "repeat_history": 7}).repeat_history == 7
