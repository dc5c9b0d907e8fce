"""The gate's evaluation window and how a model scores on it.

Models are scored in item-id space (`GateWindow`), not index space, so a candidate and a champion
trained on different catalogues are still compared on exactly the same users and targets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shoprec.errors import GateError
from shoprec.evaluation import metrics as M
from shoprec.evaluation.evaluate import rank_targets
from shoprec.evaluation.splits import EvalSet, Split, SplitSpec, make_split, size_label
from shoprec.evaluation.tuning import baseline_kinds, baseline_validation, fit_baseline
from shoprec.models.base import Recommender as Model
from shoprec.models.bundle import load_bundle
from shoprec.sequences import ItemVocab, build_vocab, keep_with_openings


# --- the evaluation window ---------------------------------------------------------------
@dataclass(frozen=True)
class GateWindow:
    """The newest evaluation window, in item ids: user `users[i]` saw `histories[i]` (oldest
    first), then `targets[i]`; a user may have several targets (`SplitSpec.test_sessions`).
    `train` holds the sequences before the window (to fit first-run baselines).

    Each user's events are kept once (`sequences`: up to their last target), and each target
    as the length of its history in it (`lengths`): every history is a prefix of its user's
    sequence, so a user with ten targets costs one sequence, not ten histories."""

    users: tuple[str, ...]
    lengths: tuple[int, ...]
    targets: tuple[str, ...]
    sequences: dict[str, tuple[str, ...]]
    train: tuple[tuple[str, ...], ...] = ()
    kind: str = ""
    # Temporal windows: per user, the positions of their sequence's events that open a session
    # (for a model with a repeat head, `needs_sessions`); empty where the split has no sessions.
    openings: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # A split validated on session openings: its validation set as (row of `train`, the item
    # that followed it), so the first-run baselines choose their settings on the same targets
    # as training did (`evaluation.tuning.baseline_validation`); () otherwise.
    validation: tuple[tuple[int, str], ...] = ()

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def histories(self) -> "_Prefixes":
        """Per target, the items before it (a tuple built on access)."""
        return _Prefixes(self.users, self.lengths, self.sequences)

    @property
    def session_openings(self) -> "_Prefixes | tuple[()]":
        """Per target, the positions of its history's events that open a session; () where
        the window has no sessions."""
        if not self.openings:
            return ()
        return _Prefixes(self.users, self.lengths, self.openings, below=True)

    def history_lengths(self) -> np.ndarray:
        return np.asarray(self.lengths, dtype=np.int64)

    def short_history(self, max_items: int | None = None) -> tuple[np.ndarray, int]:
        """(bool [U] mask, threshold): targets whose history has at most `max_items` items
        (default: the shortest quartile of this window, as the evaluator's segment)."""
        lengths = self.history_lengths()
        threshold = max_items if max_items is not None else (
            int(np.quantile(lengths, 0.25)) if len(lengths) else 0)
        return lengths <= threshold, threshold

    @staticmethod
    def from_split(split: Split, vocab: ItemVocab) -> "GateWindow":
        """The split's test set (and its training sequences) in item ids."""
        test = split.test
        users = tuple(str(u) for u in test.users)
        # A user's longest history and its target hold every one of their targets' histories.
        longest: dict[str, int] = {}
        for row, user in enumerate(users):
            if user not in longest or len(test.histories[row]) > len(test.histories[longest[user]]):
                longest[user] = row
        sequences, openings = {}, {}
        for user, row in longest.items():
            items = np.append(np.asarray(test.histories[row]), test.targets[row])
            sequences[user] = tuple(vocab.item_ids(items))
            if test.starts is not None:
                openings[user] = tuple(np.flatnonzero(test.starts[row]).tolist())
        lengths = tuple(len(h) for h in test.histories)
        targets = tuple(vocab.item_ids(test.targets))
        if any(sequences[u][n] != t for u, n, t in zip(users, lengths, targets)):
            raise GateError("a test history is not a prefix of its user's newest one: cannot keep the window compact")
        return GateWindow(
            users=users, lengths=lengths, targets=targets, sequences=sequences,
            train=tuple(tuple(vocab.item_ids(s)) for s in split.train),
            kind=split.kind,
            openings=openings,
            validation=() if baseline_validation(split) is None or split.valid.train_rows is None else tuple(
                (int(row), item) for row, item in zip(split.valid.train_rows.tolist(),
                                                      vocab.item_ids(split.valid.targets))),
        )

    def write(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps(asdict(self)))
        return Path(path)

    @staticmethod
    def read(path: str | Path) -> "GateWindow":
        data = json.loads(Path(path).read_text())
        return GateWindow(
            tuple(data["users"]), tuple(int(n) for n in data["lengths"]), tuple(data["targets"]),
            {user: tuple(items) for user, items in data["sequences"].items()},
            tuple(tuple(s) for s in data.get("train", ())), data.get("kind", ""),
            {user: tuple(int(p) for p in positions) for user, positions in data.get("openings", {}).items()},
            tuple((int(row), str(item)) for row, item in data.get("validation", ())),
        )


class _Prefixes(Sequence):
    """Per target, the prefix of its user's entry in `by_user` its history covers: the first
    `length` items (or, `below`, the positions under `length`)."""

    def __init__(self, users: tuple[str, ...], lengths: tuple[int, ...], by_user: dict[str, tuple],
                 below: bool = False) -> None:
        self._users, self._lengths, self._by_user, self._below = users, lengths, by_user, below

    def __len__(self) -> int:
        return len(self._users)

    def __getitem__(self, row):  # type: ignore[override]
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        values, length = self._by_user[self._users[row]], self._lengths[row]
        if self._below:
            return tuple(p for p in values if p < length)
        return values[:length]


def reads_sessions(bundle_config: dict) -> bool:
    """Whether a bundle's model reads where sessions start (a SASRec with a repeat head), from
    its config.json alone (no weights loaded)."""
    return bool(bundle_config.get("model_config", {}).get("repeat_head_hidden"))


def newest_window(events: pd.DataFrame, items: pd.DataFrame | None, spec: SplitSpec,
                  sessions: bool = False) -> GateWindow:
    """The evaluation window matching how the candidate was trained (the spec its bundle records,
    `SplitSpec.from_dict`): for a temporal split every user's first item at or after the cutoff
    (and the first items of their later sessions, `SplitSpec.test_sessions`);
    for leave-one-out the test set (each user's newest item). sessions: also each history's
    session openings (when the candidate or the champion reads them: `reads_sessions`), so
    both are scored on the same window."""
    vocab = build_vocab(events, items)
    split = make_split(events, vocab, spec, sessions=sessions)
    if len(split.test) == 0:
        raise GateError(f"the evaluation window ({split.kind}) holds no users")
    return GateWindow.from_split(split, vocab)


# --- scoring a model on the window ----------------------------------------------------------
@dataclass(frozen=True)
class GateScores:
    """One model on one window: per-target NDCG@k (aligned with `users`, where a user has one
    target or several) and catalogue coverage."""

    name: str
    users: tuple[str, ...]
    ndcg: np.ndarray  # [U]
    coverage: float
    k: int = 10

    @property
    def mean_ndcg(self) -> float:
        return float(self.ndcg.mean()) if len(self.ndcg) else float("nan")

    def size(self) -> str:
        """"N users", or "N users, M targets" where users have several (`SplitSpec.test_sessions`)."""
        return size_label(self.users)


def score_model(model: Model, vocab: ItemVocab, exclude_seen: bool, window: GateWindow,
                k: int = 10, name: str | None = None) -> GateScores:
    """Rank every window target with the evaluator's `rank_targets` (full catalogue, the model's
    seen-items policy). A target outside the model's vocabulary cannot be ranked: it counts as a miss."""
    # Each user's sequence is indexed once; every target's history (and its openings) is a view
    # of a prefix of it: an item the model does not know is dropped, and its session still
    # opens at the next kept one (`keep_with_openings`, whose flags of a prefix are the
    # prefix of its flags).
    sessions = bool(window.openings)
    indexed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    for user, sequence in window.sequences.items():
        index = vocab.index(list(sequence))
        kept = index > 0
        flags = None
        if sessions:
            opens = np.zeros(len(index), dtype=bool)
            opens[list(window.openings.get(user, ()))] = True
            flags = keep_with_openings(index, opens, kept)[1]
        indexed[user] = (index[kept], np.concatenate(([0], np.cumsum(kept))), flags)
    histories, starts = [], []
    for user, length in zip(window.users, window.lengths):
        items, kept_before, flags = indexed[user]
        size = int(kept_before[length])
        histories.append(items[:size])
        if flags is not None:
            starts.append(flags[:size])
    targets = vocab.index(list(window.targets))
    known = targets > 0
    # Unknown targets get a stand-in (item 1) so every user still gets a list for coverage.
    eval_set = EvalSet(np.asarray(window.users, dtype=object), histories, np.where(known, targets, 1),
                       starts if sessions else None)
    ranks, lists = rank_targets(model, eval_set, exclude_seen, k)
    ranks = np.where(known, ranks, model.n_items)
    return GateScores(name or model.kind, window.users, M.ndcg_at_k(ranks, k),
                      M.catalog_coverage(lists, model.n_items), k)


def score_bundle(bundle_dir: str | Path, window: GateWindow, k: int = 10,
                 name: str | None = None) -> GateScores:
    """Load a bundle (sha256 checked) and score it on the window with its own seen-items policy."""
    bundle = load_bundle(bundle_dir)
    return score_model(bundle.model, bundle.vocab, bundle.exclude_seen, window, k,
                       name or bundle.config.get("kind"))


def baseline_scores(window: GateWindow, exclude_seen: bool, k: int = 10) -> dict[str, GateScores]:
    """MostPop and Markov-1 - and on repeat-purchase data (past items kept) BuyAgain, the
    time-decayed frequency and TIFU-KNN, the strongest simple models there - fit on the
    window's training sequences (settings chosen on their held-out newest items, or on the
    window's `validation` set, as training chooses them: `evaluation.tuning`) and scored on it."""
    if not window.train:
        raise GateError("the window carries no training sequences to fit the first-run baselines on")
    vocab = ItemVocab(tuple(sorted({i for s in window.train for i in s} |
                                   {i for s in window.sequences.values() for i in s} | set(window.targets))))
    train = [vocab.index(list(s)) for s in window.train]
    held_out = None
    if window.validation:
        rows = [row for row, _ in window.validation]
        held_out = EvalSet(np.asarray(rows, dtype=object), [train[row] for row in rows],
                           vocab.index([item for _, item in window.validation]))
    scores = {}
    for kind in baseline_kinds(exclude_seen, ("mostpop", "markov1")):
        model = fit_baseline(kind, vocab.n_items, train, exclude_seen=exclude_seen, k=k, held_out=held_out).model
        scores[kind] = score_model(model, vocab, exclude_seen, window, k)
    return scores


