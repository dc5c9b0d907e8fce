"""The one inference path: serving and evaluation both rank through `Recommender.topk`
of the bundled model, with the bundle's seen-items policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shoprec.models.base import mask_seen, stable_topk
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
        self, history: Sequence[str], k: int = 10, exclude: bool | None = None,
        user_stats: Mapping[str, Any] | None = None,
    ) -> list[Recommendation]:
        """The k best items for a user whose item ids, oldest first, are `history`.

        exclude: drop items already in the history (None: the bundle's data-set policy).
        Unknown item ids in the history are ignored. user_stats: the user's online user_stats
        row (feature name -> value), read by a model with a user context."""
        return self.recommend_batch([history], k, exclude, None if user_stats is None else [user_stats])[0]

    def user_context(self, user_stats: Sequence[Mapping[str, Any] | None] | None, rows: int) -> np.ndarray | None:
        """[rows, F] model input from the users' user_stats rows with the bundle's own transform
        (the one training used: `features.user_context`); None when the model reads no user
        context. A user without a row (None, or no rows given: a request with items and no
        user) reads as the mean training user (zeros), as in `SASRec.encode`."""
        transform = self.bundle.user_context
        if transform is None:
            return None
        given = list(user_stats) if user_stats is not None else [None] * rows
        if len(given) != rows:
            raise ValueError(f"{len(given)} user_stats rows for {rows} histories")
        out = np.zeros((rows, transform.width), dtype=np.float32)
        known = [n for n, row in enumerate(given) if row is not None]
        if known:
            out[known] = transform.apply([dict(given[n]) for n in known])  # type: ignore[arg-type]
        return out

    def recommend_batch(
        self, histories: Sequence[Sequence[str]], k: int = 10, exclude: bool | None = None,
        user_stats: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[list[Recommendation]]:
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        vocab = self.bundle.vocab
        indexed = []
        for history in histories:
            index = vocab.index(list(history)[-MAX_HISTORY:])
            indexed.append(index[index > 0].astype(np.int64))
        policy = self.bundle.exclude_seen if exclude is None else exclude
        context = self.user_context(user_stats, len(indexed))
        if context is None:
            items, scores = self.bundle.model.topk(indexed, k, policy)
        else:  # Recommender.topk, with the user context beside the histories
            with torch.no_grad():
                every = self.bundle.model.score_all(indexed, context=context).float()  # type: ignore[call-arg]
                if policy:
                    mask_seen(every, indexed)
                items = stable_topk(every, min(k, self.bundle.model.n_items))
                scores = every.gather(1, items)
        return [
            [Recommendation(vocab.ids[int(i) - 1], float(s))
             for i, s in zip(row_items, row_scores) if int(i) > 0 and np.isfinite(float(s))]
            for row_items, row_scores in zip(items.tolist(), scores.tolist())
        ]
