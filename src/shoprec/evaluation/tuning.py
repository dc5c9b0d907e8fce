"""Baselines fit with hyper-parameters chosen on validation, never on test.

One rule everywhere a baseline is fit (`training.fit`, the `evaluate` step's report, the
promotion gate's first-run baselines), so the same training sequences always give the same
baseline: hold out the newest item of (a fixed sample of) the training sequences, score each
setting of the baseline's grid on those held-out items (NDCG@k under the data set's seen-items
policy), then refit the best setting on the whole training sequences. Only the training
sequences are read: a test target can never choose a setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoprec.evaluation import metrics as M
from shoprec.evaluation.evaluate import rank_targets
from shoprec.evaluation.splits import EvalSet, Split
from shoprec.models.base import Recommender
from shoprec.models.baselines import BASELINES

# Per baseline: the settings tried, the first being the default (kept on ties). TIFU-KNN: the
# authors' Instacart settings (900 neighbours, within-basket decay 0.9, group decay 0.7, 3
# groups) with alpha 0.7-0.9 and pseudo-baskets of 10 or 20 items (the sample's orders hold
# 9.9 on average). A wider grid (baskets of 5, 300 neighbours) measured within 0.001 of it on
# the Instacart held-out items (baskets of 5 about 0.006 worse) at three times the cost: the
# gate and the evaluate step tune too, inside `make run`'s time.
GRIDS: dict[str, tuple[dict[str, Any], ...]] = {
    "decayfreq": tuple({"decay": d} for d in (0.99, 1.0, 0.999, 0.995, 0.98, 0.95, 0.9)),
    "tifuknn": tuple(
        {"neighbours": 900, "within_decay": 0.9, "group_decay": 0.7, "alpha": a, "groups": 3, "basket_size": b}
        for b in (10, 20) for a in (0.9, 0.8, 0.7)
    ),
}
# Held-out items scored per setting: enough to choose, bounded on large data.
TUNING_USERS = 2000


@dataclass
class Tuned:
    """A fitted baseline and what validation said: setting (as JSON) -> held-out NDCG@k."""

    model: Recommender
    chosen: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def holdout(sequences: Sequence[np.ndarray], max_users: int = TUNING_USERS,
            seed: int = 0) -> tuple[list[np.ndarray], EvalSet]:
    """(training sequences without the held-out items, validation set): the newest item of up
    to `max_users` sequences with 2+ items (a fixed random sample) is the target, the rest of
    that sequence the history."""
    eligible = np.flatnonzero([len(s) >= 2 for s in sequences])
    if len(eligible) > max_users:
        eligible = np.sort(np.random.default_rng(seed).choice(eligible, max_users, replace=False))
    held = set(eligible.tolist())
    train = [np.asarray(s)[:-1] if i in held else np.asarray(s) for i, s in enumerate(sequences)]
    histories = [train[i] for i in eligible]
    targets = np.array([int(sequences[i][-1]) for i in eligible], dtype=np.int64)
    return train, EvalSet(eligible.astype(object), histories, targets)


def baseline_validation(split: Split) -> EvalSet | None:
    """What the baselines' settings are chosen on (`fit_baseline`'s `held_out`): the split's
    own validation set where it validates on session openings (the transformer's targets:
    every model chooses on the same), else None (`holdout`'s newest training items)."""
    return split.valid if split.spec.validation == "opening" and len(split.valid) else None


def sample_users(eval_set: EvalSet, max_users: int = TUNING_USERS, seed: int = 0) -> EvalSet:
    """At most `max_users` of the set's users (a fixed random sample), in their order, with
    their session openings where the set has them."""
    if len(eval_set) <= max_users:
        return eval_set
    kept = np.sort(np.random.default_rng(seed).choice(len(eval_set), max_users, replace=False))
    return EvalSet(eval_set.users[kept], [eval_set.histories[i] for i in kept], eval_set.targets[kept],
                   None if eval_set.starts is None else [eval_set.starts[i] for i in kept])


def fit_baseline(kind: str, n_items: int, sequences: Sequence[np.ndarray], *, exclude_seen: bool,
                 k: int = 10, grid: Sequence[dict[str, Any]] | None = None,
                 max_users: int = TUNING_USERS, held_out: EvalSet | None = None) -> Tuned:
    """The baseline `kind` fit on `sequences`, its setting chosen on held-out items (above), or
    on `held_out`, a validation set none of `sequences` holds the targets of (a split validated
    on session openings: the transformer's validation targets, so both choose on the same).
    Baselines without a grid (MostPop, Markov-1, ItemKNN, BuyAgain) are simply fit."""
    cls = BASELINES[kind]
    settings = list(GRIDS.get(kind, ()) if grid is None else grid)
    if len(settings) <= 1:
        chosen = settings[0] if settings else {}
        return Tuned(cls(n_items, **chosen).fit(sequences), chosen)
    if held_out is not None:
        train, valid = list(sequences), sample_users(held_out, max_users)
    else:
        train, valid = holdout(sequences, max_users)
    scores: dict[str, float] = {}
    best, best_score = settings[0], -1.0
    for setting in settings:
        if len(valid):
            ranks, _ = rank_targets(cls(n_items, **setting).fit(train), valid, exclude_seen, k)
            score = float(M.ndcg_at_k(ranks, k).mean())
        else:
            score = 0.0
        scores[_label(setting)] = score
        if score > best_score + 1e-12:  # ties keep the earlier (default-first) setting
            best, best_score = setting, score
    return Tuned(cls(n_items, **best).fit(sequences), dict(best), scores)


def baseline_kinds(exclude_seen: bool, given: Sequence[str] = ("mostpop", "markov1", "itemknn")) -> list[str]:
    """The baselines a data set is compared with: `given`, plus on repeat-purchase data (past
    items kept) BuyAgain, the time-decayed frequency and TIFU-KNN, the strong ones there."""
    extra = [] if exclude_seen else ["buyagain", "decayfreq", "tifuknn"]
    return list(dict.fromkeys([*given, *extra]))


def _label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in setting.items())
