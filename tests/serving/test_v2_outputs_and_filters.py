"""V2 infer on both servers over real HTTP: only the outputs a client asks for come back, each
in binary or JSON as asked (one shared `shoprec.kserve.v2.infer_response`), tested with a stock
client (tritonclient); and V1's `exclude` / `category` (both servers) and `reasons` (the
predictor) as V2 inputs, answered as V1 answers them, their shapes checked (400 naming the
input)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from shoprec.serving.catalog import load_catalog
from tests.serving.conftest import predict
from tests.serving.test_list_options import CART, settled

pytestmark = pytest.mark.integration


def infer(base: str, inputs: list[dict], outputs: list[dict] | None = None) -> httpx.Response:
    body: dict = {"inputs": inputs}
    if outputs is not None:
        body["outputs"] = outputs
    return httpx.post(f"{base}/v2/models/shoprec/infer", json=body, timeout=30)


def texts(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def bytes_input(triton, name: str, rows: list, binary: bool):
    array = np.array([[str(v).encode() for v in row] for row in rows] if rows and isinstance(rows[0], list)
                     else [str(v).encode() for v in rows], dtype=object)
    tensor = triton.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def int_input(triton, name: str, value: int, binary: bool):
    tensor = triton.InferInput(name, [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int32), binary_data=binary)
    return tensor


def asked(base: str, inputs: list, wanted: dict[str, bool], tries: int = 1):
    """tritonclient's infer asking for `wanted` ({output: binary}); the result and its JSON
    header. Asked again (up to `tries`) while Feast missed the transformer's 50 ms timeout."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=base.removeprefix("http://"))
    try:
        for _ in range(tries):
            result = client.infer("shoprec", inputs, outputs=[triton.InferRequestedOutput(name, binary_data=binary)
                                                              for name, binary in wanted.items()])
            header = result.get_response()
            fallback = result.as_numpy("fallback") if "fallback" in wanted else None
            if fallback is None or "features_unavailable" not in texts(fallback):
                break
    finally:
        client.close()
    return result, header


def assert_outputs_as_asked(header: dict, wanted: dict[str, bool]) -> None:
    assert [o["name"] for o in header["outputs"]] == list(wanted)  # only those, in the order asked
    for output in header["outputs"]:
        binary = wanted[output["name"]]
        assert ("data" in output) is not binary, output
        assert ("binary_data_size" in (output.get("parameters") or {})) is binary, output


# --- the outputs a client asks for ----------------------------------------------------------


@pytest.mark.parametrize("wanted", [{"score": True, "item_id": False}, {"item_id": True}, {"sponsored": False}])
def test_the_predictor_answers_only_the_outputs_asked_for_binary_where_asked(servers, wanted):
    import tritonclient.http as triton

    expected = predict(servers.predictor, [{"items": CART, "k": 4}]).json()["predictions"][0]
    result, header = asked(servers.predictor, [bytes_input(triton, "items", [CART], binary=True),
                                               int_input(triton, "k", 4, binary=False)], wanted)

    assert_outputs_as_asked(header, wanted)
    if "item_id" in wanted:
        assert texts(result.as_numpy("item_id")) == expected["items"]
    if "score" in wanted:
        np.testing.assert_allclose(result.as_numpy("score").ravel(), expected["scores"], rtol=1e-5)
    if "sponsored" in wanted:
        assert result.as_numpy("sponsored").tolist() == [[False] * 4]


@pytest.mark.parametrize("wanted", [{"fallback": False, "item_id": True}, {"reason": True, "fallback": True},
                                    {"fallback": False, "score": False}])
def test_the_transformer_answers_only_the_outputs_asked_for_binary_where_asked(servers, demo, wanted):
    import tritonclient.http as triton

    user = str(demo.sequences.users[0])
    expected = settled(servers.transformer, {"user_id": user, "k": 4})
    result, header = asked(servers.transformer, [bytes_input(triton, "user_id", [user], binary=False),
                                                 int_input(triton, "k", 4, binary=True)], wanted, tries=5)

    assert_outputs_as_asked(header, wanted)
    assert texts(result.as_numpy("fallback")) == [""]  # the model answered, as in V1
    if "item_id" in wanted:
        assert texts(result.as_numpy("item_id")) == [i["item_id"] for i in expected["items"]]
    if "reason" in wanted:
        assert texts(result.as_numpy("reason")) == [i["reason"] for i in expected["items"]]
    if "score" in wanted:
        np.testing.assert_allclose(result.as_numpy("score").ravel(), [i["score"] for i in expected["items"]],
                                   rtol=1e-5)


def test_without_outputs_every_output_comes_back_as_json(servers):
    response = infer(servers.transformer, [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["1"]}])
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["item_id", "score", "reason", "sponsored", "fallback"]
    assert all("data" in o for o in response.json()["outputs"])


