"""The learned repeat head: sessions from the log, its features, its training, its mixture."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from shoprec import schema as S
from shoprec.evaluation import metrics as M
from shoprec.models.baselines import DecayedFrequency
from shoprec.models.repeat_head import (FEATURE_NAMES, fit_repeat_head, mixture_scores, repeat_features,
                                        session_examples)
from shoprec.sequences import FlatSequences, ItemVocab, keep_with_openings, session_starts


def _events(rows: list[tuple[str, str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.SESSION_ID]).assign(
        **{S.TIMESTAMP: lambda f: pd.to_datetime(f[S.TIMESTAMP], utc=True)})


def _starts(events: pd.DataFrame) -> tuple[FlatSequences, np.ndarray]:
    vocab = ItemVocab(tuple(sorted(events[S.ITEM_ID].unique())))
    seqs = FlatSequences.from_events(events, vocab, with_rows=True)
    assert seqs.rows is not None
    return seqs, session_starts(events, seqs.rows, seqs.offsets)


def test_dropping_items_moves_a_sessions_opening_to_its_next_kept_item() -> None:
    items = np.array([10, 11, 12, 13, 14, 15, 16])
    opens = np.array([False, True, False, True, True, False, False])  # the span starts mid-session
    keep = np.array([True, False, True, False, True, True, False])
    kept, opened = keep_with_openings(items, opens, keep)
    # 11 opened a session and is dropped: 12 opens it; 13's session has no kept item: no mark.
    assert kept.tolist() == [10, 12, 14, 15] and opened.tolist() == [False, True, True, False]
    assert keep_with_openings(items, opens, np.ones(7, dtype=bool))[1].tolist() == opens.tolist()
    with pytest.raises(ValueError, match="must align"):
        keep_with_openings(items, opens[:3], keep)


def test_sessions_follow_session_ids_else_a_gap_in_time() -> None:
    events = _events([
        ("u1", "a", "2024-01-01 10:00", "o1"), ("u1", "b", "2024-01-01 10:01", "o1"),
        ("u1", "c", "2024-01-01 10:02", "o2"),  # a new id one minute later: a new session
        ("u1", "a", "2024-01-01 12:00", "o2"),  # the same id two hours later: the same session
        ("u1", "b", "2024-01-01 12:01", None),  # no id: the gap decides (1 minute: same session)
        ("u1", "c", "2024-01-01 13:00", None),  # no id, 59 minutes: a new session
        ("u2", "a", "2024-01-01 10:05", "o3"),  # every user's first event opens one
    ])
    seqs, starts = _starts(events)
    assert list(seqs.users) == ["u1", "u2"]
    assert starts.tolist() == [True, False, True, False, False, True, True]

    no_ids = events.drop(columns=[S.SESSION_ID])
    _, by_time = _starts(no_ids)
    assert by_time.tolist() == [True, False, False, True, False, True, True]
    # Times held in milliseconds gap the same: 30 minutes are 30 minutes in any unit.
    in_ms = no_ids.assign(**{S.TIMESTAMP: no_ids[S.TIMESTAMP].dt.as_unit("ms")})
    assert _starts(in_ms)[1].tolist() == by_time.tolist()


def test_features_read_the_history_by_session() -> None:
    # Sessions [1, 2], [1, 3], [1]: item 1 opens all three, 2 was bought two sessions ago, 3 one ago.
    candidates, features = repeat_features(np.array([1, 2, 1, 3, 1]), np.array([1, 0, 1, 0, 1], dtype=bool))
    assert candidates.tolist() == [1, 2, 3]
    column = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    np.testing.assert_allclose(column["log1p_count_item_decay_1"], np.log1p([3, 1, 1]), rtol=1e-6)
    np.testing.assert_allclose(column["log1p_count_item_decay_0.9"],
                               np.log1p([1 + 0.81 + 0.6561, 0.9 ** 3, 0.9]), rtol=1e-6)
    np.testing.assert_allclose(column["log1p_opened_session_decay_1"], np.log1p([3, 0, 0]), rtol=1e-6)
    np.testing.assert_allclose(column["log1p_opened_session_decay_0.7"], np.log1p([1 + 0.7 + 0.49, 0, 0]), rtol=1e-6)
    np.testing.assert_allclose(column["share_of_sessions"], [1, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(column["log1p_sessions_since_last"], np.log1p([0, 2, 1]), rtol=1e-6)
    # Item 1: in 3 sessions, one session apart on average, bought in the newest: log(1 / 2).
    np.testing.assert_allclose(column["log_due"], [math.log(0.5), 0, 0], rtol=1e-6)
    assert column["bought_in_two_sessions"].tolist() == [1, 0, 0]
    assert column["in_last_session"].tolist() == [1, 0, 0]
    np.testing.assert_allclose(column["log_sessions"], np.log(3), rtol=1e-6)
    empty_candidates, empty = repeat_features(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    assert len(empty_candidates) == 0 and empty.shape == (0, len(FEATURE_NAMES))


def test_examples_hold_out_each_users_newest_session_and_skip_new_items() -> None:
    # Sessions [1, 2], [2, 3], [1], [4]: openings at 2 (item 2, seen), 4 (item 1, seen), 5 (item 4, new).
    items = np.array([1, 2, 2, 3, 1, 4])
    opens = np.array([1, 0, 1, 0, 1, 1], dtype=bool)
    train, valid = session_examples([items], [opens])
    assert len(valid) == 0  # the newest opening (item 4) is new to the user: no repeat example
    assert len(train) == 2
    assert sorted(train.targets) == [0, 1]  # item 1 among [1, 2, 3] at 4; item 2 among [1, 2] at 2
    train, valid = session_examples([items[:5]], [opens[:5]])
    assert len(valid) == 1 and valid.targets == [0] and len(train) == 1


def _habit_log(users: int, sessions: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each user opens every session with their own staple and closes it with their own
    filler (both once a session), with two random items between: the filler is always the
    newer of the two, so the time-decayed frequency ranks it above the staple."""
    rng = np.random.default_rng(seed)
    histories, starts = [], []
    for user in range(users):
        staple, filler = 1 + 2 * user, 2 + 2 * user
        items, opens = [], []
        for _ in range(sessions):
            middle = rng.integers(2 * users + 1, 2 * users + 40, size=2)
            items += [staple, *middle.tolist(), filler]
            opens += [True, False, False, False]
        histories.append(np.array(items)), starts.append(np.array(opens))
    return histories, starts


