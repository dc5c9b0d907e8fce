"""Splits as pure functions of per-user sequences: leave-one-out for benchmarks, a global
temporal cut for the production pipeline. Every split yields training sequences and two
evaluation sets (validation for early stopping, test for the reported figures).

A `SplitSpec` says which split to make (`make_split`); the `Split` made records the spec
resolved (a temporal cut's default cutoff filled in), which bundles keep so that evaluation
and the promotion gate reproduce exactly the split a model was trained on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.errors import DataSourceError
from shoprec.sequences import FlatSequences, ItemVocab, Sequences, session_starts

SplitKind = Literal["leave-one-out", "temporal"]
SPLIT_KINDS: tuple[str, ...] = ("leave-one-out", "temporal")
# What a temporal split validates on: each user's newest item before the cut, or the item that
# opens their newest session before the cut, that session held out of training (the test target,
# the first item after a cut between orders, opens a session).
ValidationTarget = Literal["newest", "opening"]
VALIDATION_TARGETS: tuple[str, ...] = ("newest", "opening")
# Without a given cutoff, a temporal split tests on the newest 10% of the events.
TEMPORAL_TEST_SHARE = 0.1
# Full-ranking evaluation costs users x items, and both grow with the log: past this many users
# an evaluation set (validation, test) is a fixed sample, so its cost grows with the catalogue
# alone (linear in events). 20,000 users put a 95% interval of NDCG@10 within about +-0.006.
DEFAULT_EVAL_USERS = 20_000


def _utc(stamp: Any) -> pd.Timestamp:
    """A timestamp in UTC (a naive one is taken to be UTC already)."""
    stamp = pd.Timestamp(stamp)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@dataclass(frozen=True)
class SplitSpec:
    """Which split to make.

    kind: "leave-one-out" (benchmarks) or "temporal" (the pipeline: a global time cut).
    cutoff: temporal only: the cut, a UTC timestamp (strings and naive times are taken as UTC);
    None = the time before which 90% of the events happened, resolved when the split is made
    (the `Split` then records the resolved spec). validation_users / seed: leave-one-out only:
    validate a fixed random sample (drawn with `seed`) of this many users and train on everyone
    else's second-last item too; None = validate every user with 3+ items (`leave_one_out`).
    eval_users: at most this many users in each evaluation set, a fixed sample chosen by a
    stable hash of the user id and `seed` (`cap_users`), so the gate and the evaluator rebuild
    the same set; None = every user. validation: temporal only (`ValidationTarget`): "newest"
    (each user's last item before the cut) or "opening" (the item opening the user's newest
    session before the cut; that session is left out of training; a user with one session
    validates on the newest item). test_sessions: temporal only: each user is tested on the first
    item after the cut and on the first item of each later session, up to this many targets (1 =
    the first item after the cut alone); the history of each is everything before it, the test
    period's earlier sessions included (as serving reads them from the feature store after
    `push_events`), with no retraining. Metrics are means over every target; their intervals
    resample users with all their targets (`metrics.bootstrap_interval`'s groups)."""

    kind: SplitKind = "leave-one-out"
    cutoff: pd.Timestamp | None = None
    validation_users: int | None = None
    seed: int = 0
    eval_users: int | None = DEFAULT_EVAL_USERS
    validation: ValidationTarget = "newest"
    test_sessions: int = 1

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise DataSourceError(f"unknown split {self.kind!r}: use 'leave-one-out' or 'temporal'")
        given = self.cutoff
        cutoff = None if given is None or (isinstance(given, str) and not given.strip()) else _utc(given)
        if cutoff is not None and self.kind != "temporal":
            raise DataSourceError(f"a cutoff ({given}) only applies to a temporal split, not {self.kind}")
        object.__setattr__(self, "cutoff", cutoff)  # '' (a pipeline parameter's "none") is None
        if self.validation_users is not None and self.kind != "leave-one-out":
            raise DataSourceError(f"validation_users only applies to a leave-one-out split, not {self.kind}")
        if self.validation not in VALIDATION_TARGETS:
            raise DataSourceError(f"unknown validation target {self.validation!r}: use one of {VALIDATION_TARGETS}")
        if self.validation != "newest" and self.kind != "temporal":
            raise DataSourceError(f"validation={self.validation!r} only applies to a temporal split, not {self.kind}")
        if not isinstance(self.test_sessions, int) or self.test_sessions < 1:
            raise DataSourceError(f"test_sessions must be a positive number of targets per user, not {self.test_sessions!r}")
        if self.test_sessions > 1 and self.kind != "temporal":
            raise DataSourceError(f"test_sessions={self.test_sessions} only applies to a temporal split, not {self.kind}")
        if self.eval_users is not None and self.eval_users < 1:
            raise DataSourceError(f"eval_users must be a positive number of users or None, not {self.eval_users}")

    @property
    def label(self) -> str:
        """The short name reports and the gate window show: "leave-one-out", "temporal@<iso cutoff>"
        (the form bundles recorded before the spec), or "temporal" while the cutoff is unresolved."""
        if self.kind == "temporal" and self.cutoff is not None:
            return f"temporal@{self.cutoff.isoformat()}"
        return self.kind

    def describe(self) -> str:
        """One line for reports and model cards."""
        if self.kind == "temporal":
            cut = self.cutoff.isoformat() if self.cutoff is not None else \
                f"the {1 - TEMPORAL_TEST_SHARE:.0%} time quantile of the events"
            opening = "; validated on each user's newest session opening" if self.validation == "opening" else ""
            tested = "" if self.test_sessions == 1 else \
                f"; tested on the first item of each session after the cut, at most {self.test_sessions} per user"
            return f"temporal, cut at {cut}" + opening + tested + self._capped()
        if self.validation_users is None:
            return "leave-one-out (every user with 3+ items validated)" + self._capped()
        return f"leave-one-out ({self.validation_users} sampled users validated, seed {self.seed})" + \
            self._capped()

    def _capped(self) -> str:
        return "" if self.eval_users is None else \
            f"; each evaluation set at most {self.eval_users:,} users (a fixed sample beyond that)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"kind", "cutoff" (ISO 8601 or None), "validation_users", "seed", "eval_users",
        "validation", "test_sessions"}."""
        return {"kind": self.kind, "cutoff": None if self.cutoff is None else self.cutoff.isoformat(),
                "validation_users": self.validation_users, "seed": self.seed, "eval_users": self.eval_users,
                "validation": self.validation, "test_sessions": self.test_sessions}

    @staticmethod
    def from_dict(value: Mapping[str, Any] | str | None) -> "SplitSpec":
        """The inverse of `to_dict`; also the string forms bundles recorded before the spec
        ("leave-one-out", "temporal@<iso cutoff>") and nothing recorded (None or '': leave-one-out)."""
        if value is None or isinstance(value, str):
            kind, _, cutoff = (value or "leave-one-out").partition("@")
            return SplitSpec(kind, cutoff or None)  # type: ignore[arg-type]
        # A spec recorded before the cap gets the default: below it (every set until then) it
        # changes nothing.
        return SplitSpec(value.get("kind", "leave-one-out"), value.get("cutoff"),
                         value.get("validation_users"), int(value.get("seed", 0)),
                         value.get("eval_users", DEFAULT_EVAL_USERS), value.get("validation", "newest"),
                         int(value.get("test_sessions", 1)))


@dataclass
class EvalSet:
    """One target per user: `histories[i]` is what the model sees, `targets[i]` what comes next."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray
    # Where asked for (`make_split(..., sessions=True)`): per history, True where an event opens
    # a session (`sequences.session_starts`), for models that read sessions (the repeat head).
    starts: list[np.ndarray] | None = None
    # A temporal split's validation set: per user, the row of `Split.train` their history is
    # (the target is what followed it), so the gate's window can rebuild the set from its
    # training sequences.
    train_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def n_users(self) -> int:
        """How many distinct users (fewer than targets where users have several: `SplitSpec.test_sessions`)."""
        return len(pd.unique(np.asarray(self.users, dtype=object)))

    def describe_size(self) -> str:
        """"N users", or "N users, M targets" where users have several."""
        return size_label(self.users)


