"""Why an item was recommended: the history item that contributed most to its score.

Contribution is measured the same way for every model, by leave-one-out: item i's score with
the recent history minus its score with history item j removed. The j with the largest drop is
the reason; when no removal lowers the score (e.g. a popularity model) there is no personal
reason and the answer says None.

Cost bound (this runs on every served request): only the newest `window` history items are
tried, and base and ablated scores are all computed over the newest `context` items, so one
request costs one batch of `window + 1` short histories scored on the recommended items only
(`Model.score_items`), whatever the length of the history.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shoprec.models.base import Recommender as Model
from shoprec.sequences import keep_with_openings

DEFAULT_WINDOW = 20
DEFAULT_CONTEXT = 50


@torch.no_grad()
def reason_indices(model: Model, histories: Sequence[np.ndarray], recommended: Sequence[Sequence[int]],
                   window: int = DEFAULT_WINDOW, context: int = DEFAULT_CONTEXT,
                   starts: Sequence[np.ndarray | None] | None = None) -> list[list[int | None]]:
    """For each history (item indices, oldest first) and its recommended item indices: the
    history item index that contributed most to each recommended item's score, or None.
    starts: each history's session openings, for a model that reads them (a repeat head);
    removing an item that opens a session moves the opening to the session's next item."""
    out: list[list[int | None]] = []
    for n, (history, items) in enumerate(zip(histories, recommended)):
        recent = np.asarray(history, dtype=np.int64)[-max(context, window):]
        items = np.asarray(items, dtype=np.int64)
        if len(recent) == 0 or len(items) == 0:
            out.append([None] * len(items))
            continue
        positions = np.arange(max(0, len(recent) - window), len(recent))
        # Row r+1 is `recent` without positions[r]: column c takes item c, or c + 1 from there on.
        columns = np.arange(len(recent) - 1)
        removed = recent[columns[None, :] + (columns[None, :] >= positions[:, None])]  # [W, L-1]
        rows = [recent, *removed]  # row 0: nothing removed
        opens = None if starts is None else starts[n]
        if opens is None:
            scores = model.score_items(rows, torch.as_tensor(items)).float()  # [1 + W, R]
        else:
            flags = np.asarray(opens, dtype=bool)[-len(recent):]
            row_starts = [flags]
            for position in positions:
                keep = np.ones(len(recent), dtype=bool)
                keep[position] = False
                row_starts.append(keep_with_openings(recent, flags, keep)[1])
            scores = model.score_items(rows, torch.as_tensor(items), starts=row_starts).float()  # type: ignore[call-arg]
        drop = torch.nan_to_num(scores[0:1] - scores[1:], nan=0.0, posinf=0.0, neginf=0.0)  # [W, R]
        best = drop.argmax(dim=0)  # [R]: the removal that hurt each item most
        out.append([int(recent[positions[int(b)]]) if float(drop[int(b), n]) > 1e-9 else None
                    for n, b in enumerate(best.tolist())])
    return out
