"""Why an item was recommended: the history item that contributed most to its score.

Contribution is measured the same way for every model, by leave-one-out: item i's score with
the whole history minus its score with history item j removed. The j with the largest drop is
the reason; when no removal lowers the score (e.g. a popularity model) there is no personal
reason and the answer says None. Only the newest `window` history items are tried, which
bounds the cost to one extra scoring batch of `window` histories per request.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shoprec.models.base import Recommender as Model

DEFAULT_WINDOW = 20


@torch.no_grad()
def reason_indices(model: Model, histories: Sequence[np.ndarray], recommended: Sequence[Sequence[int]],
                   window: int = DEFAULT_WINDOW) -> list[list[int | None]]:
    """For each history (item indices, oldest first) and its recommended item indices: the
    history item index that contributed most to each recommended item's score, or None."""
    ablated: list[np.ndarray] = []
    spans: list[tuple[int, int, np.ndarray]] = []  # (first row, rows, positions removed)
    for history in histories:
        history = np.asarray(history, dtype=np.int64)
        positions = np.arange(max(0, len(history) - window), len(history))
        spans.append((len(ablated), len(positions), positions))
        ablated.extend(np.delete(history, p) for p in positions)
    if not ablated:
        return [[None] * len(r) for r in recommended]
    base = model.score_all(list(histories)).float()  # [B, N+1]
    without = model.score_all(ablated).float()  # [sum of windows, N+1]
    out: list[list[int | None]] = []
    for row, ((first, count, positions), items) in enumerate(zip(spans, recommended)):
        if count == 0 or not len(items):
            out.append([None] * len(items))
            continue
        columns = torch.as_tensor(np.asarray(items, dtype=np.int64))
        drop = base[row, columns].unsqueeze(0) - without[first:first + count][:, columns]  # [W, R]
        drop = torch.nan_to_num(drop, nan=0.0, posinf=0.0, neginf=0.0)
        best = drop.argmax(dim=0)  # [R]: the removal that hurt each item most
        history = np.asarray(histories[row], dtype=np.int64)
        out.append([int(history[positions[int(b)]]) if float(drop[int(b), n]) > 1e-9 else None
                    for n, b in enumerate(best.tolist())])
    return out
