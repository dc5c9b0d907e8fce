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
from shoprec.sequences import keep_with_openings

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
        user_stats: Mapping[str, Any] | None = None, starts: Sequence[bool] | None = None,
    ) -> list[Recommendation]:
        """The k best items for a user whose item ids, oldest first, are `history`.

        exclude: drop items already in the history (None: the bundle's data-set policy).
        Unknown item ids in the history are ignored. user_stats: the user's online user_stats
        row (feature name -> value), read by a model with a user context. starts: True where a
        history item opens a session (None: one session), read by a model with a repeat head."""
        return self.recommend_batch([history], k, exclude, None if user_stats is None else [user_stats],
                                    [starts])[0]

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

    @property
    def history_read(self) -> int | None:
        """How many of a history's newest items the model reads: its window, or the longer
        history its repeat side (bonus or head) reads; None: all of it (or no window, as for
        the baselines)."""
        model, window = self.bundle.model, self.bundle.max_len
        if getattr(model, "repeat_weight", 0.0) or getattr(model, "repeat_head_hidden", 0):
            repeat = int(getattr(model, "repeat_history", 0) or 0)
            return None if not repeat or window is None else max(repeat, window)
        return window

    @property
    def needs_sessions(self) -> bool:
        """Whether the model reads where each history's sessions start (a repeat head)."""
        return bool(getattr(self.bundle.model, "needs_sessions", False))

    def indexed(self, history: Sequence[str], starts: Sequence[bool] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(known item indices of the newest MAX_HISTORY history items, their session openings).

        Unknown item ids are dropped (an opening on one moves to the next known item of its
        session: `sequences.keep_with_openings`). The openings are None unless the model reads
        them; a history sent without them is one session (its first item opens it), as a cart is.
        Raises ValueError when `starts` does not hold one flag per history item."""
        items = list(history)[-MAX_HISTORY:]
        index = self.bundle.vocab.index(items)
        known = index > 0
        if not self.needs_sessions:
            return index[known].astype(np.int64), None
        if starts is None:
            flags = np.zeros(len(items), dtype=bool)
            flags[:1] = True
        else:
            if len(starts) != len(history):
                raise ValueError(f"{len(starts)} session openings for a history of {len(history)} items")
            flags = np.asarray(list(starts)[-MAX_HISTORY:], dtype=bool)
        kept, opened = keep_with_openings(index, flags, known)
        return kept.astype(np.int64), opened

    def recommend_batch(
        self, histories: Sequence[Sequence[str]], k: int = 10, exclude: bool | None = None,
        user_stats: Sequence[Mapping[str, Any] | None] | None = None,
        starts: Sequence[Sequence[bool] | None] | None = None,
    ) -> list[list[Recommendation]]:
        """`recommend` for many histories at once. starts: per history, True where an item
        opens a session (None: one session), read by a model with a repeat head."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        vocab = self.bundle.vocab
        given = list(starts) if starts is not None else [None] * len(histories)
        if len(given) != len(histories):
            raise ValueError(f"{len(given)} session openings for {len(histories)} histories")
        pairs = [self.indexed(history, opens) for history, opens in zip(histories, given)]
        indexed = [items for items, _ in pairs]
        policy = self.bundle.exclude_seen if exclude is None else exclude
        context = self.user_context(user_stats, len(indexed))
        if context is None and not self.needs_sessions:
            items, scores = self.bundle.model.topk(indexed, k, policy)
        else:  # Recommender.topk, with the user context or the session openings beside the histories
            with torch.no_grad():
                extra: dict[str, Any] = {"context": context} if context is not None else {}
                if self.needs_sessions:
                    extra["starts"] = [opened for _, opened in pairs]
                every = self.bundle.model.score_all(indexed, **extra).float()  # type: ignore[call-arg]
                if policy:
                    mask_seen(every, indexed)
                items = stable_topk(every, min(k, self.bundle.model.n_items))
                scores = every.gather(1, items)
        return [
            [Recommendation(vocab.ids[int(i) - 1], float(s))
             for i, s in zip(row_items, row_scores) if int(i) > 0 and np.isfinite(float(s))]
            for row_items, row_scores in zip(items.tolist(), scores.tolist())
        ]
