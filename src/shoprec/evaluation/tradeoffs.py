"""What the list policies cost: sponsored slots at a relevance floor, and MMR diversity.

Both replay the policy on the test users of a split, from the same masked score rows the
evaluator ranks (seen items at -inf under the data set's policy), and score the final lists
against each user's held-out next item. NDCG here is of the list actually shown (the target's
position in it; ties in the model's scores fall to the lower item index, as the serving top-k
does), so the organic row is the plain model and every delta is paired user by user, with a
95% bootstrap interval of the mean difference.

Sponsored candidates are simulated, stated in every report: each test user gets
`candidates_per_user` items drawn uniformly from the catalogue (a campaign pool knows nothing of
the user) with log-normal bids (median 1); the advertiser's view is the fill (sponsored items
shown per list) and the relevance of what was shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from shoprec.evaluation import metrics as M
from shoprec.evaluation.evaluate import head_items, score_rows
from shoprec.evaluation.exposure import gini, group_exposure, long_tail_share, ndcg_of_lists
from shoprec.evaluation.splits import EvalSet
from shoprec.models.base import Recommender, mask_seen
from shoprec.ranking import diversity as D
from shoprec.ranking.relevance import eligible, percentile_relevance
from shoprec.ranking.sponsored import DEFAULT_SLOTS, Candidate, place_sponsored

BID_SIGMA = 0.5  # log-normal spread of the simulated bids


def score_batches(model: Recommender, eval_set: EvalSet, exclude_seen: bool,
                  batch_size: int = 256) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows of eval_set, [B, N+1] scores) with seen items masked as the evaluator does."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(eval_set), batch_size):
                rows = slice(start, min(len(eval_set), start + batch_size))
                scores = score_rows(model, eval_set, rows).float()
                if exclude_seen:
                    mask_seen(scores, eval_set.histories[rows])
                scores[:, 0] = float("-inf")
                yield rows, scores
    finally:
        model.train(was_training)


def _paired(values: np.ndarray, base: np.ndarray, bootstrap: int, seed: int,
            groups: np.ndarray | None = None) -> dict[str, float]:
    low, high = M.bootstrap_interval(values - base, bootstrap, seed=seed, groups=groups)
    return {"delta": float((values - base).mean()), "delta_low": low, "delta_high": high}


def sponsored_cost(model: Recommender, eval_set: EvalSet, *, exclude_seen: bool,
                   floors: Sequence[float] = (0.0, 0.5, 0.9, 0.99), slots: int = DEFAULT_SLOTS,
                   candidates_per_user: int = 20, k: int = 10, bootstrap: int = 1000,
                   seed: int = 0) -> list[dict[str, Any]]:
    """One row per floor (and the organic row first): NDCG@k of the shown lists, its paired
    difference from organic, fill, mean relevance of the sponsored items shown, and how often a
    sponsored item was the user's next item."""
    rng = np.random.default_rng(seed)
    n_items = model.n_items
    organic_lists, targets = [], eval_set.targets
    shown: dict[float, list[list[int]]] = {f: [] for f in floors}
    fill: dict[float, list[int]] = {f: [] for f in floors}
    rel_shown: dict[float, list[float]] = {f: [] for f in floors}
    sponsored_hit: dict[float, list[bool]] = {f: [] for f in floors}
    for rows, scores in score_batches(model, eval_set, exclude_seen):
        top = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k].numpy()
        pool = rng.integers(1, n_items + 1, size=(len(top), candidates_per_user))
        bids = rng.lognormal(0.0, BID_SIGMA, size=pool.shape)
        relevance = percentile_relevance(scores, pool)
        ok = eligible(scores, pool)
        for b, target in enumerate(targets[rows]):
            organic = [int(i) for i in top[b] if np.isfinite(float(scores[b, i]))]
            organic_lists.append(organic + [0] * (k - len(organic)))
            # A campaign pool may draw an item twice: the first draw (its bid) stands.
            candidates, rel = [], {}
            for c in range(candidates_per_user):
                item = int(pool[b, c])
                if item in rel:
                    continue
                candidates.append(Candidate(item, float(bids[b, c])))
                rel[item] = float(relevance[b, c]) if ok[b, c] else None
            for floor in floors:
                placed = place_sponsored(organic, candidates, rel, k=k, slots=slots, floor=floor)
                items = [int(s.item) for s in placed]
                shown[floor].append(items + [0] * (k - len(items)))
                paid = [s for s in placed if s.sponsored]
                fill[floor].append(len(paid))
                rel_shown[floor] += [float(s.relevance) for s in paid]  # type: ignore[arg-type]
                sponsored_hit[floor].append(any(s.item == int(target) for s in paid))
    base = ndcg_of_lists(np.array(organic_lists).reshape(-1, k), targets, k)
    out: list[dict[str, Any]] = [{"floor": None, "users": len(base), f"NDCG@{k}": float(base.mean()),
                                  "delta": 0.0, "delta_low": 0.0, "delta_high": 0.0, "fill": 0.0,
                                  "sponsored_relevance": float("nan"), "sponsored_hit_rate": 0.0}]
    for floor in floors:
        ndcg = ndcg_of_lists(np.array(shown[floor]).reshape(-1, k), targets, k)
        out.append({"floor": floor, "users": len(ndcg), f"NDCG@{k}": float(ndcg.mean()),
                    **_paired(ndcg, base, bootstrap, seed, eval_set.users), "fill": float(np.mean(fill[floor])),
                    "sponsored_relevance": float(np.mean(rel_shown[floor])) if rel_shown[floor] else float("nan"),
                    "sponsored_hit_rate": float(np.mean(sponsored_hit[floor]))})
    return out


