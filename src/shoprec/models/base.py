"""The one contract every recommender answers, so one evaluator, one trainer and one
inference path serve them all.

- `loss(batch)`: a scalar to minimise (trainable models are fit by gradient steps on it;
  count-based baselines are fit in closed form by `fit` and report their next-item NLL).
- `score_all(histories)`: a score for every item, [B, N + 1] (column 0 is padding: -inf).
- `topk(histories, k, exclude)`: the k best items per history, optionally never an item
  the user already has (the per-data-set "seen items" policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from shoprec.sequences import PAD, Batch


def mask_seen(scores: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """Set the score of every item in each user's history to -inf (in place; returns scores)."""
    rows = np.concatenate([np.full(len(h), i) for i, h in enumerate(histories)] or [np.zeros(0)])
    cols = np.concatenate([np.asarray(h) for h in histories] or [np.zeros(0)])
    if len(rows):
        scores[torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)] = float("-inf")
    return scores


def stable_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] column indices of the k largest scores per row, ties broken by the lower index:
    exactly `argsort(descending, stable)[:, :k]`, but only the candidates at or above each
    row's k-th value are sorted (a full sort of a large catalogue per request is the cost)."""
    if k >= scores.shape[1] or scores.shape[1] <= 4 * k:
        return torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    kth = torch.topk(scores, k, dim=1).values[:, -1:]  # [B, 1]
    rows = []
    for row, threshold in zip(scores, kth):
        candidates = torch.nonzero(row >= threshold).squeeze(1)  # ascending index order
        picked = torch.argsort(row[candidates], descending=True, stable=True)[:k]
        rows.append(candidates[picked])
    return torch.stack(rows)


class Recommender(nn.Module):
    """Base of all models. Subclasses set `kind`, implement `score_all`, and either `fit`
    (closed-form baselines) or `forward(inputs, targets) -> loss` (trainable models)."""

    kind: ClassVar[str] = "recommender"
    trainable: ClassVar[bool] = False

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items

    # --- the contract --------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean next-item cross-entropy at every real position of the batch."""
        if self.trainable:
            return self(batch.inputs, batch.targets)
        # Closed-form models: the NLL of the target under softmax(log(score)) at each
        # position, i.e. how well the fitted statistics predict the next item.
        histories, targets = [], []
        for row_in, row_t in zip(batch.inputs.tolist(), batch.targets.tolist()):
            seen: list[int] = []
            for item, target in zip(row_in, row_t):
                if item != PAD:
                    seen.append(item)
                if target != PAD:
                    histories.append(np.array(seen, dtype=np.int64))
                    targets.append(target)
        scores = self.score_all(histories).clamp_min(0).add(1e-6).log()
        scores[:, PAD] = float("-inf")
        return nn.functional.cross_entropy(scores, torch.as_tensor(targets))

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """[B, N + 1] float scores, higher is better; column 0 (padding) is -inf."""
        raise NotImplementedError

    def score_items(self, histories: Sequence[np.ndarray], items: torch.Tensor) -> torch.Tensor:
        """[B, R] scores of the item indices `items` ([R], the same for every history):
        `score_all` restricted to those columns (models may compute only those)."""
        return self.score_all(histories).float()[:, items]

    @torch.no_grad()
    def topk(
        self, histories: Sequence[np.ndarray], k: int, exclude: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, k] item indices, [B, k] scores), best first; `exclude` removes history items.

        Ties are broken by the lower item index (torch.topk on CPU is not stable, so sort)."""
        scores = self.score_all(histories).float()
        if exclude:
            mask_seen(scores, histories)
        order = stable_topk(scores, min(k, self.n_items))
        return order, scores.gather(1, order)

    # --- fitting and persistence ---------------------------------------------------------
    def fit(self, sequences: Sequence[np.ndarray]) -> "Recommender":
        """Closed-form fit on training sequences; trainable models are fit by the loop."""
        return self

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON) that, with the state dict, rebuild the model."""
        return {"n_items": self.n_items}

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> "Recommender":
        """Rebuild from `config()` and a state dict (buffers may differ in size from a fresh model)."""
        model = cls(**config)
        for name, tensor in state.items():
            if name in dict(model.named_buffers()) and "." not in name:
                setattr(model, name, tensor.clone())
        model.load_state_dict(state, strict=True)
        return model.eval()
