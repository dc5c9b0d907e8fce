"""The user-context features: the in-memory as-of join equals Feast's point-in-time join, and
serving (the online row) and training (the point-in-time row) give the model the same input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.errors import FeatureStoreError
from shoprec.features.online import online_user_rows
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import apply_definitions, materialize
from shoprec.features.tables import build_feature_tables
from shoprec.features.training_set import build_training_set, next_item_examples
from shoprec.features.user_context import (
    USER_CONTEXT_FEATURES, UserContextTransform, feature_refs, join_user_stats_asof,
)

from .conftest import AS_OF

pytestmark = pytest.mark.integration


def _store(tmp_path, events, items, as_of=None):
    settings = FeatureStoreSettings(home=tmp_path)
    tables = build_feature_tables(events, items, as_of=as_of)
    tables.write(settings.features_dir)
    return apply_definitions(settings), settings, tables


def test_the_asof_join_is_feasts_point_in_time_join(tmp_path):
    data = limit_to_users(load_movielens_100k(), 25)
    store, _, tables = _store(tmp_path, data.events, data.items)
    examples = next_item_examples(data.events)
    feast = build_training_set(store, examples, features=feature_refs())
    ours = join_user_stats_asof(examples, tables.user_stats)
    assert len(ours) == len(feast) == len(examples)
    for name in USER_CONTEXT_FEATURES:
        pd.testing.assert_series_equal(ours[name].astype("float64"), feast[name].astype("float64"),
                                       check_names=False)
    # The first event of every user sees no user_stats row at all (strictly before).
    first = ~examples.duplicated(S.USER_ID)
    assert ours.loc[first, "views_all"].isna().all()


def test_serving_and_training_give_the_model_the_same_input(tmp_path, timeline):
    events, items = timeline
    store, settings, _ = _store(tmp_path, events, items, as_of=AS_OF)
    materialize(store, settings)
    # Training: examples a second after the build time see the tables' last row of each user.
    examples = pd.DataFrame({S.USER_ID: ["u1", "u2"], S.ITEM_ID: ["A", "C"],
                             S.TIMESTAMP: [AS_OF + pd.Timedelta(seconds=1)] * 2})
    trained = build_training_set(store, examples, features=feature_refs())
    transform = UserContextTransform.fit(
        build_training_set(store, next_item_examples(events), features=feature_refs()))
    online = online_user_rows(store, ["u1", "u2"])
    np.testing.assert_array_equal(transform.apply(online), transform.apply(trained))
    assert np.abs(transform.apply(online)).sum() > 0  # not the all-zero input of an unknown user
    # Through the bundle's saved form too (what the predictor reads).
    again = UserContextTransform.from_dict(transform.to_dict())
    np.testing.assert_array_equal(again.apply(online), transform.apply(trained))


def test_the_transform_reads_only_varying_features_and_names_missing_ones(timeline):
    events, items = timeline
    tables = build_feature_tables(events, items, as_of=AS_OF)
    rows = join_user_stats_asof(events.iloc[:6], tables.user_stats)
    transform = UserContextTransform.fit(rows)
    assert "views_all" in transform.columns and "days_since_last_event" not in transform.columns
    got = transform.apply(rows)
    assert got.shape == (6, transform.width) and got.dtype == np.float32
    # log1p then standardized over the fitting rows: mean 0 per column.
    np.testing.assert_allclose(got.mean(0), 0.0, atol=1e-6)
    with pytest.raises(FeatureStoreError, match="lacks the user_stats column"):
        UserContextTransform.fit(rows.drop(columns=["views_all"]))
    with pytest.raises(FeatureStoreError, match="not numeric user_stats features"):
        UserContextTransform.fit(rows, ("top_category",))


def test_training_reads_the_user_context_from_feasts_join(tmp_path):
    from shoprec.features.training_set import training_feature_refs
    from shoprec.training.fit import FitConfig, fit_and_evaluate
    from shoprec.training.loop import TrainConfig

    data = limit_to_users(load_movielens_100k(), 25)
    store, _, tables = _store(tmp_path, data.events, data.items)
    refs = training_feature_refs(USER_CONTEXT_FEATURES)
    assert refs == feature_refs() and not any(ref.endswith(":recent_items") for ref in refs)
    joined = build_training_set(store, next_item_examples(data.events), features=refs)
    config = FitConfig(model={"hidden": 16, "max_len": 20, "blocks": 1},
                       train=TrainConfig(max_epochs=1, progress=False), content=False, bootstrap=10,
                       baselines=("mostpop",), user_context=USER_CONTEXT_FEATURES)
    from_store = fit_and_evaluate(data, config, training_set=joined)
    in_memory = fit_and_evaluate(data, config, user_stats=tables.user_stats)
    # The same point-in-time values either way (rows in another order: sums round apart), so
    # the same transform and, up to rounding, the same model.
    ours, theirs = from_store.user_context, in_memory.user_context
    assert ours.columns == theirs.columns
    np.testing.assert_allclose(ours.mean, theirs.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.std, theirs.std, rtol=1e-12)
    assert from_store.results["sasrec"].metrics["NDCG@10"] == pytest.approx(
        in_memory.results["sasrec"].metrics["NDCG@10"], abs=1e-3)
    with pytest.raises(FeatureStoreError, match="lacks the user_stats column"):
        fit_and_evaluate(data, config)  # neither the join nor a table to join from
