"""Relevance: a model's raw scores as a percentile of its full ranking.

Raw scores are not comparable across models (counts for the baselines, logits for SASRec), so a
relevance floor on them would mean something different for every model and every user. The
percentile of an item in the user's full ranking over the catalogue is the same scale for all:

    relevance(item) = 1 - (other items scoring >= item) / (N - 1)        in [0, 1]

1 is the user's top item, 0 the bottom one; ties count against the item (as the evaluator's
pessimistic ranks do). An item scored -inf (seen and excluded, filtered out) has relevance 0
and is reported as not eligible (`eligible`) whatever the floor.
"""

from __future__ import annotations

import numpy as np
import torch


def percentile_relevance(scores: np.ndarray | torch.Tensor, items: np.ndarray) -> np.ndarray:
    """[B, C] relevance of the item indices `items` ([B, C] or [C] for one row) in each row of
    `scores` ([B, N+1], column 0 padding, or [N+1] for one user)."""
    rows = np.atleast_2d(_numpy(scores))[:, 1:]  # padding is never a candidate
    items = np.asarray(items, dtype=np.int64)
    single = items.ndim == 1
    picked = np.atleast_2d(items)
    n = rows.shape[1]
    out = np.zeros(picked.shape, dtype=np.float64)
    if n <= 1:
        out[:] = 1.0
        return out[0] if single else out
    for b in range(picked.shape[0]):
        row = rows[b if rows.shape[0] > 1 else 0]
        ordered = np.sort(row)
        values = row[picked[b] - 1]
        at_or_above = n - np.searchsorted(ordered, values, side="left")  # includes the item itself
        out[b] = 1.0 - (at_or_above - 1) / (n - 1)
        out[b, ~np.isfinite(values)] = 0.0
    return out[0] if single else out


def eligible(scores: np.ndarray | torch.Tensor, items: np.ndarray) -> np.ndarray:
    """Boolean like `items`: the item has a finite score (it was not excluded or filtered)."""
    rows = np.atleast_2d(_numpy(scores))
    items = np.asarray(items, dtype=np.int64)
    if items.ndim == 1:
        return np.isfinite(rows[0, items]) & (items > 0)
    return np.isfinite(np.take_along_axis(rows, items, axis=1)) & (items > 0)


def _numpy(scores: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        return scores.detach().float().cpu().numpy()
    return np.asarray(scores, dtype=np.float64)
