"""Flat sequences (one int32 array cut by int64 offsets): they hold exactly the histories
`build_sequences` builds (from a frame, from Parquet through DuckDB, saved and loaded
memory-mapped), and the splits built on them are the splits built from filtered frames before
them, down to the baselines' test figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.errors import DataSourceError
from shoprec.evaluation.splits import EvalSet, Split, SplitSpec, leave_one_out, make_split, temporal_cutoff, temporal_split
from shoprec.sequences import FlatSequences, ItemVocab, build_sequences, build_vocab
from shoprec.training.batches import training_windows
from shoprec.training.fit import FitConfig, fit_and_evaluate
from shoprec.training.loop import TrainConfig


def day(n: float) -> pd.Timestamp:
    return pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=n)


def hand_events() -> pd.DataFrame:
    """Ties in time (kept in file order), items outside the vocabulary ("zz"), users with one
    event, a user with only unknown items, ids that sort differently as text and as numbers,
    a non-ASCII id, a missing time (sorted last), rows not in time order."""
    rows = [
        ("b", "x", day(3)), ("a", "y", day(2)), ("a", "x", day(2)), ("a", "zz", day(2)),
        ("10", "w", day(1)), ("9", "w", day(5)), ("b", "w", None), ("a", "z", day(1)),
        ("solo", "y", day(4)), ("ghost", "zz", day(1)), ("é", "x", day(6)), ("é", "y", day(6)),
        ("b", "y", day(3)), ("a", "w", day(7)), ("10", "x", day(0.5)), ("9", "zz", day(9)),
    ]
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP])


HAND_VOCAB = ItemVocab(("w", "x", "y", "z"))  # "zz" is not in it


def assert_same_sequences(got: FlatSequences, want) -> None:
    assert got.users.tolist() == list(want.users)
    assert len(got) == len(want) == len(got.items)
    assert [s.tolist() for s in got.items] == [s.tolist() for s in want.items]
    assert got.flat.dtype == np.int32 and got.offsets.dtype == np.int64


def assert_same_split(got: Split, want: Split) -> None:
    assert [s.tolist() for s in got.train] == [s.tolist() for s in want.train]
    for mine, theirs in ((got.valid, want.valid), (got.test, want.test)):
        assert mine.users.tolist() == theirs.users.tolist()
        assert mine.targets.tolist() == theirs.targets.tolist()
        assert [h.tolist() for h in mine.histories] == [h.tolist() for h in theirs.histories]
    assert got.spec == want.spec


def frame_temporal_split(events: pd.DataFrame, vocab: ItemVocab, cutoff: pd.Timestamp) -> Split:
    """The temporal split as it was built before flat sequences: two filtered frames, each
    sorted into sequences; the reference the flat split must equal."""
    before = build_sequences(events[events[S.TIMESTAMP] < cutoff], vocab)
    after = build_sequences(events[events[S.TIMESTAMP] >= cutoff], vocab)
    history_of = dict(zip(before.users, before.items))
    train, vu, vh, vt, tu, th, tt = [], [], [], [], [], [], []
    for user, seq in zip(before.users, before.items):
        train.append(seq[:-1] if len(seq) >= 2 else seq)
        if len(seq) >= 2:
            vu.append(user), vh.append(seq[:-1]), vt.append(int(seq[-1]))
    for user, seq in zip(after.users, after.items):
        tu.append(user), th.append(history_of.get(user, np.zeros(0, dtype=np.int64))), tt.append(int(seq[0]))
    sets = [EvalSet(np.array(u, dtype=object), h, np.array(t, dtype=np.int64)) for u, h, t in ((vu, vh, vt), (tu, th, tt))]
    return Split(train, sets[0], sets[1], SplitSpec("temporal", cutoff))


@pytest.fixture(scope="module")
def ml100k():
    return load_movielens_100k()


def test_flat_sequences_hold_what_build_sequences_builds_on_a_hand_made_frame(tmp_path):
    events = hand_events()
    want = build_sequences(events, HAND_VOCAB)
    got = FlatSequences.from_events(events, HAND_VOCAB)
    assert_same_sequences(got, want)
    # By hand: users as text in order; a's day-2 tie keeps file order (y before x, zz dropped);
    # b's missing time comes last; "ghost" (only unknown items) has no sequence.
    w, x, y, z = 1, 2, 3, 4
    assert got.users.tolist() == ["10", "9", "a", "b", "solo", "é"]
    assert [s.tolist() for s in got.items] == [[x, w], [w], [z, y, x, w], [x, y, w], [y], [x, y]]
    assert got.items[-1].tolist() == [x, y] and [s.tolist() for s in got.items[1:3]] == [[w], [z, y, x, w]]
    assert np.shares_memory(got.items[2], got.flat)  # a view, not a copy
    with pytest.raises(IndexError):
        got.items[6]

    # Times of other types sort as pandas sorts them; no time column keeps the file order.
    for other in (events.assign(**{S.TIMESTAMP: events[S.TIMESTAMP].astype(str)}),
                  events.assign(**{S.TIMESTAMP: events[S.TIMESTAMP].dt.day.fillna(99).astype(int)}),
                  events.drop(columns=[S.TIMESTAMP])):
        assert_same_sequences(FlatSequences.from_events(other, HAND_VOCAB), build_sequences(other, HAND_VOCAB))

    path = tmp_path / "events.parquet"
    events.to_parquet(path, index=False)
    assert_same_sequences(FlatSequences.from_parquet(path, HAND_VOCAB, tmp_path / "from-parquet"), want)

    loaded = FlatSequences.load(got.save(tmp_path / "saved"))
    assert_same_sequences(loaded, want)
    assert isinstance(loaded.flat, np.memmap) and not loaded.flat.flags.writeable
    assert [u for u in loaded.users] == got.users.tolist()
    assert training_windows(loaded.items, 2).tolist() == training_windows(want.items, 2).tolist()


def test_flat_sequences_of_nothing_and_missing_files(tmp_path):
    nobody = FlatSequences.from_events(hand_events().head(0), HAND_VOCAB)
    assert len(nobody) == 0 and list(nobody.items) == [] and nobody.offsets.tolist() == [0]
    assert len(FlatSequences.load(nobody.save(tmp_path / "empty"))) == 0
    with pytest.raises(DataSourceError, match="no flat sequences"):
        FlatSequences.load(tmp_path / "nowhere")
    with pytest.raises(DataSourceError, match="lacks"):
        FlatSequences.from_events(hand_events().drop(columns=[S.ITEM_ID]), HAND_VOCAB)


def test_flat_sequences_hold_what_build_sequences_builds_on_ml_100k(ml100k, tmp_path):
    events = ml100k.events
    vocab = build_vocab(events.iloc[::2])  # some items unknown
    want = build_sequences(events, vocab)
    assert_same_sequences(FlatSequences.from_events(events, vocab), want)
    shuffled = events.sample(frac=1, random_state=1)  # other ties in time: another file order
    assert_same_sequences(FlatSequences.from_events(shuffled, vocab), build_sequences(shuffled, vocab))
    path = tmp_path / "events.parquet"
    events.to_parquet(path, index=False)
    flat = FlatSequences.from_parquet(path, vocab, tmp_path / "flat", batch_rows=7_000)  # users span batches
    assert_same_sequences(flat, want)
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["items.npy", "offsets.npy", "users.npy"]


def test_splits_on_flat_sequences_equal_the_splits_built_from_frames(ml100k):
    events = ml100k.events
    vocab = build_vocab(events.iloc[::2])
    for share in (0.1, 0.5):
        cutoff = temporal_cutoff(events, share)
        assert_same_split(temporal_split(events, vocab, cutoff), frame_temporal_split(events, vocab, cutoff))
    cutoff = temporal_cutoff(events)
    made = make_split(events, vocab, SplitSpec("temporal"))
    assert_same_split(made, frame_temporal_split(events, vocab, cutoff))
    for spec in (SplitSpec(), SplitSpec(validation_users=50, seed=2)):
        want = leave_one_out(build_sequences(events, vocab), spec.validation_users, spec.seed)
        assert_same_split(make_split(events, vocab, spec), want)

    hand = hand_events()  # ties at the cut, a missing time (on neither side), unknown items
    for cut in (day(0.75), day(2), day(3), day(10)):
        assert_same_split(temporal_split(hand, HAND_VOCAB, cut), frame_temporal_split(hand, HAND_VOCAB, cut))
    with pytest.raises(DataSourceError, match="no events before"):
        temporal_split(hand, HAND_VOCAB, day(0.5))  # "10"'s first event is at, not before, the cut


# Test figures (HR@10, NDCG@10, MRR@10) of every baseline as the frame-built splits gave them
# before flat sequences (computed then with this same configuration): they must not move.
BEFORE = {
    ("planted", "temporal"): (15, {
        "mostpop": (0.3333333333333333, 0.1964263086904791, 0.15277777777777776),
        "markov1": (0.4, 0.26309297535714576, 0.21944444444444444),
        "itemknn": (0.4, 0.26309297535714576, 0.21944444444444444),
        "buyagain": (0.3333333333333333, 0.1964263086904791, 0.15277777777777776)}),
    ("planted", "leave-one-out"): (150, {
        "mostpop": (0.24, 0.15373251540373897, 0.12764814814814812),
        "markov1": (1.0, 1.0, 1.0),
        "itemknn": (1.0, 0.7856230035476345, 0.71),
        "buyagain": (0.24, 0.15373251540373897, 0.12764814814814812)}),
    ("ml-100k-80", "temporal"): (18, {
        "mostpop": (0.2777777777777778, 0.18437847535944338, 0.15617283950617286),
        "markov1": (0.16666666666666666, 0.14616276408730322, 0.1388888888888889),
        "itemknn": (0.16666666666666666, 0.14616276408730322, 0.1388888888888889),
        "buyagain": (0.2777777777777778, 0.18437847535944338, 0.15617283950617286)}),
    ("ml-100k-80", "leave-one-out"): (80, {
        "mostpop": (0.075, 0.034671650690271415, 0.02309027777777778),
        "markov1": (0.05, 0.026636621919643222, 0.019791666666666666),
        # ItemKNN keeps ties at its k-th neighbour by the lower item index since its sparse fit
        # (numpy's argpartition had picked among them arbitrarily): 0.0875 / 0.0544 / 0.0443 before.
        "itemknn": (0.075, 0.05063655416826004, 0.04291666666666667),
        "buyagain": (0.075, 0.034671650690271415, 0.02309027777777778)}),
}


@pytest.mark.parametrize("name, kind", sorted(BEFORE))
def test_fit_and_evaluate_gives_the_baselines_the_same_test_figures_as_before(name, kind, planted, ml100k):
    data = planted if name == "planted" else limit_to_users(ml100k, 80)
    spec = SplitSpec("temporal") if kind == "temporal" else SplitSpec(validation_users=20, seed=1)
    config = FitConfig(model={"hidden": 16, "max_len": 20, "blocks": 1, "dropout": 0.1},
                       train=TrainConfig(max_epochs=1, batch_size=64, learning_rate=5e-3, progress=False),
                       split=spec, content=False, baselines=("mostpop", "markov1", "itemknn", "buyagain"),
                       bootstrap=10)
    outcome = fit_and_evaluate(data, config)
    users, figures = BEFORE[(name, kind)]
    assert len(outcome.split.test) == users
    for model, expected in figures.items():
        got = outcome.results[model].metrics
        assert (got["HR@10"], got["NDCG@10"], got["MRR@10"]) == pytest.approx(expected, abs=1e-12), model