def size_label(users: Sequence[Any]) -> str:
    """"N users" for one target per user, else "N users, M targets" (`users`: each target's user)."""
    distinct = len(pd.unique(np.asarray(users, dtype=object)))
    return f"{distinct} users" if distinct == len(users) else f"{distinct} users, {len(users)} targets"


@dataclass
class Split:
    """train: sequences to fit on (no validation or test target in them);
    valid: early stopping; test: the reported figures (history includes the valid item)."""

    train: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    spec: SplitSpec  # the split as made: a temporal cutoff is always resolved here
    train_starts: list[np.ndarray] | None = None  # session openings of `train`, where asked for

    @property
    def kind(self) -> str:
        """The spec's label ("leave-one-out" or "temporal@<iso cutoff>"), as reports and the
        gate window show it."""
        return self.spec.label


def _eval_set(users: list, histories: list[np.ndarray], targets: list[int],
              starts: list[np.ndarray] | None = None, train_rows: list[int] | None = None) -> EvalSet:
    return EvalSet(np.array(users, dtype=object), histories, np.array(targets, dtype=np.int64), starts,
                   None if train_rows is None else np.asarray(train_rows, dtype=np.int64))


def leave_one_out(sequences: Sequences | FlatSequences, validation_users: int | None = None, seed: int = 0) -> Split:
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
    return Split(train, _eval_set(vu, vh, vt), _eval_set(tu, th, tt),
                 SplitSpec("leave-one-out", validation_users=validation_users, seed=seed))


