"""The real predictor and transformer on free ports, over real HTTP, on a real Feast store."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest

from shoprec.serving.catalog import load_catalog
from shoprec.evaluation.evaluate import rank_targets
from shoprec.evaluation.splits import EvalSet
from shoprec.models.inference import BundleRecommender
from shoprec.serving.prediction_log import hash_user, read_predictions
from shoprec.kserve.process import running_transformer, stop
from tests.serving.conftest import feast_redis_env, predict

pytestmark = pytest.mark.integration


def known_users(demo, n: int) -> list[str]:
    return [str(u) for u in demo.sequences.users[:: max(1, len(demo.sequences.users) // n)][:n]]


def test_v1_user_answer_has_items_metadata_reasons_and_lineage(servers, demo):
    user = known_users(demo, 1)[0]
    response = predict(servers.transformer, [{"user_id": user, "k": 5}])

    assert response.status_code == 200, response.text
    body = response.json()
    prediction = body["predictions"][0]
    assert prediction["user_id"] == user and prediction["fallback"] is None
    assert prediction["model_version"] == demo.version == body["model_version"]
    assert len(prediction["items"]) == 5
    sequence = demo.sequences.items[list(demo.sequences.users).index(user)]
    history = set(demo.vocab.item_ids(sequence[-demo.history_len:]))  # what serving sees: user_history
    for item in prediction["items"]:
        assert set(item) >= {"item_id", "score", "title", "category", "reason"}
        assert item["item_id"] not in history  # MovieLens policy: seen items are excluded
        if item["reason_item_id"] is not None:
            assert item["reason_item_id"] in history and item["reason"].startswith("because you bought ")
    scores = [i["score"] for i in prediction["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["lineage"] == {"model_version": demo.version, "feature_service": "recommender_v1",
                               "data_snapshot": "ml-100k-demo"}
    assert response.headers["x-shoprec-model-version"] == demo.version
    assert response.headers["x-shoprec-feature-service"] == "recommender_v1"
    assert response.headers["x-shoprec-data-snapshot"] == "ml-100k-demo"
    assert response.headers["x-shoprec-fallback"] == "none"


def test_no_skew_the_endpoint_top10_is_the_evaluators_top10(servers, demo):
    users = known_users(demo, 8)
    rows = [list(demo.sequences.users).index(u) for u in users]
    # The evaluator's view of each user: the training sequence (from the event log), its
    # newest `history_len` items - what the feature tables serve as user_history.
    histories = [np.asarray(demo.sequences.items[r][-demo.history_len:]) for r in rows]
    assert max(len(h) for h in histories) > demo.max_len  # some histories are longer than the window
    bundle = BundleRecommender.from_bundle(demo.bundle_dir).bundle
    eval_set = EvalSet(np.array(users, dtype=object), histories, np.ones(len(users), dtype=np.int64))
    _, top = rank_targets(bundle.model, eval_set, bundle.exclude_seen, k=10)

    response = predict(servers.transformer, [{"user_id": u, "k": 10} for u in users])

    assert response.status_code == 200, response.text
    for user, expected, prediction in zip(users, top, response.json()["predictions"]):
        assert prediction["fallback"] is None
        assert [i["item_id"] for i in prediction["items"]] == demo.vocab.item_ids(expected), user


def test_unknown_user_gets_trending_items_and_the_answer_names_the_fallback(servers, demo):
    response = predict(servers.transformer, [{"user_id": "never-seen-shopper", "k": 4}])

    assert response.status_code == 200
    prediction = response.json()["predictions"][0]
    trending = load_catalog(demo.home.features).trending()[:4]
    assert prediction["fallback"] == "unknown_user"
    assert [i["item_id"] for i in prediction["items"]] == trending
    assert {i["reason"] for i in prediction["items"]} == {"trending now"}
    assert response.headers["x-shoprec-fallback"] == "unknown_user"


def test_cart_request_bought_together_with_exclude_and_category(servers, demo):
    cart = ["50", "181"]
    plain = predict(servers.transformer, [{"items": cart, "k": 5}]).json()["predictions"][0]
    assert plain["fallback"] is None and "user_id" not in plain
    ids = [i["item_id"] for i in plain["items"]]
    assert not set(ids) & set(cart)
    assert all(i["reason_item_id"] in (*cart, None) for i in plain["items"])
    assert any(i["reason"].startswith("goes with ") and i["reason"].endswith(" in your cart") for i in plain["items"])

    filtered = predict(servers.transformer, [{"items": cart, "k": 5, "exclude": ids[:2], "category": "Comedy"}])
    items = filtered.json()["predictions"][0]["items"]
    assert filtered.status_code == 200 and len(items) == 5
    assert not {i["item_id"] for i in items} & set(ids[:2])
    assert {i["category"] for i in items} == {"Comedy"}

    unknown = predict(servers.transformer, [{"items": ["no-such-item"], "k": 3}]).json()["predictions"][0]
    assert unknown["fallback"] == "empty_history" and len(unknown["items"]) == 3


def test_v2_with_a_stock_open_inference_protocol_client(servers, demo):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    users = known_users(demo, 2) + ["never-seen-shopper"]

    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            user_in = InferInput("user_id", [len(users)], "BYTES", users)
            k_in = InferInput("k", [1], "INT32", [3])
            response = await client.infer(servers.transformer, InferRequest("shoprec", [user_in, k_in]),
                                          model_name="shoprec")
            ready = await client.is_server_ready(servers.transformer)
            model_ready = await client.is_model_ready(servers.transformer, "shoprec")
            live = await client.is_server_live(servers.transformer)
            return response, ready, model_ready, live
        finally:
            await client.close()

    response, ready, model_ready, live = asyncio.run(call())
    assert ready and model_ready and live
    outputs = {o.name: o for o in response.outputs}
    assert outputs["item_id"].shape == [3, 3] and outputs["score"].datatype == "FP32"
    assert outputs["fallback"].data == ["", "", "unknown_user"]
    v1 = predict(servers.transformer, [{"user_id": u, "k": 3} for u in users]).json()["predictions"]
    assert outputs["item_id"].data == [i["item_id"] for p in v1 for i in p["items"]]
    assert response.parameters["model_version"] == demo.version  # the client keeps parameters, not model_version

    metadata = httpx.get(f"{servers.transformer}/v2/models/shoprec").json()
    assert [i["name"] for i in metadata["inputs"]] == ["user_id", "k", "exclude", "category", "sponsored_item_id",
                                                       "sponsored_bid", "sponsored_slots", "diversity", "campaign",
                                                       "preferences"]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]}["score"] == "FP32"
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]}["sponsored"] == "BOOL"
    assert httpx.get(f"{servers.transformer}/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("body, message", [
    ('{"instances": [', "Unrecognized request format"),
    ({"instances": [{"user_id": ["u1"]}]}, "instances[0].user_id must be"),
    ({"instances": [{"user_id": "1", "k": "10"}]}, "instances[0].k must be an integer between 1 and 1000"),
    ({"instances": [{"user_id": "1", "k": 0}]}, "instances[0].k must be an integer between 1 and 1000"),
    ({"instances": [{"user_id": "1", "k": 1001}]}, "instances[0].k must be an integer between 1 and 1000"),
    ({"instances": [{"user_id": "1"}] * 257}, "at most 256"),
    ({"instances": [{"user_id": "1", "colour": "red"}]}, "unknown field(s) ['colour']"),
    ({"instances": [{"items": "50"}]}, "instances[0].items must be a list"),
    ({"instances": [{"items": ["50"], "exclude": [1.5]}]}, "instances[0].exclude[0] must be a string or integer"),
    ({"instances": [{"user_id": "1", "category": ""}]}, "instances[0].category must be a non-empty string"),
])
def test_bad_v1_input_is_a_400_naming_the_field(servers, body, message):
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(f"{servers.transformer}/v1/models/shoprec:predict", content=content,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize("inputs, message", [
    ([{"name": "user_id", "shape": [1], "datatype": "INT32", "data": [1]}], "must have datatype BYTES"),
    ([{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["1"]},
      {"name": "k", "shape": [1], "datatype": "INT32", "data": [5000]}], "k[0] must be an integer between 1 and 1000"),
    ([{"name": "user_id", "shape": [1], "datatype": "BYTES"}], "inputs.0.data: Field required"),
    ([{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}], "unknown input 'colour'"),
])
def test_bad_v2_input_is_a_400_naming_the_field(servers, inputs, message):
    response = httpx.post(f"{servers.transformer}/v2/models/shoprec/infer", json={"inputs": inputs}, timeout=30)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_unknown_model_is_404_on_both_servers_and_protocols(servers):
    for base in (servers.transformer, servers.predictor):
        response = httpx.post(f"{base}/v1/models/nope:predict", json={"instances": [{"items": []}]})
        assert response.status_code == 404 and "nope" in response.json()["error"]
    assert httpx.post(f"{servers.transformer}/v2/models/nope/infer", json={"inputs": []}).status_code == 404
    assert httpx.get(f"{servers.transformer}/v2/models/nope/ready").status_code == 404


def test_predictor_alone_takes_exclude_category_and_reasons(servers, demo):
    response = predict(servers.predictor, [{"items": ["50", "181"], "k": 3, "category": "Drama",
                                            "exclude": ["100"], "reasons": True}])
    assert response.status_code == 200, response.text
    answer = response.json()
    prediction = answer["predictions"][0]
    catalog = load_catalog(demo.home.features, demo.items_path)  # what the predictor was given
    assert {catalog.category_of(i) for i in prediction["items"]} == {"Drama"}
    assert prediction["history_used"] == 2 and len(prediction["reasons"]) == 3
    assert answer["lineage"]["model_version"] == demo.version


def test_feast_down_answers_from_the_fallback_and_sigterm_stops_gracefully(servers, demo, closed_port):
    host = servers.predictor.removeprefix("http://")
    with running_transformer(host, home=demo.home.root, env=feast_redis_env(closed_port)) as (base, process):
        response = predict(base, [{"user_id": known_users(demo, 1)[0], "k": 3}, {"items": ["50"], "k": 3}])
        assert response.status_code == 200, response.text
        user, cart = response.json()["predictions"]
        assert user["fallback"] == "features_unavailable" and len(user["items"]) == 3
        assert cart["fallback"] is None  # a cart needs no features
        assert response.headers["x-shoprec-fallback"] == "features_unavailable"
        # SIGTERM: graceful stop, exit code 0 (given time: on a loaded machine closing the
        # prediction log and the unreachable store's client took over 10 s).
        assert stop(process, timeout_s=45) == 0


def test_feast_slow_times_out_to_the_fallback(servers, demo, hanging_port):
    host = servers.predictor.removeprefix("http://")
    with running_transformer(host, home=demo.home.root, env=feast_redis_env(hanging_port),
                             feature_timeout_ms=50) as (base, _):
        cart = predict(base, [{"items": ["50"], "k": 3}])  # needs no features: the server's own pace
        response = predict(base, [{"user_id": known_users(demo, 1)[0], "k": 3}])
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["fallback"] == "features_unavailable"
        # The 50 ms feature timeout, not Redis's own socket timeouts (1 s, one retry), decides:
        # compared with a request that waits on no store, so a loaded machine does not fail it.
        assert response.elapsed.total_seconds() < cart.elapsed.total_seconds() + 1.0


def test_predictor_down_is_503_not_500(demo, closed_port):
    with running_transformer(f"127.0.0.1:{closed_port}", home=demo.home.root) as (base, _):
        response = predict(base, [{"items": ["50"], "k": 3}])
        assert response.status_code == 503, response.text
        assert "predictor 127.0.0.1" in response.json()["error"] and "unreachable" in response.json()["error"]
        # Users the model is not needed for are still answered.
        assert predict(base, [{"user_id": "never-seen-shopper", "k": 2}]).status_code == 200


def test_every_answer_is_in_the_prediction_log_with_the_user_hashed(servers, demo):
    user = known_users(demo, 1)[0]
    request_id = "log-test-request"
    predict(servers.transformer, [{"user_id": user, "k": 2}], headers={"x-request-id": request_id})
    # The server's log writer is a background thread (an answer never waits for the volume):
    # the record lands shortly after the answer, so poll for it rather than read once.
    deadline = time.monotonic() + 5.0
    while True:
        frame = read_predictions(demo.home.logs / "predictions")
        mine = frame[frame["request_id"] == request_id]
        if len(mine) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(mine) == 1
    row = mine.iloc[0]
    assert row["user_hash"] == hash_user(user, "test-salt") and row["kind"] == "user"
    assert row["model_version"] == demo.version and row["fallback"] is None and len(row["items"]) == 2
    assert "recent_items" in row["features_used"] and row["history_length"] > 0
    raw = "".join(p.read_text() for p in (demo.home.logs / "predictions").glob("*.jsonl"))
    assert f'"{user}"' not in raw or user.isdigit()  # never the raw id as a field value