def diversity_tradeoff(model: Recommender, eval_set: EvalSet, *, exclude_seen: bool, features: np.ndarray,
                       popularity: np.ndarray, values: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 1.0),
                       groups: np.ndarray | None = None, k: int = 10, pool: int = D.DEFAULT_POOL,
                       bootstrap: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per diversity value: NDCG@k (paired difference from the first value, 0 by
    default: the plain model), HR@k,
    intra-list diversity over `features` (category codes or embeddings), long-tail share,
    catalogue coverage and, with `groups` ([N+1] seller/brand per item), the Gini of the
    groups' slot shares."""
    lists: dict[float, list[np.ndarray]] = {v: [] for v in values}
    for rows, scores in score_batches(model, eval_set, exclude_seen):
        finite = torch.isfinite(scores).sum(1)
        order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :max(pool, k)].numpy()
        for b in range(len(order)):
            candidates = order[b, :min(order.shape[1], int(finite[b]))]
            for value in values:
                chosen = D.mmr(candidates, features, k, value)
                lists[value].append(np.pad(chosen, (0, k - len(chosen))))
    head = head_items(popularity)
    out: list[dict[str, Any]] = []
    base: np.ndarray | None = None
    for value in values:
        shown = np.array(lists[value]).reshape(-1, k)
        ndcg = ndcg_of_lists(shown, eval_set.targets, k)
        base = ndcg if base is None else base
        row: dict[str, Any] = {
            "diversity": value, f"NDCG@{k}": float(ndcg.mean()), **_paired(ndcg, base, bootstrap, seed, eval_set.users),
            f"HR@{k}": float((ndcg > 0).mean()),
            f"ILD@{k}": float(np.mean([D.intra_list_diversity(row_[row_ > 0], features) for row_ in shown])),
            "long_tail_share": long_tail_share(shown, head),
            "coverage": M.catalog_coverage(shown[shown > 0], model.n_items),
        }
        if groups is not None:
            row["group_gini"] = gini(group_exposure(shown, groups)["slot_share"].to_numpy())
        out.append(row)
    return out
