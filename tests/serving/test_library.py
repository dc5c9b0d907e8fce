"""The serving library without servers: parsing, filtered ranking, reasons, fallbacks, catalogue."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.serving.catalog import ItemCatalog, load_catalog
from shoprec.serving.cold_start import FEATURES_UNAVAILABLE, fallback_items
from shoprec.errors import BundleError, DataSourceError, InvalidRequest
from shoprec.features.tables import features_history_len, features_max_len
from shoprec.lifecycle.registry import Registry
from shoprec.models.inference import BundleRecommender
from shoprec.serving.reasons import reason_indices
from shoprec.serving.predictor import LiveModel, ServingUnavailable, answer, filtered_topk
from shoprec.serving.requests import (
    Query,
    TensorInput,
    UserQuery,
    parse_request_v1,
    parse_request_v2,
    parse_v1,
)
from shoprec.serving.transformer import TransformerCore, v2_outputs
from tests.registry.conftest import make_bundle, make_features, make_window_bundle


@pytest.fixture
def markov(tmp_path) -> BundleRecommender:
    return BundleRecommender.from_bundle(make_bundle(tmp_path / "markov", "markov1"))


@pytest.fixture
def catalog() -> ItemCatalog:
    frame = pd.DataFrame({
        S.ITEM_ID: [f"i{n}" for n in range(1, 13)],
        "title": [f"Item {n}" for n in range(1, 13)],
        S.CATEGORY: ["even" if n % 2 == 0 else "odd" for n in range(1, 13)],
        S.PRICE: [float(n) for n in range(1, 13)],
        "popular": [12 - n for n in range(1, 13)],  # i1 most popular
        "trending": [1.0 if n in (9, 10) else 0.0 for n in range(1, 13)],  # i9, i10 trend now
    }).set_index(S.ITEM_ID)
    return ItemCatalog(frame)


def test_predictor_instances_take_exclude_category_and_reasons():
    assert parse_v1({"instances": [{"items": ["i1"], "k": 3, "exclude": ["i2", 5], "category": "odd",
                                    "reasons": True}]}) == [Query(("i1",), 3, ("i2", "5"), "odd", True)]


@pytest.mark.parametrize("instance, message", [
    ({"items": [], "exclude": "i1"}, r"instances\[0\].exclude must be a list"),
    ({"items": [], "exclude": [None]}, r"instances\[0\].exclude\[0\] must be a string or integer"),
    ({"items": [], "category": 3}, r"instances\[0\].category must be a non-empty string"),
    ({"items": [], "reasons": "yes"}, r"instances\[0\].reasons must be true or false"),
])
def test_predictor_parse_names_the_new_fields(instance, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_v1({"instances": [instance]})


def test_filtered_topk_without_filters_equals_recommend_and_honours_filters(markov, catalog):
    plain = markov.recommend(["i4"], 5)
    unfiltered, row = filtered_topk(markov, Query(("i4",), 5, (), None), catalog)
    assert row.shape == (1, markov.bundle.model.n_items + 1)
    assert unfiltered["items"] == [r.item_id for r in plain]
    assert unfiltered["scores"] == pytest.approx([r.score for r in plain])
    excluded, row = filtered_topk(markov, Query(("i4",), 5, ("i5",)), catalog)
    assert row[0, int(markov.bundle.vocab.index(["i5"])[0])] == float("-inf")  # what re-ranking reads
    six = [r.item_id for r in markov.recommend(["i4"], 6)]
    assert "i5" in six and excluded["items"] == [i for i in six if i != "i5"]
    even, _ = filtered_topk(markov, Query(("i4",), 5, (), "even"), catalog)
    assert even["items"] and all(int(i[1:]) % 2 == 0 for i in even["items"]) and "i4" not in even["items"]
    assert filtered_topk(markov, Query(("i4",), 5, (), "no-such-category"), catalog)[0]["items"] == []
    with pytest.raises(ServingUnavailable, match="without an item catalogue"):  # the server's fault, not the client's
        filtered_topk(markov, Query(("i4",), 5, (), "even"), None)


def test_reason_is_the_history_item_that_raised_the_score(markov):
    # Markov-1 scores by the last item only: i5 follows i4, so i4 is the reason; i1 adds nothing.
    vocab = markov.bundle.vocab
    history = vocab.index(["i1", "i4"])
    reasons = reason_indices(markov.bundle.model, [history], [vocab.index(["i5"])])
    assert reasons == [[int(vocab.index(["i4"])[0])]]
    got = answer(markov, [Query(("i1", "i4"), 3, reasons=True), Query(("nope",), 2, reasons=True)])
    assert got[0]["items"][0] == "i5" and got[0]["reasons"][0] == "i4" and got[0]["history_used"] == 2
    assert got[1]["history_used"] == 0 and got[1]["reasons"] == [None, None]


def test_fallbacks_prefer_the_filter_then_the_recent_category_then_trending(catalog):
    assert [f.item_id for f in fallback_items(catalog, 3)] == ["i9", "i10", "i1"]
    assert fallback_items(catalog, 1)[0].reason == "trending now"
    recent = fallback_items(catalog, 3, recent_category="even", exclude={"i2"})
    assert [f.item_id for f in recent] == ["i4", "i6", "i8"] and "your recent category" in recent[0].reason
    assert [f.item_id for f in fallback_items(catalog, 2, recent_category="even", category="odd")] == ["i1", "i3"]


def test_transformer_requests_name_the_field_at_fault():
    assert parse_request_v1({"instances": [{"user_id": "u1"}, {"items": ["a"], "k": 3}]}) == [
        UserQuery("u1", None, 10), UserQuery(None, ("a",), 3)]
    for payload, message in [
        ({"instances": [{"user_id": "u1", "items": []}]}, "exactly one of user_id"),
        ({"instances": [{}]}, "exactly one of user_id"),
        ({"instances": [{"user_id": None}]}, r"instances\[0\].user_id must be"),
        ({"instances": [{"user_id": "u", "k": 1001}]}, r"instances\[0\].k must be an integer between 1 and 1000"),
        ({"instances": [{"user_id": "u", "colour": 1}]}, r"unknown field\(s\) \['colour'\]"),
        ({"instances": [{"user_id": "u"}], "extra": 1}, r"unknown top-level field\(s\) \['extra'\]"),
        ({"instances": [{"user_id": "u"}] * 257}, "at most 256"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            parse_request_v1(payload)
    assert parse_request_v2([TensorInput("user_id", "BYTES", [2], [b"u1", "u2"]),
                             TensorInput("k", "INT32", [1], [3])]) == [UserQuery("u1", None, 3), UserQuery("u2", None, 3)]
    for inputs, message in [
        ([TensorInput("k", "INT32", [1], [3])], "input 'user_id'"),
        ([TensorInput("user_id", "INT32", [1], [3])], "must have datatype BYTES"),
        ([TensorInput("user_id", "BYTES", [1], ["u"]), TensorInput("k", "FP32", [1], [3.0])], "'k' must have datatype INT32"),
        ([TensorInput("user_id", "BYTES", [1], ["u"]), TensorInput("k", "INT32", [1], [0])], r"k\[0\] must be an integer"),
        ([TensorInput("user", "BYTES", [1], ["u"])], "unknown input 'user'"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            parse_request_v2(inputs)


def test_without_a_feature_store_users_get_the_features_unavailable_fallback(catalog):
    core = TransformerCore(catalog, None)
    pending = asyncio.run(core.prepare([UserQuery("u1", None, 2), UserQuery(None, ("i4",), 2)]))
    assert core.predictor_payload(pending) == {"instances": [{"items": ["i4"], "k": 2, "reasons": True}]}
    result = core.finish(pending, {"predictions": [{"items": ["i5", "i6"], "scores": [2.0, 1.0],
                                                    "reasons": ["i4", None], "history_used": 1}],
                                   "lineage": {"model_version": "v1", "feature_service": "recommender_v1",
                                               "data_snapshot": "s1"}})
    user, cart = result["predictions"]
    assert user["fallback"] == FEATURES_UNAVAILABLE and [i["item_id"] for i in user["items"]] == ["i9", "i10"]
    assert cart["fallback"] is None and cart["items"][0] == {
        "item_id": "i5", "score": 2.0, "title": "Item 5", "category": "odd", "price": 5.0,
        "reason": "goes with Item 4 in your cart", "reason_item_id": "i4", "sponsored": False}
    assert result["lineage"] == {"model_version": "v1", "feature_service": "recommender_v1", "data_snapshot": "s1"}
    outputs = {name: (shape, data) for name, _, shape, data in v2_outputs(result)}
    assert outputs["item_id"] == ([2, 2], ["i9", "i10", "i5", "i6"])
    assert outputs["fallback"] == ([2], [FEATURES_UNAVAILABLE, ""])
    assert outputs["sponsored"] == ([2, 2], [False] * 4)
    records = core.record(pending, result)
    assert records[0].user_hash and records[0].user_hash != "u1" and records[1].kind == "items"


def test_catalog_from_feature_tables_and_items(tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    stamp = pd.Timestamp("2024-01-01", tz="UTC")
    pd.DataFrame({S.ITEM_ID: ["a", "a", "b"], "event_timestamp": [stamp, stamp + pd.Timedelta(days=1), stamp],
                  "events_7d": [5, 1, 2], "events_all": [5, 9, 2], "category": ["x", "x", "unknown"],
                  "price": [1.0, 2.0, np.nan]}).to_parquet(features / "item_stats.parquet")
    pd.DataFrame({S.ITEM_ID: ["a", "b"], "title": ["A", "B"], S.CATEGORY: ["y", "z"]}).to_parquet(tmp_path / "items.parquet")
    catalog = load_catalog(features, tmp_path / "items.parquet")
    assert catalog.metadata("a") == {"title": "A", "category": "x", "price": 2.0}  # the latest row wins
    assert catalog.metadata("b") == {"title": "B", "category": "z"}  # unknown category: the items table's
    assert catalog.trending() == ["b", "a"] and catalog.items_in("x") == ["a"]
    with pytest.raises(DataSourceError, match="item_stats.parquet not found"):
        load_catalog(tmp_path / "nowhere")


def test_a_model_reading_a_longer_window_than_the_features_is_refused_at_load(tmp_path):
    bundle = make_window_bundle(tmp_path / "sasrec-20", max_len=20)
    window = features_max_len(make_features(tmp_path / "features", max_len=10))
    assert window == 10

    with pytest.raises(BundleError) as refused:
        LiveModel(bundle_dir=bundle, features_max_len=window).load()

    message = str(refused.value)
    assert "max_len=20" in message and "max_len=10" in message
    assert "rebuild the features with max_len=20" in message and "train the model with max_len=10" in message


def test_a_model_whose_repeat_side_reads_a_longer_history_than_the_features_is_refused(tmp_path):
    bundle = make_window_bundle(tmp_path / "sasrec", max_len=10, repeat_history=50)
    features = make_features(tmp_path / "features", max_len=10, history_len=30)
    assert (features_max_len(features), features_history_len(features)) == (10, 30)
    with pytest.raises(BundleError) as refused:
        LiveModel(bundle_dir=bundle, features_max_len=10, features_history_len=30).load()
    message = str(refused.value)
    assert "repeat_history=50" in message and "history_len=30" in message
    assert "rebuild the features with history_len=50" in message

    live = LiveModel(bundle_dir=bundle, features_max_len=10, features_history_len=50)
    assert live.load() == "sasrec"
    # Requests may carry the whole history the features keep (50), not only the window (10).
    history = [f"i{1 + n % 5}" for n in range(50)]  # seen items are excluded: 7 are left
    assert live.predict_v1({"instances": [{"items": history, "k": 3}]})["predictions"][0]["items"]
    with pytest.raises(InvalidRequest, match="holds 51 ids; at most 50"):
        live.predict_v1({"instances": [{"items": history + ["i1"], "k": 3}]})


def test_tables_built_before_user_history_report_their_window_as_the_history(tmp_path):
    features = make_features(tmp_path / "features", max_len=10)
    manifest = features / "features.json"
    record = json.loads(manifest.read_text())
    del record["history_len"]
    manifest.write_text(json.dumps(record))
    assert features_history_len(features) == 10


@pytest.mark.parametrize("model_len, features_len", [(10, 10), (5, 10), (20, None)],
                         ids=["equal", "shorter", "no-features-window"])
def test_a_model_whose_window_fits_the_features_loads(tmp_path, model_len, features_len):
    live = LiveModel(bundle_dir=make_window_bundle(tmp_path / "sasrec", model_len), features_max_len=features_len)
    assert live.load() == "sasrec"
    assert live.predict_v1({"instances": [{"items": ["i1", "i2"], "k": 3}]})["predictions"][0]["items"]


def test_a_model_without_a_window_loads_whatever_the_features_window(tmp_path):
    assert LiveModel(bundle_dir=make_bundle(tmp_path / "markov", "markov1"), features_max_len=1).load() == "markov"


def test_features_window_is_none_without_a_manifest(tmp_path):
    assert features_max_len(tmp_path) is None


def test_an_alias_switch_to_a_too_long_window_keeps_serving_the_old_version(tmp_path):
    registry = Registry(tmp_path / "registry")
    fits = registry.register(make_window_bundle(tmp_path / "b10", 10), metrics={}).version
    too_long = registry.register(make_window_bundle(tmp_path / "b20", 20), metrics={}).version
    registry.promote(too_long, reason="test")
    with pytest.raises(BundleError, match="max_len=20"):  # nothing to fall back on: refused at start
        LiveModel(registry=registry, features_max_len=10).load()

    registry.promote(fits, reason="test")
    live = LiveModel(registry=registry, features_max_len=10)
    assert live.load() == fits
    registry.promote(too_long, reason="test")
    with pytest.raises(BundleError, match="max_len=10"):  # the poll loop logs this and goes on
        live.refresh()
    assert live.version == fits


class CountingRegistry(Registry):
    """A real registry that counts its loads (each reads and hashes the whole weights file)."""

    loads = 0

    def load(self, version=None):
        self.loads += 1
        return super().load(version)


def test_a_broken_version_under_the_alias_is_logged_once_and_retried_with_back_off(tmp_path, caplog):
    registry = CountingRegistry(tmp_path / "registry")
    good = registry.register(make_window_bundle(tmp_path / "good", 10), metrics={}).version
    broken = registry.register(make_window_bundle(tmp_path / "broken", 10), metrics={}).version
    registry.promote(good, reason="test")
    live = LiveModel(registry=registry, poll_seconds=0.02)
    assert live.load() == good
    registry.promote(broken, reason="test")  # checked when promoted, broken on disk since
    weights = registry.bundle_dir(broken) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")  # fails its sha256 check
    loads_before = registry.loads

    with caplog.at_level("DEBUG", logger="shoprec.serving.alias_follower"):
        live.start_polling()
        time.sleep(0.8)  # 40 polls
        live.stop_polling()

    assert live.version == good  # the old version keeps answering
    assert registry.loads - loads_before == 1  # not re-read and re-hashed at every poll
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and broken in errors[0].getMessage() and errors[0].exc_info is None
    assert "integrity" in errors[0].getMessage() and len(errors[0].getMessage()) < 700
    assert 0 < live.retry_in(broken) <= 1.0


def test_the_default_sponsored_slots_fit_any_k_but_an_explicit_excess_is_a_400():
    # A k=1 list has room for one paid item: left unset, the default (2) is capped, never a 400
    # (the transformer's one-item lineage probe is exactly such a request).
    assert parse_v1({"instances": [{"items": [], "k": 1}]})[0].sponsored_slots == 1
    assert parse_request_v2([TensorInput("user_id", "BYTES", [1], ["u1"]),
                             TensorInput("k", "INT32", [1], [1])])[0].options.sponsored_slots == 1
    with pytest.raises(InvalidRequest, match=r"instances\[0\].sponsored_slots must be an integer between 0 and k \(1\)"):
        parse_v1({"instances": [{"items": [], "k": 1, "sponsored_slots": 2}]})


def test_v2_list_options_apply_to_every_user_and_name_the_input_at_fault():
    users = TensorInput("user_id", "BYTES", [2], ["u1", "u2"])
    queries = parse_request_v2([users, TensorInput("sponsored_item_id", "BYTES", [1], [b"i5"]),
                                TensorInput("sponsored_bid", "FP32", [1], [1.5]),
                                TensorInput("diversity", "FP32", [2], [0.0, 0.5])])
    assert [q.options.sponsored[0].item for q in queries] == ["i5", "i5"]
    assert [q.options.diversity for q in queries] == [0.0, 0.5]
    with pytest.raises(InvalidRequest, match=r"input sponsored_bid\[0\] must be a finite number >= 0"):
        parse_request_v2([users, TensorInput("sponsored_item_id", "BYTES", [1], ["i5"]),
                          TensorInput("sponsored_bid", "FP32", [1], [-1.0])])
    with pytest.raises(InvalidRequest, match="go together"):
        parse_request_v2([users, TensorInput("sponsored_item_id", "BYTES", [1], ["i5"])])
    with pytest.raises(InvalidRequest, match=r"diversity\[0\] must be a number between 0 and 1"):
        parse_request_v2([users, TensorInput("diversity", "FP32", [1], [2.0])])


def test_a_cold_cart_with_preferences_gets_onboarding_and_a_paid_item_is_marked(catalog):
    core = TransformerCore(catalog, None)
    stated = parse_request_v1({"instances": [{"items": ["nope"], "k": 2, "preferences": {"categories": ["even"]}},
                                             {"items": ["i4"], "k": 3}]})
    core.check(stated)
    pending = asyncio.run(core.prepare(stated))
    result = core.finish(pending, {"predictions": [
        {"items": ["i5"], "scores": [1.0], "reasons": [None], "history_used": 0},
        {"items": ["i5", "i7", "i6"], "scores": [2.0, 0.5, 1.0], "reasons": ["i4", None, None],
         "sponsored": [False, True, False], "history_used": 1}]})
    cold, warm = result["predictions"]
    assert cold["fallback"] == "empty_history" and cold["onboarding"] == "stated_categories"
    assert [i["item_id"] for i in cold["items"]] == ["i2", "i4"]  # most popular "even" items
    assert [i["sponsored"] for i in warm["items"]] == [False, True, False]
    assert warm["items"][1]["reason"] == "sponsored" and warm["items"][1]["reason_item_id"] is None
    with pytest.raises(InvalidRequest, match=r"instances\[0\].preferences: unknown category"):
        core.check(parse_request_v1({"instances": [{"user_id": "u1", "preferences": {"categories": ["neither"]}}]}))


def test_a_shared_v2_exclude_counts_toward_the_id_cap_once_per_user():
    """V2 `exclude` of shape [E] applies to every user, so it weighs what V1's per-instance lists
    would: 200 users x 600 shared ids is over the 100,000-id cap, 100 x 600 is not."""
    from shoprec.serving.requests import MAX_TOTAL_IDS, v2_filters

    shared = TensorInput("exclude", "BYTES", [600], [f"i{n}" for n in range(600)])
    assert len(v2_filters({"exclude": shared}, users=100, ids_sent=100)) == 100
    with pytest.raises(InvalidRequest, match=f"120200 ids in all .* at most {MAX_TOTAL_IDS}"):
        v2_filters({"exclude": shared}, users=200, ids_sent=200)
