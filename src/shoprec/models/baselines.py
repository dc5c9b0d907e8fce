"""Honest baselines under the same contract: MostPop, Markov-1, ItemKNN, BuyAgain, a
time-decayed personal frequency and TIFU-KNN (the strongest simple next-basket method).

Their statistics live in buffers, so they save to safetensors like the transformer. Every
baseline breaks ties by popularity (a fraction below one count), the strongest simple choice.
Hyper-parameters (decays, neighbours, alpha) are chosen on validation by
`evaluation.tuning.fit_baseline`, never on test.
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


# ItemKNN's fit multiplies blocks of item rows by the user matrix; a block holds at most this
# many co-occurrence entries (about 16 bytes each while they are ranked), whatever the catalogue.
KNN_BLOCK_ENTRIES = 8_000_000


def _row_blocks(reach: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) row ranges whose summed `reach` stays within `budget` (a row
    larger than the budget is a block of its own)."""
    blocks, start, total = [], 0, 0.0
    for row, entries in enumerate(reach):
        if row > start and total + entries > budget:
            blocks.append((start, row))
            start, total = row, 0.0
        total += float(entries)
    if start < len(reach):
        blocks.append((start, len(reach)))
    return blocks


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
        rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(sequences)] or [np.zeros(0, np.int64)])
        cols = np.concatenate(list(sequences) or [np.zeros(0, np.int64)])
        users = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(sequences), size))
        users.data[:] = 1.0  # binary: repeats do not count twice
        norms = np.sqrt(np.asarray(users.sum(0)).ravel())
        norms[norms == 0] = 1.0
        by_item = users.T.tocsr()  # [N+1, U]
        # Co-occurrences stay sparse: a dense [rows, N+1] block made the fit quadratic in the
        # catalogue (300k items: 90 billion cells, most of them zero). Blocks of item rows are
        # cut so that each product holds at most KNN_BLOCK_ENTRIES entries: an item's row has at
        # most `reach` entries (the summed history lengths of its users).
        user_lengths = np.asarray(users.sum(1)).ravel()
        reach = by_item @ user_lengths  # [N+1]
        parts = [self._top_neighbours(by_item[a:b] @ users, a, norms)
                 for a, b in _row_blocks(reach, KNN_BLOCK_ENTRIES)]
        kept_rows, kept_cols, kept_vals = (np.concatenate([p[i] for p in parts] or [np.zeros(0)]) for i in range(3))
        matrix = sp.coo_matrix((kept_vals, (kept_rows.astype(np.int64), kept_cols.astype(np.int64))),
                               shape=(size, size))
        self._set_matrix(matrix.tocsr())
        return self

    def _top_neighbours(self, counts: sp.csr_matrix, first: int, norms: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, cosine) of the `neighbours` most similar items of each row of a block of
        co-occurrence counts whose first row is item `first`; only positive similarities, ties
        at the k-th place go to the lower item index (the same answer on every machine)."""
        counts.sort_indices()
        lengths = np.diff(counts.indptr)
        row = np.repeat(np.arange(first, first + counts.shape[0]), lengths)
        col = counts.indices.astype(np.int64)
        value = (counts.data / (norms[row] * norms[col])).astype(np.float32)
        value[row == col] = 0.0  # no self-similarity
        keep = value > 0
        k = min(self.neighbours, self.n_items)
        # Only rows with more than k entries choose; a partition per row is linear in its length
        # (a sort of every entry of the block cost 4x more).
        for n in np.flatnonzero(lengths > k):
            a, b = counts.indptr[n], counts.indptr[n + 1]
            segment = value[a:b]
            kth = np.partition(segment, len(segment) - k)[len(segment) - k]  # the k-th largest
            chosen = segment > kth
            missing = k - int(chosen.sum())
            if missing > 0:  # ties at the k-th value: the lowest item indices (columns are sorted)
                chosen[np.flatnonzero(segment == kth)[:missing]] = True
            keep[a:b] &= chosen
        return row[keep], col[keep], value[keep]

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


def decayed_counts(histories: Sequence[np.ndarray], n_items: int, decay: float) -> sp.csr_matrix:
    """[B, N+1] sparse: per history, sum over its occurrences of each item of decay ** age,
    the age being how many items came after that one (the newest has age 0). decay 1 gives
    plain counts ("buy again"). The whole history counts: old purchases fade, never vanish."""
    rows, cols, vals = [], [], []
    for row, history in enumerate(histories):
        items = np.asarray(history, dtype=np.int64)
        if len(items):
            rows.append(np.full(len(items), row))
            cols.append(items)
            vals.append(np.power(float(decay), np.arange(len(items) - 1, -1, -1, dtype=np.float64)))
    if not rows:
        return sp.csr_matrix((len(histories), n_items + 1))
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(len(histories), n_items + 1))  # duplicates summed
    matrix.sum_duplicates()
    return matrix


def _seen_first(weights: sp.csr_matrix, popularity: torch.Tensor) -> torch.Tensor:
    """[B, N+1]: items with a positive weight first, by weight; every other item after them,
    by popularity (weights are not integer counts, so the tie-break cannot simply be added)."""
    scores = (_tie_break(popularity) - 1.0).expand(weights.shape[0], -1).clone()  # [-1, -0.5)
    dense = torch.from_numpy(np.asarray(weights.todense(), dtype=np.float32))
    scores = torch.where(dense > 0, dense, scores)
    scores[:, PAD] = float("-inf")
    return scores


class DecayedFrequency(_PopularityBase):
    """Time-decayed personal frequency: "buy again" where a purchase counts decay ** (items
    bought since), so what the user buys now outweighs what they bought a year ago. decay 1 is
    BuyAgain; the decay is chosen on validation (`evaluation.tuning`)."""

    kind: ClassVar[str] = "decayfreq"

    def __init__(self, n_items: int, decay: float = 0.99) -> None:
        super().__init__(n_items)
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], not {decay}")
        self.decay = float(decay)

    def config(self) -> dict[str, Any]:
        return {"n_items": self.n_items, "decay": self.decay}

    def fit(self, sequences: Sequence[np.ndarray]) -> "DecayedFrequency":
        self._set_popularity(sequences)
        return self

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return _seen_first(decayed_counts(histories, self.n_items, self.decay), self.popularity)


def tifu_vectors(histories: Sequence[np.ndarray], n_items: int, basket_size: int, within_decay: float,
                 group_decay: float, groups: int) -> sp.csr_matrix:
    """[B, N+1] sparse TIFU user vectors (Hu et al. 2020, "Modeling Personalized Item Frequency
    Information for Next-basket Recommendation").

    A history is split into baskets, newest first; basket j (0 oldest of n) weighs its items
    within_decay ** (n - 1 - j); the baskets fall into `groups` consecutive groups as equal as
    possible (fewer when there are fewer baskets), each group is the mean of its baskets, and the
    vector is the mean over groups of group_decay ** (groups from the newest) x the group.
    The histories of this contract carry items, not basket boundaries, so a basket is a run of
    `basket_size` consecutive items counted from the newest (the Instacart sample's orders hold
    9.9 items on average; the size is tuned on validation like the decays)."""
    rows, cols, vals = [], [], []
    for row, history in enumerate(histories):
        items = np.asarray(history, dtype=np.int64)
        length = len(items)
        if not length:
            continue
        age = (length - 1 - np.arange(length)) // basket_size  # baskets from the newest, per item
        n_baskets = int(age[0]) + 1
        basket = n_baskets - 1 - age  # 0 = oldest
        n_groups = min(groups, n_baskets)
        group_of_basket = np.arange(n_baskets) * n_groups // n_baskets  # equal consecutive groups
        group_sizes = np.bincount(group_of_basket, minlength=n_groups)
        group = group_of_basket[basket]
        weight = (np.power(within_decay, age.astype(np.float64))
                  * np.power(group_decay, (n_groups - 1 - group).astype(np.float64))
                  / (group_sizes[group] * n_groups))
        rows.append(np.full(length, row))
        cols.append(items)
        vals.append(weight)
    if not rows:
        return sp.csr_matrix((len(histories), n_items + 1))
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(len(histories), n_items + 1))
    matrix.sum_duplicates()
    return matrix


class TIFUKNN(_PopularityBase):
    """TIFU-KNN: alpha x the user's TIFU vector + (1 - alpha) x the mean vector of their
    `neighbours` nearest training users (Euclidean distance between TIFU vectors, as in the
    authors' code). The authors' Instacart settings are the defaults; `evaluation.tuning`
    chooses among nearby ones on validation.

    Memory: the training users' vectors are one sparse matrix (CSR buffers); a query batch's
    distances to the users are computed `USER_BLOCK` users at a time and only the best
    `neighbours` of each block are kept, so no dense users x items or users x users matrix is
    ever built. A user's own training vector is a candidate neighbour (in evaluation and
    serving alike): with hundreds of neighbours its share is negligible."""

    kind: ClassVar[str] = "tifuknn"
    USER_BLOCK: ClassVar[int] = 8192

    def __init__(self, n_items: int, neighbours: int = 900, within_decay: float = 0.9,
                 group_decay: float = 0.7, alpha: float = 0.9, groups: int = 3, basket_size: int = 10) -> None:
        super().__init__(n_items)
        if neighbours < 1 or groups < 1 or basket_size < 1 or not 0.0 <= alpha <= 1.0:
            raise ValueError("TIFU-KNN needs neighbours, groups, basket_size >= 1 and alpha in [0, 1]")
        self.neighbours, self.within_decay, self.group_decay = int(neighbours), float(within_decay), float(group_decay)
        self.alpha, self.groups, self.basket_size = float(alpha), int(groups), int(basket_size)
        # The training users' TIFU vectors as CSR [U, N+1], and their squared norms [U].
        self.register_buffer("user_indptr", torch.zeros(1, dtype=torch.int64))
        self.register_buffer("user_indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("user_values", torch.zeros(0, dtype=torch.float32))
        self.register_buffer("user_norms", torch.zeros(0, dtype=torch.float32))

    def config(self) -> dict[str, Any]:
        return {"n_items": self.n_items, "neighbours": self.neighbours, "within_decay": self.within_decay,
                "group_decay": self.group_decay, "alpha": self.alpha, "groups": self.groups,
                "basket_size": self.basket_size}

    def vectors(self, histories: Sequence[np.ndarray]) -> sp.csr_matrix:
        return tifu_vectors(histories, self.n_items, self.basket_size, self.within_decay,
                            self.group_decay, self.groups)

    def fit(self, sequences: Sequence[np.ndarray]) -> "TIFUKNN":
        self._set_popularity(sequences)
        users = self.vectors(sequences).astype(np.float32)
        self.user_indptr = torch.as_tensor(users.indptr.astype(np.int64))
        self.user_indices = torch.as_tensor(users.indices.astype(np.int64))
        self.user_values = torch.as_tensor(users.data)
        self.user_norms = torch.as_tensor(np.asarray(users.multiply(users).sum(1), dtype=np.float32).ravel())
        return self

    def _users(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.user_values.numpy(), self.user_indices.numpy(), self.user_indptr.numpy()),
                             shape=(len(self.user_indptr) - 1, self.n_items + 1))

    def nearest(self, queries: sp.csr_matrix) -> np.ndarray:
        """[B, k] indices of each query's k nearest training users (k = min(neighbours, U))."""
        users, norms = self._users(), self.user_norms.numpy().astype(np.float64)
        k = min(self.neighbours, users.shape[0])
        best_d = np.zeros((queries.shape[0], 0))
        best_i = np.zeros((queries.shape[0], 0), dtype=np.int64)
        for start in range(0, users.shape[0], self.USER_BLOCK):
            block = users[start:start + self.USER_BLOCK]
            # |q - u|^2 up to the query's own norm, which does not change the order: [B, block]
            dist = norms[None, start:start + block.shape[0]] - 2.0 * np.asarray((queries @ block.T).todense())
            keep = min(k, dist.shape[1])
            top = np.argpartition(dist, keep - 1, axis=1)[:, :keep]
            best_d = np.concatenate([best_d, np.take_along_axis(dist, top, 1)], axis=1)
            best_i = np.concatenate([best_i, top + start], axis=1)
            if best_d.shape[1] > k:  # keep only the k best so far: bounded by B x 2k
                top = np.argpartition(best_d, k - 1, axis=1)[:, :k]
                best_d, best_i = np.take_along_axis(best_d, top, 1), np.take_along_axis(best_i, top, 1)
        return best_i

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        queries = self.vectors(histories)
        if len(self.user_norms) == 0:  # not fitted on anyone: the user's own vector only
            return _seen_first(queries, self.popularity)
        neighbours = self.nearest(queries)  # [B, k]
        batch, k = neighbours.shape
        mean = sp.csr_matrix((np.full(batch * k, 1.0 / k), (np.repeat(np.arange(batch), k), neighbours.ravel())),
                             shape=(batch, len(self.user_norms)))
        blended = self.alpha * queries + (1.0 - self.alpha) * (mean @ self._users())  # [B, N+1] sparse
        return _seen_first(sp.csr_matrix(blended), self.popularity)


BASELINES: dict[str, type[Recommender]] = {
    cls.kind: cls for cls in (MostPop, Markov1, ItemKNN, BuyAgain, DecayedFrequency, TIFUKNN)
}
