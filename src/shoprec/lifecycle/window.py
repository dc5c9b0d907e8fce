"""The gate's evaluation window and how a model scores on it.

Models are scored in item-id space (`GateWindow`), not index space, so a candidate and a champion
trained on different catalogues are still compared on exactly the same users and targets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shoprec.errors import GateError
from shoprec.evaluation import metrics as M
from shoprec.evaluation.evaluate import rank_targets
from shoprec.evaluation.splits import EvalSet, Split, SplitSpec, make_split
from shoprec.evaluation.tuning import baseline_kinds, baseline_validation, fit_baseline
from shoprec.models.base import Recommender as Model
from shoprec.models.bundle import load_bundle
from shoprec.sequences import ItemVocab, build_vocab, keep_with_openings


# --- the evaluation window ---------------------------------------------------------------
@dataclass(frozen=True)
class GateWindow:
    """The newest evaluation window, in item ids: user i saw `histories[i]` (oldest first), then
    `targets[i]`. `train` holds the sequences before the window (to fit first-run baselines)."""

    users: tuple[str, ...]
    histories: tuple[tuple[str, ...], ...]
    targets: tuple[str, ...]
    train: tuple[tuple[str, ...], ...] = ()
    kind: str = ""
    # Temporal windows: per history, the positions of the events that open a session (for a
    # model with a repeat head, `needs_sessions`); () where the split has no sessions.
    session_openings: tuple[tuple[int, ...], ...] = ()
    # A split validated on session openings: its validation set as (row of `train`, the item
    # that followed it), so the first-run baselines choose their settings on the same targets
    # as training did (`evaluation.tuning.baseline_validation`); () otherwise.
    validation: tuple[tuple[int, str], ...] = ()

    def __len__(self) -> int:
        return len(self.targets)

    def history_lengths(self) -> np.ndarray:
        return np.array([len(h) for h in self.histories], dtype=np.int64)

    def short_history(self, max_items: int | None = None) -> tuple[np.ndarray, int]:
        """(bool [U] mask, threshold): users with at most `max_items` history items (default:
        the shortest quartile of this window, as the evaluator's segment)."""
        lengths = self.history_lengths()
        threshold = max_items if max_items is not None else (
            int(np.quantile(lengths, 0.25)) if len(lengths) else 0)
        return lengths <= threshold, threshold

    @staticmethod
    def from_split(split: Split, vocab: ItemVocab) -> "GateWindow":
        """The split's test set (and its training sequences) in item ids."""
        test = split.test
        return GateWindow(
            users=tuple(str(u) for u in test.users),
            histories=tuple(tuple(vocab.item_ids(h)) for h in test.histories),
            targets=tuple(vocab.item_ids(test.targets)),
            train=tuple(tuple(vocab.item_ids(s)) for s in split.train),
            kind=split.kind,
            session_openings=() if test.starts is None else tuple(
                tuple(np.flatnonzero(opens).tolist()) for opens in test.starts),
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
            tuple(data["users"]), tuple(tuple(h) for h in data["histories"]),
            tuple(data["targets"]), tuple(tuple(s) for s in data.get("train", ())), data.get("kind", ""),
            tuple(tuple(o) for o in data.get("session_openings", ())),
            tuple((int(row), str(item)) for row, item in data.get("validation", ())),
        )


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
        users = len(set(self.users))
        return f"{users} users" if users == len(self.users) else f"{users} users, {len(self.users)} targets"


def score_model(model: Model, vocab: ItemVocab, exclude_seen: bool, window: GateWindow,
                k: int = 10, name: str | None = None) -> GateScores:
    """Rank every window target with the evaluator's `rank_targets` (full catalogue, the model's
    seen-items policy). A target outside the model's vocabulary cannot be ranked: it counts as a miss."""
    histories, starts = [], []
    for row, history in enumerate(window.histories):
        index = vocab.index(list(history))
        kept = index > 0
        histories.append(index[kept])
        if window.session_openings:
            # An item the model does not know is dropped; its session still opens at the next kept one.
            flags = np.zeros(len(index), dtype=bool)
            flags[list(window.session_openings[row])] = True
            starts.append(keep_with_openings(index, flags, kept)[1])
    targets = vocab.index(list(window.targets))
    known = targets > 0
    # Unknown targets get a stand-in (item 1) so every user still gets a list for coverage.
    eval_set = EvalSet(np.asarray(window.users, dtype=object), histories, np.where(known, targets, 1),
                       starts if window.session_openings else None)
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
                                   {i for h in window.histories for i in h} | set(window.targets))))
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