def temporal_split(events: pd.DataFrame, vocab: ItemVocab, cutoff: pd.Timestamp, sessions: bool = False,
                   validation: ValidationTarget = "newest", test_sessions: int = 1) -> Split:
    """A global time cut: the test target is each user's first item at or after `cutoff`
    (history: everything before it), and with `test_sessions` > 1 also the first item of each
    later session, up to that many targets per user (history: everything before that item, the
    test period's earlier events included); validation is each user's last item before the cut
    (`validation="opening"`: the first item of their newest session before the cut, where they
    have two or more); training sequences are everything before the validation item.

    The events are sorted once into flat sequences (`FlatSequences`): each user's events before
    the cut are the head of their sequence, those at or after it the tail, so every history,
    training sequence and target is a view of one int32 array (no frame copies per side).
    With `sessions`, every history and training sequence also gets its session openings
    (`EvalSet.starts`, `Split.train_starts`: views of one bool array)."""
    if S.TIMESTAMP not in events:
        raise DataSourceError(f"a temporal split needs a '{S.TIMESTAMP}' column")
    spec = SplitSpec("temporal", cutoff, validation=validation, test_sessions=test_sessions)
    stamp = spec.cutoff
    when = events[S.TIMESTAMP]
    early, late = (when < stamp).to_numpy(dtype=bool), (when >= stamp).to_numpy(dtype=bool)
    seqs = FlatSequences.from_events(events, vocab, with_rows=True)
    assert seqs.rows is not None
    sided = early[seqs.rows] | late[seqs.rows]
    if not sided.all():  # times on neither side of the cut (NaT) are in neither set
        seqs = seqs.select(sided)
        assert seqs.rows is not None
    before = early[seqs.rows]
    counted = np.zeros(len(before) + 1, dtype=np.int64)
    np.cumsum(before, out=counted[1:])
    heads = counted[seqs.offsets[1:]] - counted[seqs.offsets[:-1]]  # events before the cut, per user
    # Sorted by time, a user's events before the cut come first: "before" only ever starts again
    # (after an event at or after the cut) where a new user starts.
    rises = np.flatnonzero(before[1:] & ~before[:-1]) + 1
    if not np.isin(rises, seqs.offsets).all():
        raise DataSourceError(f"the '{S.TIMESTAMP}' column does not sort as it compares with the cut {stamp}")
    if not heads.any():
        raise DataSourceError(f"no events before the temporal cutoff {stamp}")
    flat = seqs.flat
    by_opening = validation == "opening"
    opens = session_starts(events, seqs.rows, seqs.offsets) if sessions or by_opening or test_sessions > 1 \
        else np.zeros(0, dtype=bool)
    train: list[np.ndarray] = []
    vu, vh, vt, vr, tu, th, tt = [], [], [], [], [], [], []
    train_s, vs, ts = [], [], []  # the same slices of `opens`, with sessions
    for user, start, stop, head in zip(seqs.users, seqs.offsets[:-1].tolist(), seqs.offsets[1:].tolist(),
                                       heads.tolist()):
        cut = start + head
        seq = flat[start:cut]
        if head >= 2:
            at = head - 1  # the validation target's position in the user's sequence
            if by_opening:
                later = np.flatnonzero(opens[start + 1:cut])  # session openings after the first item
                at = int(later[-1]) + 1 if len(later) else at
            train.append(seq[:at])
            vu.append(user), vh.append(seq[:at]), vt.append(int(seq[at])), vr.append(len(train) - 1)
            if sessions:
                train_s.append(opens[start:start + at]), vs.append(opens[start:start + at])
        elif head == 1:
            train.append(seq)
            if sessions:
                train_s.append(opens[start:cut])
        if cut < stop:
            targets = [cut]
            if test_sessions > 1:  # the openings of the later sessions of the test period
                targets += (cut + 1 + np.flatnonzero(opens[cut + 1:stop])[: test_sessions - 1]).tolist()
            for at in targets:
                tu.append(user), th.append(flat[start:at]), tt.append(int(flat[at]))
                if sessions:
                    ts.append(opens[start:at])
    return Split(train, _eval_set(vu, vh, vt, vs if sessions else None, vr),
                 _eval_set(tu, th, tt, ts if sessions else None), spec, train_s if sessions else None)


