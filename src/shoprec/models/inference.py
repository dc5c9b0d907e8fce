"""The one inference path: serving and evaluation both rank through `Recommender.topk`
of the bundled model, with the bundle's seen-items policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shoprec.models.bundle import Bundle, load_bundle

MAX_HISTORY = 10_000  # request size bound: longer histories keep their newest items
MAX_K = 1_000


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float


class BundleRecommender:
    """Top-k recommendations from a verified model bundle."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    @classmethod
    def from_bundle(cls, path: str | Path) -> "BundleRecommender":
        """Load (and integrity-check) the bundle at `path`."""
        return cls(load_bundle(path))

    def recommend(
        self, history: Sequence[str], k: int = 10, exclude: bool | None = None
    ) -> list[Recommendation]:
        """The k best items for a user whose item ids, oldest first, are `history`.

        exclude: drop items already in the history (None: the bundle's data-set policy).
        Unknown item ids in the history are ignored."""
        return self.recommend_batch([history], k, exclude)[0]

    def recommend_batch(
        self, histories: Sequence[Sequence[str]], k: int = 10, exclude: bool | None = None
    ) -> list[list[Recommendation]]:
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        vocab = self.bundle.vocab
        indexed = []
        for history in histories:
            index = vocab.index(list(history)[-MAX_HISTORY:])
            indexed.append(index[index > 0].astype(np.int64))
        policy = self.bundle.exclude_seen if exclude is None else exclude
        items, scores = self.bundle.model.topk(indexed, k, policy)
        return [
            [Recommendation(vocab.ids[int(i) - 1], float(s))
             for i, s in zip(row_items, row_scores) if int(i) > 0 and np.isfinite(float(s))]
            for row_items, row_scores in zip(items.tolist(), scores.tolist())
        ]
