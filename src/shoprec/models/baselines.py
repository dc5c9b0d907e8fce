"""Honest baselines under the same contract: MostPop, Markov-1, ItemKNN and BuyAgain.

Their statistics live in buffers, so they save to safetensors like the transformer. Every
baseline breaks ties by popularity (a fraction below one count), the strongest simple choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from shoprec.models.base import Recommender
from shoprec.sequences import PAD


def _popularity(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    counts = np.zeros(n_items + 1, dtype=np.float64)
    if sequences:
        np.add.at(counts, np.concatenate(sequences), 1.0)
    counts[PAD] = 0.0
    return counts


def _tie_break(popularity: torch.Tensor) -> torch.Tensor:
    """Popularity scaled into [0, 0.5): added to integer counts it only orders equal counts."""
    top = popularity.max().clamp_min(1.0)
    return 0.5 * popularity / top


class _PopularityBase(Recommender):
    def __init__(self, n_items: int) -> None:
        super().__init__(n_items)
        self.register_buffer("popularity", torch.zeros(n_items + 1, dtype=torch.float32))

    def _set_popularity(self, sequences: Sequence[np.ndarray]) -> None:
        self.popularity = torch.as_tensor(_popularity(sequences, self.n_items), dtype=torch.float32)

    def _base_scores(self, batch_size: int) -> torch.Tensor:
        scores = _tie_break(self.popularity).expand(batch_size, -1).clone()  # [B, N+1]
        scores[:, PAD] = float("-inf")
        return scores


class MostPop(_PopularityBase):
    """Everyone gets the most interacted-with items."""

    kind: ClassVar[str] = "mostpop"

    def fit(self, sequences: Sequence[np.ndarray]) -> "MostPop":
        self._set_popularity(sequences)
        return self

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return self._base_scores(len(histories))


class _SparseItemItem(_PopularityBase):
    """An item x item sparse matrix kept as CSR buffers (indptr, indices, values)."""

    def __init__(self, n_items: int) -> None:
        super().__init__(n_items)
        self.register_buffer("indptr", torch.zeros(n_items + 2, dtype=torch.int64))
        self.register_buffer("indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("values", torch.zeros(0, dtype=torch.float32))

    def _set_matrix(self, matrix: sp.csr_matrix) -> None:
        matrix = sp.csr_matrix(matrix, shape=(self.n_items + 1, self.n_items + 1))
        matrix.sort_indices()
        self.indptr = torch.as_tensor(matrix.indptr.astype(np.int64))
        self.indices = torch.as_tensor(matrix.indices.astype(np.int64))
        self.values = torch.as_tensor(matrix.data.astype(np.float32))

    def _matrix(self) -> sp.csr_matrix:
        size = self.n_items + 1
        return sp.csr_matrix(
            (self.values.numpy(), self.indices.numpy(), self.indptr.numpy()), shape=(size, size)
        )

    def _scores_from(self, weights: sp.csr_matrix) -> torch.Tensor:
        """[B, N+1]: (weights [B, N+1] @ matrix) + popularity tie-break; padding is -inf."""
        dense = np.asarray((weights @ self._matrix()).todense(), dtype=np.float32)
        return torch.from_numpy(dense) + self._base_scores(weights.shape[0])


class Markov1(_SparseItemItem):
    """Next-item counts after the user's last item: P(next | last) up to normalisation."""

    kind: ClassVar[str] = "markov1"

    def fit(self, sequences: Sequence[np.ndarray]) -> "Markov1":
        self._set_popularity(sequences)
        pairs = [np.stack([s[:-1], s[1:]]) for s in sequences if len(s) >= 2]
        prev, nxt = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), dtype=np.int64)
        size = self.n_items + 1
        self._set_matrix(sp.coo_matrix((np.ones(len(prev)), (prev, nxt)), shape=(size, size)).tocsr())
        return self

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        rows = [i for i, h in enumerate(histories) if len(h)]
        last = [int(histories[i][-1]) for i in rows]
        weights = sp.csr_matrix(
            (np.ones(len(rows)), (rows, last)), shape=(len(histories), self.n_items + 1)
        )
        return self._scores_from(weights)


class ItemKNN(_SparseItemItem):
    """Item-item cosine similarity over users (top `neighbours` per item); a user's score
    for an item is the summed similarity to the items in their history."""

    kind: ClassVar[str] = "itemknn"

    def __init__(self, n_items: int, neighbours: int = 100) -> None:
        super().__init__(n_items)
        self.neighbours = neighbours

    def config(self) -> dict[str, Any]:
        return {"n_items": self.n_items, "neighbours": self.neighbours}

    def fit(self, sequences: Sequence[np.ndarray]) -> "ItemKNN":
        self._set_popularity(sequences)
        size = self.n_items + 1
        rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(sequences)])
        cols = np.concatenate(sequences)
        users = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(sequences), size))
        users.data[:] = 1.0  # binary: repeats do not count twice
        norms = np.sqrt(np.asarray(users.sum(0)).ravel())
        norms[norms == 0] = 1.0
        by_item = users.T.tocsr()  # [N+1, U]
        kept_rows, kept_cols, kept_vals = [], [], []
        block = 512  # rows of the similarity matrix at a time: never all N x N at once
        for start in range(0, size, block):
            stop = min(size, start + block)
            sims = np.asarray((by_item[start:stop] @ users).todense(), dtype=np.float32)
            sims /= norms[start:stop, None] * norms[None, :]
            sims[np.arange(stop - start), np.arange(start, stop)] = 0.0  # no self-similarity
            k = min(self.neighbours, size - 1)
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            vals = np.take_along_axis(sims, top, axis=1)
            keep = vals > 0
            kept_rows.append(np.repeat(np.arange(start, stop), k)[keep.ravel()])
            kept_cols.append(top[keep])
            kept_vals.append(vals[keep])
        matrix = sp.coo_matrix(
            (np.concatenate(kept_vals), (np.concatenate(kept_rows), np.concatenate(kept_cols))),
            shape=(size, size),
        )
        self._set_matrix(matrix.tocsr())
        return self

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        rows = np.concatenate([np.full(len(h), i) for i, h in enumerate(histories)] or [np.zeros(0)])
        cols = np.concatenate([np.asarray(h) for h in histories] or [np.zeros(0)])
        weights = sp.csr_matrix(
            (np.ones(len(cols)), (rows, cols)), shape=(len(histories), self.n_items + 1)
        )
        weights.data[:] = 1.0
        return self._scores_from(weights)


class BuyAgain(_PopularityBase):
    """Repeat purchase: the user's most frequent past items, then popular items."""

    kind: ClassVar[str] = "buyagain"

    def fit(self, sequences: Sequence[np.ndarray]) -> "BuyAgain":
        self._set_popularity(sequences)
        return self

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        scores = self._base_scores(len(histories))
        for i, h in enumerate(histories):
            if len(h):
                items, counts = np.unique(np.asarray(h), return_counts=True)
                scores[i, torch.as_tensor(items)] += torch.as_tensor(counts, dtype=torch.float32)
        return scores


BASELINES: dict[str, type[Recommender]] = {
    cls.kind: cls for cls in (MostPop, Markov1, ItemKNN, BuyAgain)
}
