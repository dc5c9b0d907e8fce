"""The predictor's own Open Inference Protocol path over real HTTP: the histories as a BYTES
`items` input [n, L] (padded with ""), answered as the V1 endpoint answers them; tested with a
stock client (tritonclient) with and without binary data, and its metadata, ready and live;
shapes that disagree with their data are 400s naming the input. Also the transformer's V2
`preferences` input for new users."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from shoprec.ranking.sponsored import DEFAULT_FLOOR
from shoprec.serving.requests import PREDICTOR_V2_INPUTS
from tests.serving.conftest import predict
from tests.serving.test_list_options import CART, ranked, settled, user_history

pytestmark = pytest.mark.integration


def infer(base: str, inputs: list[dict]) -> httpx.Response:
    return httpx.post(f"{base}/v2/models/shoprec/infer", json={"inputs": inputs}, timeout=30)


def texts(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def test_tritonclient_infers_on_the_predictor_with_and_without_binary_data(servers, demo):
    import tritonclient.http as triton

    histories = [CART, user_history(demo, str(demo.sequences.users[0]))[-7:], ["50"]]
    v1 = predict(servers.predictor, [{"items": h, "k": 4} for h in histories])
    assert v1.status_code == 200, v1.text
    expected = v1.json()["predictions"]
    width = max(len(h) for h in histories)
    padded = np.array([[i.encode() for i in h] + [b""] * (width - len(h)) for h in histories], dtype=object)
    client = triton.InferenceServerClient(url=servers.predictor.removeprefix("http://"))
    try:
        for binary in (False, True):
            items_in = triton.InferInput("items", list(padded.shape), "BYTES")
            items_in.set_data_from_numpy(padded, binary_data=binary)
            k_in = triton.InferInput("k", [1], "INT32")
            k_in.set_data_from_numpy(np.array([4], dtype=np.int32), binary_data=binary)
            wanted = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("item_id", "score", "sponsored")]
            result = client.infer("shoprec", [items_in, k_in], outputs=wanted)
            items = result.as_numpy("item_id")
            assert items.shape == (3, 4), binary
            assert texts(items) == [i for p in expected for i in p["items"]], binary
            np.testing.assert_allclose(result.as_numpy("score").ravel(), [s for p in expected for s in p["scores"]],
                                       rtol=1e-5)
            assert result.as_numpy("sponsored").dtype == np.bool_ and not result.as_numpy("sponsored").any()
            assert result.get_response()["model_version"] == v1.json()["model_version"]
        metadata = client.get_model_metadata("shoprec")
        assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == PREDICTOR_V2_INPUTS
        assert {o["name"] for o in metadata["outputs"]} == {"item_id", "score", "sponsored", "reason_item_id",
                                                            "history_used"}
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("shoprec")
    finally:
        client.close()


def test_predictor_v2_takes_the_list_options_and_one_history_as_shape_l(servers, model_ranking):
    items, relevance = model_ranking
    candidate = next(i for i, r in zip(items[5:], relevance[5:]) if r > DEFAULT_FLOOR)
    v1 = predict(servers.predictor, [{"items": CART, "k": 5, "sponsored": [{"item_id": candidate, "bid": 2.0}],
                                      "diversity": 0.5}]).json()["predictions"][0]
    response = infer(servers.predictor, [
        {"name": "items", "datatype": "BYTES", "shape": [len(CART)], "data": CART},
        {"name": "k", "datatype": "INT32", "shape": [1], "data": [5]},
        {"name": "sponsored_item_id", "datatype": "BYTES", "shape": [1], "data": [candidate]},
        {"name": "sponsored_bid", "datatype": "FP32", "shape": [1], "data": [2.0]},
        {"name": "diversity", "datatype": "FP32", "shape": [1], "data": [0.5]}])
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["item_id"]["shape"] == [1, 5] and outputs["item_id"]["data"] == v1["items"]
    assert outputs["sponsored"]["data"] == v1["sponsored"] and sum(v1["sponsored"]) == 1


@pytest.fixture(scope="module")
def model_ranking(demo):
    from shoprec.models.inference import BundleRecommender

    return ranked(BundleRecommender.from_bundle(demo.bundle_dir), CART)


@pytest.mark.parametrize("inputs, message", [
    ([{"name": "items", "datatype": "BYTES", "shape": [2, 3], "data": ["50", "181", "100"]}],
     "input 'items' has shape [2, 3] (6 values) but its data holds 3"),
    ([{"name": "items", "datatype": "BYTES", "shape": [1, 1], "data": ["50", "181"]}],
     "input 'items' has shape [1, 1] (1 values) but its data holds 2"),
    ([{"name": "items", "datatype": "BYTES", "shape": [1], "data": ["50"]},
      {"name": "k", "datatype": "INT32", "shape": [2], "data": [3]}],
     "input 'k' has shape [2] (2 values) but its data holds 1"),
    ([{"name": "items", "datatype": "BYTES", "shape": [1], "data": ["50"]},
      {"name": "sponsored_item_id", "datatype": "BYTES", "shape": [2], "data": ["50"]},
      {"name": "sponsored_bid", "datatype": "FP32", "shape": [1], "data": [1.0]}],
     "input 'sponsored_item_id' has shape [2] (2 values) but its data holds 1"),
    ([{"name": "items", "datatype": "BYTES", "shape": [1, 1, 1], "data": ["50"]}],
     "input 'items' must have shape [n, L] (n histories) or [L] (one)"),
    ([{"name": "items", "datatype": "INT32", "shape": [1], "data": [50]}], "input 'items' must have datatype BYTES"),
    ([{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["1"]}], "unknown input 'user_id'"),
    ([{"name": "k", "datatype": "INT32", "shape": [1], "data": [3]}], "input 'items' (BYTES, shape [n, L]"),
])
def test_predictor_v2_faults_are_400s_naming_the_input(servers, inputs, message):
    response = infer(servers.predictor, inputs)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_predictor_v2_history_longer_than_the_window_is_a_400(servers, demo):
    window = demo.history_len  # the longest history the features keep
    fits = infer(servers.predictor, [{"name": "items", "datatype": "BYTES", "shape": [window], "data": ["50"] * window}])
    assert fits.status_code == 200, fits.text
    longer = infer(servers.predictor, [{"name": "items", "datatype": "BYTES", "shape": [1, window + 1],
                                        "data": ["50"] * (window + 1)}])
    assert longer.status_code == 400 and f"row 0 holds {window + 1} ids; at most {window}" in longer.json()["error"]


def test_a_campaign_on_a_predictor_without_a_campaigns_table_is_a_503(servers):
    for response in (predict(servers.predictor, [{"items": CART, "campaign": "spring"}]),
                     infer(servers.predictor, [{"name": "items", "datatype": "BYTES", "shape": [1], "data": ["50"]},
                                               {"name": "campaign", "datatype": "BYTES", "shape": [1], "data": ["spring"]}])):
        assert response.status_code == 503, response.text
        assert "without a campaigns table" in response.json()["error"] and "--campaigns" in response.json()["error"]


# --- the transformer's V2 preferences ---------------------------------------------------------


def test_v2_carries_a_new_users_preferences_as_json_per_user(servers, demo):
    import tritonclient.http as triton

    comedy = settled(servers.transformer, {"user_id": "brand-new", "k": 4, "preferences": {"categories": ["Comedy"]}})
    drama = settled(servers.transformer, {"user_id": "brand-new", "k": 4, "preferences": {"categories": ["Drama"]}})
    plain = settled(servers.transformer, {"user_id": "brand-new", "k": 4})
    assert comedy["onboarding"] == "stated_categories" and [i["item_id"] for i in comedy["items"]] != \
        [i["item_id"] for i in drama["items"]]
    users = ["brand-new", "brand-new", "brand-new"]
    stated = [json.dumps({"categories": ["Comedy"]}), json.dumps({"categories": ["Drama"]}), ""]
    client = triton.InferenceServerClient(url=servers.transformer.removeprefix("http://"))
    try:
        for binary in (False, True):
            for _ in range(5):  # asked again while Feast missed its 50 ms timeout (a loaded machine)
                user_in = triton.InferInput("user_id", [3], "BYTES")
                user_in.set_data_from_numpy(np.array([u.encode() for u in users], dtype=object), binary_data=binary)
                pref_in = triton.InferInput("preferences", [3], "BYTES")
                pref_in.set_data_from_numpy(np.array([s.encode() for s in stated], dtype=object), binary_data=binary)
                k_in = triton.InferInput("k", [1], "INT32")
                k_in.set_data_from_numpy(np.array([4], dtype=np.int32), binary_data=binary)
                wanted = [triton.InferRequestedOutput(n, binary_data=False) for n in ("item_id", "fallback")]
                result = client.infer("shoprec", [user_in, pref_in, k_in], outputs=wanted)
                if "features_unavailable" not in texts(result.as_numpy("fallback")):
                    break
            rows = np.asarray(texts(result.as_numpy("item_id"))).reshape(3, 4).tolist()
            assert rows == [[i["item_id"] for i in p["items"]] for p in (comedy, drama, plain)], binary
            assert texts(result.as_numpy("fallback")) == ["unknown_user"] * 3
        names = [i["name"] for i in client.get_model_metadata("shoprec")["inputs"]]
        assert "preferences" in names and "campaign" in names
    finally:
        client.close()
    # One value for every user, and the faults named as the input.
    one = infer(servers.transformer, [{"name": "user_id", "datatype": "BYTES", "shape": [2], "data": ["new-a", "new-b"]},
                                      {"name": "k", "datatype": "INT32", "shape": [1], "data": [4]},
                                      {"name": "preferences", "datatype": "BYTES", "shape": [1],
                                       "data": [json.dumps({"categories": ["Comedy"]})]}])
    assert one.status_code == 200, one.text
    for inputs, message in [
        ([{"name": "preferences", "datatype": "BYTES", "shape": [1], "data": ['{"categories": ["Comedyy"]}']}],
         "input preferences (user_id[0]): unknown category 'Comedyy'"),
        ([{"name": "preferences", "datatype": "BYTES", "shape": [1], "data": ["Comedy"]}],
         "input preferences[0] is not JSON"),
        ([{"name": "preferences", "datatype": "BYTES", "shape": [1], "data": ['{"categories": "Comedy"}']}],
         "input preferences[0].categories must be a list"),
        ([{"name": "preferences", "datatype": "BYTES", "shape": [2], "data": ["{}"]}],
         "input 'preferences' has shape [2] (2 values) but its data holds 1"),
    ]:
        bad = infer(servers.transformer, [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["new-a"]},
                                          *inputs])
        assert bad.status_code == 400, bad.text
        assert message in bad.json()["error"]