def test_the_head_learns_which_items_open_a_session() -> None:
    histories, starts = _habit_log(users=40, sessions=6, seed=0)
    train, valid = session_examples(histories, starts, per_user=4)
    head, losses = fit_repeat_head(train, valid, epochs=15, seed=0)
    assert losses[int(np.nanargmin(losses))] < losses[0]

    # New users with the same habit: the next session opens with the staple.
    fresh, fresh_starts = _habit_log(users=20, sessions=5, seed=1)
    fresh = [h + 1000 for h in fresh]  # items the head never saw: only the habit carries over
    targets = np.array([h[0] for h in fresh])
    n_items = int(max(h.max() for h in fresh))
    explore = torch.zeros(len(fresh), n_items + 1)
    mine = M.pessimistic_ranks(mixture_scores(head.item_scores(fresh, fresh_starts), explore, 0.9),
                               torch.as_tensor(targets))
    decayed = M.pessimistic_ranks(DecayedFrequency(n_items, 0.9).fit(fresh).score_all(fresh), torch.as_tensor(targets))
    assert (mine == 0).all()
    assert (decayed > 0).all()  # the filler, bought later in every session, comes first


def test_mixture_is_a_distribution_over_the_catalogue() -> None:
    repeat = [(np.array([1, 3]), np.array([0.0, math.log(3.0)])), (np.zeros(0, dtype=np.int64), np.zeros(0))]
    explore = torch.zeros(2, 5)  # uniform over items 1..4 (column 0 is padding)
    mixed = mixture_scores(repeat, explore, 0.8)
    assert mixed[:, 0].eq(float("-inf")).all()
    np.testing.assert_allclose(mixed.exp().sum(1).numpy(), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(mixed[0].exp().numpy()[1:], [0.2 + 0.05, 0.05, 0.6 + 0.05, 0.05], rtol=1e-6)
    only_repeat = mixture_scores(repeat, explore, 1.0)
    assert torch.isinf(only_repeat[0, 2]) and torch.isfinite(only_repeat[0, 3])
    with pytest.raises(ValueError, match="repeat_share"):
        mixture_scores(repeat, explore, 1.5)
    with pytest.raises(ValueError, match="no training example"):
        fit_repeat_head(session_examples([], [])[0], session_examples([], [])[1])