@pytest.mark.parametrize("server, inputs, outputs, message", [
    ("predictor", [{"name": "items", "datatype": "BYTES", "shape": [1], "data": ["50"]}], [{"name": "nope"}],
     "unknown output 'nope'; this answer's outputs are item_id, score, sponsored"),
    ("predictor", [{"name": "items", "datatype": "BYTES", "shape": [1], "data": ["50"]}],
     [{"name": "reason_item_id"}], "(reason_item_id and history_used come with input 'reasons')"),
    ("predictor", [{"name": "items", "datatype": "BYTES", "shape": [1], "data": ["50"]}],
     [{"name": "score"}, {"name": "score"}], "output 'score' is asked for twice"),
    ("transformer", [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["1"]}], [{"name": "scores"}],
     "unknown output 'scores'; this answer's outputs are item_id, score, reason, sponsored, fallback"),
])
def test_an_output_the_answer_does_not_have_is_a_400_naming_it(servers, server, inputs, outputs, message):
    response = infer(getattr(servers, server), inputs, outputs)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


# --- exclude, category and reasons as V2 inputs ------------------------------------------------


def test_predictor_v2_takes_exclude_category_and_reasons_as_v1_does(servers, demo):
    histories = [CART, ["50", "181"]]
    plain = predict(servers.predictor, [{"items": h, "k": 5} for h in histories]).json()["predictions"]
    excluded = [plain[0]["items"][:2], plain[1]["items"][:1]]
    v1 = predict(servers.predictor, [{"items": histories[0], "k": 5, "exclude": excluded[0], "category": "Drama",
                                      "reasons": True},
                                     {"items": histories[1], "k": 5, "exclude": excluded[1], "reasons": True}])
    assert v1.status_code == 200, v1.text
    expected = v1.json()["predictions"]
    response = infer(servers.predictor, [
        {"name": "items", "datatype": "BYTES", "shape": [2, 3], "data": CART + ["50", "181", ""]},
        {"name": "k", "datatype": "INT32", "shape": [1], "data": [5]},
        {"name": "exclude", "datatype": "BYTES", "shape": [2, 2], "data": excluded[0] + excluded[1] + [""]},
        {"name": "category", "datatype": "BYTES", "shape": [2], "data": ["Drama", ""]},
        {"name": "reasons", "datatype": "BOOL", "shape": [1], "data": [True]}])
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    width = max(len(p["items"]) for p in expected)
    padded = [p["items"] + [""] * (width - len(p["items"])) for p in expected]
    assert outputs["item_id"]["data"] == [i for row in padded for i in row]
    catalog = load_catalog(demo.home.features, demo.items_path)
    assert {catalog.category_of(i) for i in expected[0]["items"]} == {"Drama"}
    assert not set(excluded[0]) & set(expected[0]["items"]) and not set(excluded[1]) & set(expected[1]["items"])
    reasons = [[r or "" for r in p["reasons"]] + [""] * (width - len(p["items"])) for p in expected]
    assert outputs["reason_item_id"]["data"] == [r for row in reasons for r in row]
    assert outputs["reason_item_id"]["shape"] == [2, width]
    assert outputs["history_used"]["data"] == [p["history_used"] for p in expected] == [3, 2]


def test_predictor_v2_exclude_of_shape_e_and_one_category_apply_to_every_history(servers):
    histories = [CART, ["50", "181"]]
    plain = predict(servers.predictor, [{"items": h, "k": 4} for h in histories]).json()["predictions"]
    excluded = sorted({plain[0]["items"][0], plain[1]["items"][0]})
    expected = predict(servers.predictor, [{"items": h, "k": 4, "exclude": excluded, "category": "Comedy"}
                                           for h in histories]).json()["predictions"]
    response = infer(servers.predictor, [
        {"name": "items", "datatype": "BYTES", "shape": [2, 3], "data": CART + ["50", "181", ""]},
        {"name": "k", "datatype": "INT32", "shape": [1], "data": [4]},
        {"name": "exclude", "datatype": "BYTES", "shape": [len(excluded)], "data": excluded},
        {"name": "category", "datatype": "BYTES", "shape": [1], "data": ["Comedy"]}])
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["item_id"]["data"] == expected[0]["items"] + expected[1]["items"]
    assert "reason_item_id" not in outputs and "history_used" not in outputs  # not asked for


