"""A learned repeat head for repeat-purchase data (issue 17): which of the items a user
already bought comes back first in their next session (an Instacart order: a basket).

The fixed repeat bonus (`SASRec.repeat_bonus`, the `decayfreq` baseline) ranks a user's past
items by one time-decayed count over their items. People restock by session, not by item:
what they put in the cart first, how many of their sessions held an item, how many sessions
ago it was last bought against how often they buy it ("due"). The head reads those from the
whole history cut into sessions and scores each past item with a small MLP trained on the
training sessions' first items (a softmax over the user's own past items, RepeatNet's repeat
side). `mixture_scores` blends its distribution with an explore distribution over the whole
catalogue (RepeatNet's gate as one validated weight).

What a history needs besides its items: where its sessions start
(`shoprec.sequences.session_starts`, from the log's session ids, else from a gap in time). Measured in RESULTS ("A learned repeat
head"): the session features carry the gain; the same head on item-only features does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from shoprec.sequences import PAD

ITEM_DECAYS = (0.9, 0.99, 0.995, 1.0)  # per later item, as `decayed_counts`
SESSION_DECAYS = (0.7, 1.0)  # per later session, for the items that opened a session
FEATURE_NAMES: tuple[str, ...] = (
    *(f"log1p_count_item_decay_{d:g}" for d in ITEM_DECAYS),
    *(f"log1p_opened_session_decay_{d:g}" for d in SESSION_DECAYS),
    "share_of_sessions",
    "log1p_sessions_since_last",
    "log_due",  # log((sessions since last + 1) / (mean sessions between purchases + 1)); 0 if once
    "bought_in_two_sessions",
    "in_last_session",
    "log_sessions",
)


def repeat_features(items: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct items of one history and their features, `FEATURE_NAMES` in order.

    items: the history's item indices, oldest first; starts: True where an event opens a
    session (the first event always does). Returns (candidates [C] int64 sorted, features
    [C, F] float32)."""
    items = np.asarray(items, dtype=np.int64)
    n = len(items)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    opens = np.asarray(starts, dtype=bool).copy()
    opens[0] = True
    session = np.cumsum(opens) - 1  # 0 = the oldest session
    n_sessions = int(session[-1]) + 1
    session_age = n_sessions - 1 - session  # 0 = the newest session
    candidates, index = np.unique(items, return_inverse=True)
    c = len(candidates)
    item_age = np.arange(n - 1, -1, -1, dtype=np.float64)
    columns = []
    for decay in ITEM_DECAYS:
        columns.append(np.log1p(np.bincount(index, decay ** item_age, minlength=c)))
    for decay in SESSION_DECAYS:
        columns.append(np.log1p(np.bincount(index[opens], decay ** session_age[opens].astype(np.float64),
                                            minlength=c)))
    pairs = np.unique(index * n_sessions + session)  # (item, session) once each
    in_sessions = np.bincount(pairs // n_sessions, minlength=c).astype(np.float64)
    last = np.full(c, -1, dtype=np.int64)
    np.maximum.at(last, index, session)
    first = np.full(c, n_sessions, dtype=np.int64)
    np.minimum.at(first, index, session)
    since = (n_sessions - 1 - last).astype(np.float64)
    again = in_sessions > 1
    mean_gap = np.where(again, (last - first) / np.maximum(in_sessions - 1, 1), 0.0)
    columns += [
        in_sessions / n_sessions,
        np.log1p(since),
        np.where(again, np.log((since + 1.0) / (mean_gap + 1.0)), 0.0),
        again.astype(np.float64),
        (since == 0).astype(np.float64),
        np.full(c, np.log(n_sessions)),
    ]
    return candidates, np.stack(columns, axis=1).astype(np.float32)


@dataclass
class RepeatExamples:
    """Training examples: the features of each history's past items and which one came next."""

    features: list[np.ndarray] = field(default_factory=list)  # [C_i, F] per example
    targets: list[int] = field(default_factory=list)  # position of the next item in its candidates

    def __len__(self) -> int:
        return len(self.targets)


def later_openings(opens: np.ndarray) -> np.ndarray:
    """Positions of the sessions a history opens after its first (the repeat head's targets)."""
    positions = np.flatnonzero(np.asarray(opens, dtype=bool))
    return positions[positions > 0]


def session_examples(sequences: Sequence[np.ndarray], starts: Sequence[np.ndarray], per_user: int = 16,
                     reads: Sequence[np.ndarray] | None = None) -> tuple[RepeatExamples, RepeatExamples]:
    """(train, valid) examples from the first item of each user's sessions after their first:
    the history is everything before that session. Each user's newest such session is their
    validation example, their `per_user` sessions before it train (the newest ones: bounded
    work per user, and the recent habits). Sessions whose first item is new to the user teach
    the repeat head nothing and are left out (the explore side owns them). `reads`: the session
    starts the features read where they differ from the targets' (an ablation: all True reads
    items only); default `starts`."""
    train, valid = RepeatExamples(), RepeatExamples()
    for items, opens, read in zip(sequences, starts, starts if reads is None else reads):
        items = np.asarray(items)
        positions = later_openings(opens)
        if not len(positions):
            continue
        for k, at in enumerate(positions[::-1][: per_user + 1]):
            candidates, features = repeat_features(items[:at], read[:at])
            hit = np.searchsorted(candidates, items[at])
            if hit < len(candidates) and candidates[hit] == items[at]:
                side = valid if k == 0 else train
                side.features.append(features)
                side.targets.append(int(hit))
    return train, valid


def newest_openings(sequences: Sequence[np.ndarray], starts: Sequence[np.ndarray]
                    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """(histories, their starts, targets): per sequence with a session after its first, the
    first item of its newest session and everything before it: the validation targets
    `session_examples` holds out (new items included: the explore side must rank those)."""
    histories, opens_of, targets = [], [], []
    for items, opens in zip(sequences, starts):
        positions = later_openings(opens)
        if len(positions):
            at = int(positions[-1])
            histories.append(np.asarray(items)[:at]), opens_of.append(np.asarray(opens)[:at])
            targets.append(int(items[at]))
    return histories, opens_of, np.asarray(targets, dtype=np.int64)


class RepeatHead(nn.Module):
    """Scores a history's past items from their `repeat_features` (standardized; a small MLP)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = int(hidden)
        width = len(FEATURE_NAMES)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[..., F] -> [...] scores."""
        return self.net((features - self.mean) / self.scale).squeeze(-1)

    def item_scores(self, histories: Sequence[np.ndarray], starts: Sequence[np.ndarray]
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per history (candidates [C], scores [C]): the head's score of each past item."""
        out = []
        with torch.no_grad():
            for items, opens in zip(histories, starts):
                candidates, features = repeat_features(items, opens)
                out.append((candidates, self(torch.from_numpy(features)).numpy()))
        return out


def _padded(examples: RepeatExamples, chosen: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, C, F] features, [B, C] mask of real candidates, [B] targets."""
    widest = max(len(examples.features[i]) for i in chosen)
    features = np.zeros((len(chosen), widest, len(FEATURE_NAMES)), dtype=np.float32)
    mask = np.zeros((len(chosen), widest), dtype=bool)
    for row, i in enumerate(chosen):
        size = len(examples.features[i])
        features[row, :size], mask[row, :size] = examples.features[i], True
    return torch.from_numpy(features), torch.from_numpy(mask), torch.as_tensor([examples.targets[i] for i in chosen])


def _nll(head: RepeatHead, examples: RepeatExamples, chosen: np.ndarray) -> torch.Tensor:
    features, mask, targets = _padded(examples, chosen)
    scores = head(features).masked_fill(~mask, float("-inf"))
    return nn.functional.cross_entropy(scores, targets)


def fit_repeat_head(train: RepeatExamples, valid: RepeatExamples, epochs: int = 30, batch_size: int = 64,
                    lr: float = 3e-3, hidden: int = 16, seed: int = 0) -> tuple[RepeatHead, list[float]]:
    """Train a `RepeatHead` on `train` (softmax over each example's past items); keep the epoch
    with the lowest validation loss. Returns the head and the validation loss per epoch."""
    if not len(train):
        raise ValueError("no training example: no user's later session opened with an item bought before")
    torch.manual_seed(seed)
    head = RepeatHead(hidden)
    stacked = np.concatenate(train.features)
    head.mean = torch.as_tensor(stacked.mean(0))
    head.scale = torch.as_tensor(stacked.std(0) + 1e-6)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-5)
    rng = np.random.default_rng(seed)
    held = np.arange(len(valid))
    best, best_state, losses = float("inf"), None, []
    for _ in range(epochs):
        head.train()
        order = rng.permutation(len(train))
        for start in range(0, len(order), batch_size):
            optimizer.zero_grad()
            _nll(head, train, order[start:start + batch_size]).backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            loss = float(np.mean([float(_nll(head, valid, held[s:s + 256])) for s in range(0, len(held), 256)])) \
                if len(held) else float("nan")
        losses.append(loss)
        if not loss >= best:  # NaN (no validation) keeps the last epoch
            best, best_state = loss, {k: v.clone() for k, v in head.state_dict().items()}
    if best_state is not None:
        head.load_state_dict(best_state)
    return head, losses


def mixture_scores(repeat: Sequence[tuple[np.ndarray, np.ndarray]], explore: torch.Tensor,
                   repeat_share: float) -> torch.Tensor:
    """[B, N+1] log of repeat_share * P_repeat + (1 - repeat_share) * P_explore (RepeatNet's
    mixture): P_repeat the softmax of the head's scores over each user's past items (0
    elsewhere), P_explore the softmax of `explore` [B, N+1] over the catalogue. A history
    without past items gets P_explore alone."""
    if not 0.0 <= repeat_share <= 1.0:
        raise ValueError(f"repeat_share must be in [0, 1], not {repeat_share}")
    explore = explore.float().clone()
    explore[:, PAD] = float("-inf")
    mixed = torch.softmax(explore, dim=1)
    for row, (candidates, scores) in enumerate(repeat):
        if len(candidates):  # a user with no past item keeps the whole explore distribution
            mixed[row] *= 1.0 - repeat_share
            mixed[row, torch.as_tensor(candidates)] += repeat_share * torch.softmax(torch.as_tensor(scores), 0)
    out = torch.log(mixed)
    out[:, PAD] = float("-inf")
    return out
