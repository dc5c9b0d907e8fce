"""Splits as pure functions of per-user sequences: leave-one-out for benchmarks, a global
temporal cut for the production pipeline. Every split yields training sequences and two
evaluation sets (validation for early stopping, test for the reported figures)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.errors import DataSourceError
from shoprec.sequences import ItemVocab, Sequences, build_sequences


@dataclass
class EvalSet:
    """One target per user: `histories[i]` is what the model sees, `targets[i]` what comes next."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Split:
    """train: sequences to fit on (no validation or test target in them);
    valid: early stopping; test: the reported figures (history includes the valid item)."""

    train: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    kind: str


def _eval_set(users: list, histories: list[np.ndarray], targets: list[int]) -> EvalSet:
    return EvalSet(np.array(users, dtype=object), histories, np.array(targets, dtype=np.int64))


def leave_one_out(sequences: Sequences, validation_users: int | None = None, seed: int = 0) -> Split:
    """Last item = test target (history: all before it); second-last = validation target
    (history: all before it).

    validation_users=None: every user with 3+ items is validated, and every training sequence
    is all but the last two items. validation_users=N: only a fixed random sample of N users
    is validated (their training sequence is all but the last two); everybody else trains on
    all but the last item, so the model for the test has seen every item except the test
    target, as in the standard protocol of SASRec+ / gSASRec on ML-1M (the data's README).
    No test target is ever trained on either way.

    Users with 2 items are tested only (trained on their first item); with 1, trained only."""
    eligible = [i for i, seq in enumerate(sequences.items) if len(seq) >= 3]
    if validation_users is None or validation_users >= len(eligible):
        validated = set(eligible)
    else:
        validated = set(np.random.default_rng(seed).choice(eligible, validation_users, replace=False).tolist())
    train: list[np.ndarray] = []
    vu, vh, vt, tu, th, tt = [], [], [], [], [], []
    for row, (user, seq) in enumerate(zip(sequences.users, sequences.items)):
        n = len(seq)
        if row in validated:
            train.append(seq[:-2])
            vu.append(user), vh.append(seq[:-2]), vt.append(int(seq[-2]))
        elif n >= 3:
            train.append(seq[:-1])
        elif n >= 1:
            train.append(seq[:1])
        if n >= 2:
            tu.append(user), th.append(seq[:-1]), tt.append(int(seq[-1]))
    return Split(train, _eval_set(vu, vh, vt), _eval_set(tu, th, tt), "leave-one-out")


def temporal_split(events: pd.DataFrame, vocab: ItemVocab, cutoff: pd.Timestamp) -> Split:
    """A global time cut: the test target is each user's first item at or after `cutoff`
    (history: everything before it); validation is each user's last item before the cut;
    training sequences are everything before the cut minus that validation item."""
    if S.TIMESTAMP not in events:
        raise DataSourceError(f"a temporal split needs a '{S.TIMESTAMP}' column")
    stamp = pd.Timestamp(cutoff)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    before = build_sequences(events[events[S.TIMESTAMP] < stamp], vocab)
    after = build_sequences(events[events[S.TIMESTAMP] >= stamp], vocab)
    if len(before) == 0:
        raise DataSourceError(f"no events before the temporal cutoff {stamp}")
    history_of = dict(zip(before.users, before.items))
    train: list[np.ndarray] = []
    vu, vh, vt = [], [], []
    for user, seq in zip(before.users, before.items):
        train.append(seq[:-1] if len(seq) >= 2 else seq)
        if len(seq) >= 2:
            vu.append(user), vh.append(seq[:-1]), vt.append(int(seq[-1]))
    tu, th, tt = [], [], []
    for user, seq in zip(after.users, after.items):
        tu.append(user), th.append(history_of.get(user, np.zeros(0, dtype=np.int64)))
        tt.append(int(seq[0]))
    return Split(train, _eval_set(vu, vh, vt), _eval_set(tu, th, tt), f"temporal@{stamp.isoformat()}")
