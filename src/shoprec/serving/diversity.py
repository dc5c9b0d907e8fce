"""The `diversity` option of a predictor answer: the user's score row re-ranked by MMR
(`shoprec.ranking.diversity.mmr`) over item categories (from the serving catalogue) or content
embeddings (`shoprec.models.content.ItemFeatures.text`), and the list's intra-list diversity.

diversity 0 (or absent) is the plain answer, unchanged. The pool MMR chooses from is the
`pool` best items the answer may show (items at -inf in the row are never in it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoprec.models.content import ItemFeatures
from shoprec.ranking.diversity import DEFAULT_POOL, intra_list_diversity, mmr
from shoprec.sequences import ItemVocab
from shoprec.serving.catalog import ItemCatalog


def catalog_categories(catalog: ItemCatalog, vocab: ItemVocab) -> np.ndarray:
    """[N+1] category code per vocabulary index from the catalogue (0: unknown): build it once
    per loaded bundle, not per request."""
    codes: dict[str, int] = {}
    out = np.zeros(vocab.n_items + 1, dtype=np.int64)
    for n, item in enumerate(vocab.ids, start=1):
        category = catalog.category_of(item)
        if category is not None:
            out[n] = codes.setdefault(category, len(codes) + 1)
    return out


def content_features(features: ItemFeatures, use: str = "category") -> np.ndarray:
    """[N+1] category codes ("category") or [N+1, 384] title embeddings ("text") of a model's
    item features; ValueError when the model has no title embeddings."""
    if use == "category":
        return features.category.numpy()
    if use == "text" and features.text is not None:
        return features.text.numpy()
    raise ValueError(f"no '{use}' item features: use 'category', or 'text' when titles were embedded")


def diversified(scores: torch.Tensor | np.ndarray, vocab: ItemVocab, features: np.ndarray, *, k: int,
                diversity: float, pool: int = DEFAULT_POOL) -> dict[str, Any]:
    """{"items", "scores", "diversity@k"}: the k items MMR picks from the user's [N+1] (or
    [1, N+1]) score row, each with its model score, and the list's intra-list diversity."""
    row = torch.as_tensor(np.atleast_2d(scores.detach().float().numpy() if isinstance(scores, torch.Tensor)
                                        else np.asarray(scores, dtype=np.float32)))[0].clone()
    row[0] = float("-inf")  # padding is never an item
    finite = int(torch.isfinite(row).sum())
    order = torch.argsort(row, descending=True, stable=True)[:min(max(pool, k), finite)].numpy()
    chosen = mmr(order, features, k, diversity)
    return {"items": vocab.item_ids(chosen), "scores": [float(row[i]) for i in chosen],
            f"diversity@{k}": intra_list_diversity(chosen, features)}
