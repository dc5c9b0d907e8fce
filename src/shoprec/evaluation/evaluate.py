"""One evaluator for every model: full ranking over all items, the seen-items policy,
metrics with 95% bootstrap intervals, and segment breakdowns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from shoprec.evaluation import metrics as M
from shoprec.evaluation.splits import EvalSet
from shoprec.models.base import Recommender, mask_seen


def score_rows(model: Recommender, eval_set: EvalSet, rows: slice) -> torch.Tensor:
    """[B, N+1] scores of the set's histories in `rows`; a model that reads where sessions
    start (a repeat head: `needs_sessions`) gets the set's `starts` too, and a set without
    them is a clear error rather than a silently different ranking."""
    histories = eval_set.histories[rows]
    if not getattr(model, "needs_sessions", False):
        return model.score_all(histories)
    if eval_set.starts is None:
        raise ValueError("this model reads where each history's sessions start, but the evaluation set "
                         "carries none: make the split with sessions=True")
    return model.score_all(histories, starts=eval_set.starts[rows])  # type: ignore[call-arg]


def rank_targets(
    model: Recommender,
    eval_set: EvalSet,
    exclude_seen: bool,
    k: int = 10,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """(ranks [U], top-k lists [U, k]) over the full catalogue.

    With `exclude_seen`, history items are masked before ranking - a target that is also in
    the history then ranks last, it is never silently unmasked."""
    was_training = model.training
    model.eval()
    ranks, lists = [], []
    with torch.no_grad():
        for s in range(0, len(eval_set), batch_size):
            histories = eval_set.histories[s:s + batch_size]
            scores = score_rows(model, eval_set, slice(s, s + batch_size)).float()  # [B, N+1]
            if exclude_seen:
                mask_seen(scores, histories)
            targets = torch.as_tensor(eval_set.targets[s:s + batch_size])
            ranks.append(M.pessimistic_ranks(scores, targets))
            # topk, not a full argsort: linear in the catalogue; and its own [B, k] tensor (a
            # numpy view of an argsort's first k columns kept the whole [B, N+1] result alive,
            # one per batch: gigabytes on a large catalogue).
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1, sorted=True).indices
            lists.append(top.numpy().copy())
    model.train(was_training)
    if not ranks:
        return np.zeros(0, dtype=np.int64), np.zeros((0, k), dtype=np.int64)
    return np.concatenate(ranks), np.concatenate(lists)


@dataclass
class EvalResult:
    """Scalars (`metrics`), their 95% intervals, and the same per segment."""

    model: str
    users: int
    k: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    segments: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: int | None = None  # evaluated targets where users have several (None: one each)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def head_items(popularity: np.ndarray, share: float = 0.8) -> np.ndarray:
    """Boolean [N+1]: the most popular items that together hold `share` of the interactions;
    every other item is long tail."""
    counts = np.asarray(popularity, dtype=np.float64).copy()
    counts[0] = 0.0
    order = np.argsort(-counts, kind="stable")
    cumulative = np.cumsum(counts[order]) / max(1.0, counts.sum())
    head = np.zeros(len(counts), dtype=bool)
    head[order[: int(np.searchsorted(cumulative, share)) + 1]] = True
    head[0] = False
    return head


def evaluate(
    model: Recommender,
    eval_set: EvalSet,
    *,
    exclude_seen: bool,
    popularity: np.ndarray,
    category: np.ndarray | None = None,
    k: int = 10,
    short_history: int | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    name: str | None = None,
) -> EvalResult:
    """Full-ranking metrics of `model` on `eval_set`.

    popularity: [N+1] training interaction counts (popularity bias, long-tail segment).
    category: [N+1] category codes for intra-list diversity (omitted when None).
    short_history: users whose history has at most this many items form the short-history
    segment (default: the shortest quartile of this evaluation set)."""
    ranks, lists = rank_targets(model, eval_set, exclude_seen, k)
    per_user = {
        f"HR@{k}": M.hit_rate_at_k(ranks, k),
        f"NDCG@{k}": M.ndcg_at_k(ranks, k),
        f"MRR@{k}": M.mrr_at_k(ranks, k),
        "popularity_bias": M.popularity_bias(lists, M.popularity_percentiles(popularity)),
    }
    if category is not None:
        per_user[f"diversity@{k}"] = M.intra_list_diversity(lists, category)
    metrics = {name_: float(v.mean()) if len(v) else float("nan") for name_, v in per_user.items()}
    metrics["coverage"] = M.catalog_coverage(lists, model.n_items)
    intervals = {
        name_: M.bootstrap_interval(v, bootstrap, seed=seed, groups=eval_set.users)
        for name_, v in per_user.items() if name_.startswith(("HR", "NDCG", "MRR"))
    }
    lengths = np.array([len(h) for h in eval_set.histories])
    threshold = short_history if short_history is not None else (
        int(np.quantile(lengths, 0.25)) if len(lengths) else 0
    )
    tail = ~head_items(popularity)[eval_set.targets]
    segments: dict[str, dict[str, float]] = {}
    for label, rows in (
        (f"short history (<= {threshold} items)", lengths <= threshold),
        ("long-tail targets", tail),
    ):
        if rows.any():
            segments[label] = {
                "users": int(rows.sum()),
                f"HR@{k}": float(per_user[f"HR@{k}"][rows].mean()),
                f"NDCG@{k}": float(per_user[f"NDCG@{k}"][rows].mean()),
            }
    users = eval_set.n_users
    return EvalResult(name or model.kind, users, k, metrics, intervals, segments,
                      None if users == len(eval_set) else len(eval_set))