def temporal_cutoff(events: pd.DataFrame, test_share: float = TEMPORAL_TEST_SHARE) -> pd.Timestamp:
    """The default temporal cut: the time before which 1 - `test_share` of the events happened."""
    return pd.to_datetime(events[S.TIMESTAMP], utc=True).quantile(1.0 - test_share)


def make_split(events: pd.DataFrame, vocab: ItemVocab, spec: SplitSpec, sessions: bool = False) -> Split:
    """The split `spec` asks for; the `Split` records the spec resolved (a temporal split
    without a cutoff gets `temporal_cutoff` of these events). Its evaluation sets hold at most
    `spec.eval_users` users each (`cap_users`). sessions: also each history's session openings
    (temporal splits only: leave-one-out serves data sets without repeat purchases)."""
    if spec.kind == "leave-one-out":
        if sessions:
            raise DataSourceError("session openings are built for the temporal split, not leave-one-out")
        split = leave_one_out(FlatSequences.from_events(events, vocab), spec.validation_users, spec.seed)
        split = replace(split, spec=spec)
    else:
        if S.TIMESTAMP not in events:
            raise DataSourceError(f"a temporal split needs a '{S.TIMESTAMP}' column")
        cutoff = spec.cutoff if spec.cutoff is not None else temporal_cutoff(events)
        split = replace(temporal_split(events, vocab, cutoff, sessions, spec.validation, spec.test_sessions),
                        spec=replace(spec, cutoff=cutoff))
    return replace(split, valid=cap_users(split.valid, spec.eval_users, spec.seed),
                   test=cap_users(split.test, spec.eval_users, spec.seed))


def cap_users(eval_set: EvalSet, max_users: int | None, seed: int = 0) -> EvalSet:
    """At most `max_users` of the set's users, in their order: those with the smallest stable
    hash of (user id, seed). The hash, not a draw, so the same user is in or out whatever the
    set's order or size, and every process (evaluator, gate, a later run) picks the same. A user
    with several targets (`SplitSpec.test_sessions`) is kept or left out with all of them."""
    if max_users is None or len(eval_set) <= max_users:
        return eval_set
    ids = np.asarray([str(user) for user in eval_set.users], dtype=object)
    distinct = pd.unique(ids)
    if len(distinct) <= max_users:
        return eval_set
    keys = pd.util.hash_array(distinct, hash_key=f"shoprec{seed % 10**9:09d}", categorize=False)
    chosen = distinct[np.argpartition(keys, max_users - 1)[:max_users]]
    kept = np.flatnonzero(np.isin(ids, chosen))
    return EvalSet(eval_set.users[kept], [eval_set.histories[i] for i in kept], eval_set.targets[kept],
                   None if eval_set.starts is None else [eval_set.starts[i] for i in kept],
                   None if eval_set.train_rows is None else eval_set.train_rows[kept])


def events_for_training(data: EventData, training_set: pd.DataFrame | None = None) -> pd.DataFrame:
    """The events to learn from: the point-in-time training set from Feast when given (it
    must carry user_id, item_id and timestamp, like the canonical events), else the events."""
    frame = data.events if training_set is None else training_set
    missing = [c for c in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP) if c not in frame]
    if missing:
        raise DataSourceError(f"training frame lacks column(s) {missing}; has {list(frame.columns)}")
    return frame
