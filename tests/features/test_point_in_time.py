"""Point-in-time training sets through Feast (DuckDB offline store): no value from the future.

The expected joins are written out by hand from the timeline in conftest.py, and on real
data the recent-items sequence of every example is checked against a plain loop.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.features import names as N
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import apply_definitions
from shoprec.features.tables import build_feature_tables
from shoprec.errors import FeatureStoreError
from shoprec.evaluation.splits import SplitSpec, make_split
from shoprec.features.training_set import (
    TRAINING_FEATURES, build_training_set, next_item_examples, training_features,
)
from shoprec.sequences import build_vocab

from .conftest import AS_OF, T1, T2, T3, T5, ts

pytestmark = pytest.mark.integration


@pytest.fixture
def timeline_store(tmp_path, timeline):
    events, items = timeline
    settings = FeatureStoreSettings(home=tmp_path)
    build_feature_tables(events, items, as_of=AS_OF).write(settings.features_dir)
    return apply_definitions(settings)


def test_training_rows_see_only_the_past(timeline_store):
    examples = pd.DataFrame(
        [
            ("u1", "A", T5, "target: the t5 purchase of A"),
            ("u1", "C", T3, "target: the cart of C at t3 (B was viewed in the same second)"),
            ("u1", "B", T2, "target: the t2 purchase of B"),
            ("u1", "A", T1, "target: the very first event"),
            ("u2", "C", ts("2024-02-01"), "a later moment of u2"),
        ],
        columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, "label"],
    )
    got = build_training_set(timeline_store, examples)

    assert list(got["label"]) == list(examples["label"])  # input order and extra columns kept
    assert list(got[S.TIMESTAMP]) == [T5, T3, T2, T1, ts("2024-02-01")]
    # By hand: the feature row each example may see is the last one strictly before it.
    assert [list(v) for v in got[N.RECENT_ITEMS]] == [
        ["A", "B", "B", "C"],  # rows up to t3; the t5 target is not in it
        ["A", "B"],            # up to t2: nothing of t3's second, target or not
        ["A"],                 # up to t1
        [],                    # no history yet
        ["C"],                 # u2's only event
    ]
    assert list(got["views_all"][:3]) == [2, 1, 1]
    assert list(got["purchases_all"][:3]) == [1, 1, 0]
    assert list(got["carts_all"][:3]) == [1, 0, 0]
    assert list(got["distinct_items"][:3]) == [3, 2, 1]
    assert list(got["mean_price"][:2]) == [10.0, 10.0]  # the t5 price (20) is not seen at t5
    assert list(got["top_category"][:3]) == ["books", "toys", "toys"]
    # Windows are those of the row seen (t3's: (Jan 13, Jan 20]); values are as of that row.
    assert got["views_7d"][0] == 1 and got["carts_30d"][0] == 1
    assert math.isnan(got["views_all"][3]) and got["top_category"][3] is None
    assert got["views_all"][4] == 1 and got["top_category"][4] == "toys"
    # Item statistics are not in the service (no model input or serving read uses them).
    assert not {"events_all", "users_all", "purchase_share", "category"} & set(got.columns)


def test_real_data_sequences_never_hold_the_target_or_later(tmp_path):
    data = limit_to_users(load_movielens_100k(), 12)
    settings = FeatureStoreSettings(home=tmp_path)
    build_feature_tables(data.events, data.items, max_len=20).write(settings.features_dir)
    store = apply_definitions(settings)
    examples = next_item_examples(data.events).iloc[::7].reset_index(drop=True)  # ~250 rows
    got = build_training_set(store, examples)

    events = data.events.sort_values([S.USER_ID, S.TIMESTAMP], kind="stable")
    history = {user: list(zip(g[S.TIMESTAMP], g[S.ITEM_ID])) for user, g in events.groupby(S.USER_ID)}
    for row in got.itertuples(index=False):
        earlier = [item for when, item in history[row.user_id] if when < row.timestamp]
        assert row.recent_items == earlier[-20:], (row.user_id, row.timestamp)
        assert (0 if math.isnan(row.views_all) else row.views_all) == len(earlier)


def test_a_feature_list_joins_only_those_features_point_in_time(timeline_store, timeline):
    events, _ = timeline
    examples = next_item_examples(events[events[S.TIMESTAMP] < AS_OF])
    whole = build_training_set(timeline_store, examples)
    stats = training_features(timeline_store)
    lists = [N.RECENT_ITEMS, N.HISTORY_ITEMS, N.HISTORY_SESSION_STARTS]
    assert list(N.LIST_FEATURES) == lists
    assert stats and all(ref.split(":")[1] not in lists for ref in stats)
    assert {ref.split(":")[0] for ref in stats} == {N.USER_STATS}  # nothing of user_history
    got = build_training_set(timeline_store, examples, features=stats)

    assert not set(lists) & set(got.columns)
    assert list(got.columns) == [c for c in whole.columns if c not in lists]
    # The same values as the whole service's join: strictly before each example, row for row.
    pd.testing.assert_frame_equal(got, whole.drop(columns=lists))
    # user_history is a snapshot at as_of: nothing of it is known before then. The service
    # carries its lists only: the last-event fields are for pushes, never in a training set.
    assert all(value == [] for value in whole[N.HISTORY_ITEMS])
    assert all(value == [] for value in whole[N.HISTORY_SESSION_STARTS])
    assert not {N.HISTORY_LAST_EVENT_NS, N.HISTORY_LAST_SESSION} & set(whole.columns)
    one = build_training_set(timeline_store, examples, features=[f"{N.USER_STATS}:views_all"])
    assert list(one.columns) == [S.USER_ID, S.ITEM_ID, S.TIMESTAMP, "views_all"]
    pd.testing.assert_series_equal(one["views_all"], whole["views_all"])
    assert math.isnan(one["views_all"][0]) and one["views_all"][1] == 1  # t1: nothing before; t2: A
    with pytest.raises(FeatureStoreError, match="not in the feature service"):
        build_training_set(timeline_store, examples, features=["user_stats:no_such_feature"])


def test_the_train_steps_training_set_has_the_rows_without_recent_items(tmp_path):
    data = limit_to_users(load_movielens_100k(), 12)
    settings = FeatureStoreSettings(home=tmp_path)
    build_feature_tables(data.events, data.items, max_len=20).write(settings.features_dir)
    store = apply_definitions(settings)
    examples = next_item_examples(data.events)
    before = build_training_set(store, examples)  # what the train step joined: the whole service

    got = build_training_set(store, examples, features=TRAINING_FEATURES)  # what it joins now
    assert N.RECENT_ITEMS not in got and N.RECENT_ITEMS in before
    keys = [S.USER_ID, S.ITEM_ID, S.TIMESTAMP]
    assert list(got.columns) == keys  # nothing the models do not read
    pd.testing.assert_frame_equal(got[keys], before[keys])  # the same rows, in the same order
    # and training on either gives the same split
    vocab = build_vocab(before)
    for spec in (SplitSpec("temporal"), SplitSpec()):
        a, b = make_split(before, vocab, spec), make_split(got, vocab, spec)
        assert [s.tolist() for s in a.train] == [s.tolist() for s in b.train]
        assert a.test.targets.tolist() == b.test.targets.tolist() and a.spec == b.spec

    # A log with session ids: the examples carry them through the join, so the training set's
    # session openings (the repeat head's input) are the log's.
    sessions = data.events.assign(**{S.SESSION_ID: data.events[S.USER_ID].astype(str) + "-"
                                     + pd.to_datetime(data.events[S.TIMESTAMP], utc=True).dt.strftime("%Y-%m-%d")})
    joined = build_training_set(store, next_item_examples(sessions), features=TRAINING_FEATURES)
    assert list(joined.columns) == [*keys, S.SESSION_ID]
    spec = SplitSpec("temporal")
    from_log, from_join = make_split(sessions, vocab, spec, sessions=True), make_split(joined, vocab, spec, sessions=True)
    assert [s.tolist() for s in from_join.test.starts] == [s.tolist() for s in from_log.test.starts]
    assert sum(s.sum() for s in from_join.test.starts) > len(from_join.test)  # days split the histories


def test_the_train_step_trains_on_the_rows_without_recent_items(tmp_path, monkeypatch):
    from kfp import dsl

    import shoprec.training.fit as fit
    from shoprec.components.train import train

    data = limit_to_users(load_movielens_100k(), 12)
    settings = FeatureStoreSettings(home=tmp_path / "home")
    build_feature_tables(data.events, data.items, max_len=20).write(settings.features_dir)
    whole = build_training_set(apply_definitions(settings), next_item_examples(data.events))
    seen = []

    def spy(data, config, training_set=None):
        seen.append(training_set)
        return real(data, config, training_set=training_set)

    real = fit.fit_and_evaluate
    monkeypatch.setattr(fit, "fit_and_evaluate", spy)
    store = dsl.Artifact(name="feature_store", uri=str(tmp_path / "store.json"))
    (tmp_path / "store.json").write_text('{"feature_service": "recommender_v1"}')
    model = dsl.Model(name="model", uri=str(tmp_path / "model"))
    train.python_func(
        clean=dsl.Dataset(name="clean", uri=str(data.write(tmp_path / "clean"))), feature_store=store,
        home=str(settings.home.root), use_feature_store=True, split="temporal", cutoff="", max_epochs=1,
        budget_minutes=0.0, learning_rate=5e-3, hidden=16, max_len=20, dropout=0.1, model=model,
        metrics=dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics")),
        model_card=dsl.Markdown(name="card", uri=str(tmp_path / "card.md")),
    )
    (got,) = seen
    assert N.RECENT_ITEMS not in got and N.RECENT_ITEMS in whole
    keys = [S.USER_ID, S.ITEM_ID, S.TIMESTAMP]
    pd.testing.assert_frame_equal(got[keys], whole[keys])  # the rows the whole service gave
    assert model.metadata["training_rows"] == len(whole)