def test_transformer_v2_takes_exclude_and_category_as_v1_does(servers, demo):
    import tritonclient.http as triton

    users = [str(u) for u in demo.sequences.users[:2]]
    plain = [settled(servers.transformer, {"user_id": u, "k": 5}) for u in users]
    excluded = [[i["item_id"] for i in p["items"][:2]] for p in plain]
    expected = [settled(servers.transformer, {"user_id": users[0], "k": 5, "exclude": excluded[0],
                                              "category": "Drama"}),
                settled(servers.transformer, {"user_id": users[1], "k": 5, "exclude": excluded[1]})]
    assert all(p["fallback"] is None for p in expected)
    for binary in (False, True):
        result, _ = asked(servers.transformer, [
            bytes_input(triton, "user_id", users, binary),
            int_input(triton, "k", 5, binary),
            bytes_input(triton, "exclude", excluded, binary),
            bytes_input(triton, "category", ["Drama", ""], binary)],
            {"item_id": binary, "fallback": False}, tries=5)
        assert texts(result.as_numpy("fallback")) == ["", ""], binary
        assert np.asarray(texts(result.as_numpy("item_id"))).reshape(2, 5).tolist() == \
            [[i["item_id"] for i in p["items"]] for p in expected], binary
    assert {i["category"] for i in expected[0]["items"]} == {"Drama"}


def test_a_cold_users_fallback_honours_v2_exclude_and_category(servers):
    v1 = settled(servers.transformer, {"user_id": "brand-new", "k": 4, "category": "Comedy"})
    avoided = [i["item_id"] for i in v1["items"][:2]]
    expected = settled(servers.transformer, {"user_id": "brand-new", "k": 4, "category": "Comedy", "exclude": avoided})
    response = infer(servers.transformer, [
        {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["brand-new"]},
        {"name": "k", "datatype": "INT32", "shape": [1], "data": [4]},
        {"name": "exclude", "datatype": "BYTES", "shape": [1, 2], "data": avoided},
        {"name": "category", "datatype": "BYTES", "shape": [1], "data": ["Comedy"]}])
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["item_id"]["data"] == [i["item_id"] for i in expected["items"]]
    assert not set(avoided) & set(outputs["item_id"]["data"]) and outputs["fallback"]["data"] == ["unknown_user"]


FIRST = {"predictor": {"name": "items", "datatype": "BYTES", "shape": [1], "data": ["50"]},
         "transformer": {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["1"]}}
FILTER_FAULTS = [
    ({"name": "exclude", "datatype": "BYTES", "shape": [1, 3], "data": ["50", "181"]},
     "input 'exclude' has shape [1, 3] (3 values) but its data holds 2"),
    ({"name": "exclude", "datatype": "BYTES", "shape": [2, 1], "data": ["50", "181"]},
     "input 'exclude' has shape [2, 1]: 2 rows, but the request has 1 user(s)"),
    ({"name": "exclude", "datatype": "BYTES", "shape": [1, 1, 1], "data": ["50"]},
     "input 'exclude' must have shape [E] (the same ids for every user) or [n, E]"),
    ({"name": "exclude", "datatype": "INT32", "shape": [1], "data": [50]}, "input 'exclude' must have datatype BYTES"),
    ({"name": "exclude", "datatype": "BYTES", "shape": [1001], "data": [str(i) for i in range(1001)]},
     "input 'exclude' holds 1001 ids; at most 1000"),
    ({"name": "category", "datatype": "BYTES", "shape": [2], "data": ["Drama"]},
     "input 'category' has shape [2] (2 values) but its data holds 1"),
    ({"name": "category", "datatype": "BYTES", "shape": [2], "data": ["Drama", "Comedy"]},
     "input 'category' must hold 1 value or one per user (1), got 2"),
    ({"name": "category", "datatype": "BYTES", "shape": [1], "data": ["x" * 300]},
     "input category[0] must be a non-empty string of at most 256 characters"),
]


@pytest.mark.parametrize("server", ["predictor", "transformer"])
@pytest.mark.parametrize("tensor, message", FILTER_FAULTS)
def test_v2_filter_faults_are_400s_naming_the_input(servers, server, tensor, message):
    response = infer(getattr(servers, server), [FIRST[server], tensor])
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize("tensor, message", [
    ({"name": "reasons", "datatype": "INT32", "shape": [1], "data": [1]}, "input 'reasons' must have datatype BOOL"),
    ({"name": "reasons", "datatype": "BOOL", "shape": [2], "data": [True]},
     "input 'reasons' has shape [2] (2 values) but its data holds 1"),
    ({"name": "reasons", "datatype": "BOOL", "shape": [1], "data": ["yes"]}, "input reasons[0] must be true or false"),
])
def test_predictor_v2_reasons_faults_are_400s_naming_the_input(servers, tensor, message):
    response = infer(servers.predictor, [FIRST["predictor"], tensor])
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_the_transformer_takes_no_reasons_input_its_answers_always_have_them(servers):
    response = infer(servers.transformer, [FIRST["transformer"],
                                           {"name": "reasons", "datatype": "BOOL", "shape": [1], "data": [True]}])
    assert response.status_code == 400 and "unknown input 'reasons'" in response.json()["error"]
