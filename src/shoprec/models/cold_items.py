"""Content-imputed id embeddings for cold items (in the catalogue, never in a training sequence).

Under full-softmax training a cold item is never a target, so its id embedding only ever
receives "push down" gradients: it learns to cancel whatever its category and title vectors
add, and the item ends up scoring low for everyone however good its content is. After
training we therefore replace each cold item's id embedding with the mean id embedding of
the warm items it most resembles, so it is scored like its look-alikes plus its own content.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from shoprec.models.sasrec import SASRec
from shoprec.sequences import PAD

TITLE_NEIGHBOURS = 5  # warm look-alikes averaged per cold item on the title route
SIMILARITY_CHUNK = 1024  # cold items compared with all warm titles at a time


@dataclass(frozen=True)
class ColdImputation:
    """How many cold items got a content-imputed id embedding, and by which route.

    by_title: from the `TITLE_NEIGHBOURS` warm items with the most similar MiniLM title;
    by_category: from the warm items of the same category (no title, or no warm titled item);
    left_as_trained: cold items with no usable content (or no warm item to borrow from),
    whose trained id embedding is kept."""

    by_title: int
    by_category: int
    left_as_trained: int

    @property
    def imputed(self) -> int:
        return self.by_title + self.by_category

    @property
    def cold(self) -> int:
        return self.imputed + self.left_as_trained

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "imputed": self.imputed, "cold": self.cold}


def impute_cold_item_embeddings(
    model: SASRec, train_counts: np.ndarray | torch.Tensor, neighbours: int = TITLE_NEIGHBOURS
) -> ColdImputation:
    """Give every cold item (train_counts == 0, index >= 1) of a trained `model` an id
    embedding imputed from its content, in place; padding row 0 is never touched.

    train_counts: [N+1] how often each item index occurs in the training sequences.
    Routes, first that applies: the mean id embedding of the `neighbours` warm items whose
    title embedding is most cosine-similar; else the mean over the warm items of its
    category; else the trained vector is kept. Keeping it, rather than zeroing it, is
    deliberate: with no content we know nothing about the item, and a zero vector would
    score 0 for every user, ranking an unknown item above every item the model has learnt
    to score below zero."""
    weight = model.item_embedding.weight  # [N+1, d]
    counts = torch.as_tensor(train_counts, device=weight.device).reshape(-1)
    if counts.shape[0] != weight.shape[0]:
        raise ValueError(
            f"train_counts has {counts.shape[0]} entries; the model has {weight.shape[0]} "
            f"item rows (n_items + 1, padding included)"
        )
    if neighbours < 1:
        raise ValueError(f"neighbours must be at least 1, not {neighbours}")
    real = torch.ones_like(counts, dtype=torch.bool)
    real[PAD] = False
    warm = real & (counts > 0)
    cold = real & (counts == 0)
    # Written only after every mean is taken, so no imputed vector feeds another one.
    rows: list[torch.Tensor] = []  # item indices, per route and chunk
    vectors: list[torch.Tensor] = []  # their imputed id embeddings
    done = torch.zeros_like(cold)

    with torch.no_grad():
        if model.text_dim:
            text = model.item_text.to(weight.device)  # [N+1, 384], zero rows: no title
            titled = text.abs().sum(1) > 0
            candidates = torch.nonzero(warm & titled).squeeze(1)  # [W]
            askers = torch.nonzero(cold & titled).squeeze(1)  # [C]
            if len(candidates) and len(askers):
                unit = F.normalize(text.float(), dim=1)
                warm_titles = unit[candidates]  # [W, 384]
                k = min(neighbours, len(candidates))
                # Chunks bound the [chunk, W] similarity matrix on catalogues of 10^5 items.
                for chunk in askers.split(SIMILARITY_CHUNK):
                    similarity = unit[chunk] @ warm_titles.T  # [c, W] cosine
                    top = similarity.topk(k, dim=1).indices  # [c, k]
                    rows.append(chunk)
                    vectors.append(weight[candidates[top]].mean(1))  # [c, d]
                done[askers] = True
        by_title = int(done.sum())

        if model.n_categories:
            category = model.item_category.to(weight.device)  # [N+1], 0: unknown
            for code in torch.unique(category[cold & ~done & (category > 0)]).tolist():
                peers = warm & (category == code)
                if not peers.any():
                    continue  # a category with no warm item has nothing to lend
                askers = torch.nonzero(cold & ~done & (category == code)).squeeze(1)
                rows.append(askers)
                vectors.append(weight[peers].mean(0).expand(len(askers), -1))
                done[askers] = True
        by_category = int(done.sum()) - by_title

        if rows:
            # In place: bumps the tensor's version, so SASRec's cached scoring matrix rebuilds.
            weight[torch.cat(rows)] = torch.cat(vectors).to(weight.dtype)

    return ColdImputation(by_title, by_category, int(cold.sum()) - by_title - by_category)
