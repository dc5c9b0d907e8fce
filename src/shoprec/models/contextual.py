"""A model scored with the user context of each history of one evaluation set.

The evaluator ranks through `score_all(histories)` alone; a SASRec that reads a user context
(`features.user_context`) needs each history's point-in-time context beside it. This adapter
knows the evaluation set's histories (by object identity: the evaluator passes the set's own
arrays, in batches) and hands the model the matching context rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shoprec.models.base import Recommender


class WithUserContext(Recommender):
    """`model.score_all(histories, context=...)` for the histories of one evaluation set;
    `context[i]` belongs to `histories[i]`. A history not of that set is refused."""

    kind = "with_user_context"

    def __init__(self, model: Recommender, histories: Sequence[np.ndarray], context: np.ndarray) -> None:
        super().__init__(model.n_items)
        if len(context) != len(histories):
            raise ValueError(f"{len(context)} context rows for {len(histories)} histories")
        self.model = model
        self._histories = list(histories)  # held, so that the ids below stay theirs
        self._row = {id(h): i for i, h in enumerate(self._histories)}
        self.context = np.asarray(context, dtype=np.float32)
        self.train(model.training)

    def score_all(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        rows = [self._row.get(id(h)) for h in histories]
        if any(r is None for r in rows):
            raise ValueError("a history that is not of this evaluation set has no user context")
        return self.model.score_all(histories, context=self.context[rows])  # type: ignore[call-arg]
