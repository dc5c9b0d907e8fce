"""The servers on a bad day, over real HTTP: bodies whatever their Content-Type, a stock Open
Inference Protocol client (tritonclient), malformed V2 shapes, oversized bodies, bounded error
answers, a misconfigured predictor, and health probes under a flood of large requests."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest

from shoprec.kserve.process import running_predictor
from shoprec.serving.requests import MAX_BODY_BYTES, MAX_MESSAGE_CHARS, MAX_TOTAL_IDS
from tests.serving.conftest import predict

pytestmark = pytest.mark.integration

FORM = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends


def users_of(demo, n: int) -> list[str]:
    return [str(u) for u in demo.sequences.users[:n]]


def post(url: str, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers or {}, timeout=60)


@pytest.mark.parametrize("headers", [FORM, {}, {"content-type": "text/plain"},
                                     {"content-type": "application/json; charset=utf-8"}],
                         ids=["form", "none", "text", "json-charset"])
def test_a_json_body_is_json_whatever_the_content_type(servers, demo, headers):
    user = users_of(demo, 1)[0]
    v1 = json.dumps({"instances": [{"user_id": user, "k": 3}]})
    response = post(f"{servers.transformer}/v1/models/shoprec:predict", v1, headers)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["user_id"] == user

    cart = json.dumps({"instances": [{"items": ["50", "181"], "k": 3}]})
    response = post(f"{servers.predictor}/v1/models/shoprec:predict", cart, headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"][0]["items"]) == 3

    v2 = json.dumps({"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": [user]}]})
    response = post(f"{servers.transformer}/v2/models/shoprec/infer", v2, headers)
    assert response.status_code == 200, response.text
    assert {o["name"] for o in response.json()["outputs"]} == {"item_id", "score", "reason", "sponsored", "fallback"}


@pytest.mark.parametrize("path", ["/v1/models/shoprec:predict", "/v2/models/shoprec/infer"])
def test_a_form_body_that_is_not_json_is_a_clear_400(servers, path):
    for base in (servers.transformer, servers.predictor):
        response = post(f"{base}{path}", "user_id=1&k=5", FORM)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "not JSON" in error and "application/x-www-form-urlencoded" in error
        assert "Content-Type: application/json" in error


def test_tritonclient_json_only_and_binary_infer_metadata_ready_live(servers, demo):
    import tritonclient.http as triton

    users = users_of(demo, 2) + ["never-seen-shopper"]
    v1 = predict(servers.transformer, [{"user_id": u, "k": 3} for u in users]).json()["predictions"]
    expected = [i["item_id"] for p in v1 for i in p["items"]]
    client = triton.InferenceServerClient(url=servers.transformer.removeprefix("http://"))
    try:
        for binary in (False, True):
            user_in = triton.InferInput("user_id", [len(users)], "BYTES")
            user_in.set_data_from_numpy(np.array([u.encode() for u in users], dtype=object), binary_data=binary)
            k_in = triton.InferInput("k", [1], "INT32")
            k_in.set_data_from_numpy(np.array([3], dtype=np.int32), binary_data=binary)
            wanted = [triton.InferRequestedOutput(n, binary_data=False) for n in ("item_id", "score", "fallback")]
            result = client.infer("shoprec", [user_in, k_in], outputs=wanted)
            items = result.as_numpy("item_id")
            assert items.shape == (3, 3), binary
            assert [i.decode() if isinstance(i, bytes) else i for i in items.ravel()] == expected, binary
            fallback = [f.decode() if isinstance(f, bytes) else f for f in result.as_numpy("fallback")]
            assert fallback == ["", "", "unknown_user"], binary
        metadata = client.get_model_metadata("shoprec")
        assert [i["name"] for i in metadata["inputs"]][:2] == ["user_id", "k"]
        assert client.is_model_ready("shoprec")
    finally:
        client.close()
    for base in (servers.transformer, servers.predictor):
        client = triton.InferenceServerClient(url=base.removeprefix("http://"))
        try:
            assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("shoprec")
            assert client.get_model_metadata("shoprec")["name"] == "shoprec"
        finally:
            client.close()


@pytest.mark.parametrize("inputs, message", [
    ([{"name": "user_id", "datatype": "BYTES", "shape": [3], "data": ["1"]}],
     "input 'user_id' has shape [3] (3 values) but its data holds 1"),
    ([{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["1", "2"]}],
     "input 'user_id' has shape [1] (1 values) but its data holds 2"),
    ([{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["1"]},
      {"name": "k", "datatype": "INT32", "shape": [2], "data": [3]}],
     "input 'k' has shape [2] (2 values) but its data holds 1"),
])
def test_a_v2_shape_that_disagrees_with_its_data_is_a_400_naming_the_input(servers, inputs, message):
    response = httpx.post(f"{servers.transformer}/v2/models/shoprec/infer", json={"inputs": inputs}, timeout=30)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_a_body_over_the_cap_is_a_413_before_it_is_read(servers):
    huge = b'{"instances": [' + b" " * MAX_BODY_BYTES + b"]}"
    for base in (servers.transformer, servers.predictor):
        for path in ("/v1/models/shoprec:predict", "/v2/models/shoprec/infer"):
            response = post(f"{base}{path}", huge, {"content-type": "application/json"})
            assert response.status_code == 413, (base, path, response.text)
            assert str(MAX_BODY_BYTES) in response.json()["error"]

    def chunks():  # no Content-Length: the cap applies while the body streams in
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    response = httpx.post(f"{servers.predictor}/v1/models/shoprec:predict", content=chunks(),
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413, response.text


def test_ids_in_all_and_a_history_longer_than_the_model_window_are_400s(servers, demo):
    many = [{"items": [], "exclude": [str(n) for n in range(1000)]}] * (MAX_TOTAL_IDS // 1000 + 1)
    response = predict(servers.predictor, many[:256])
    assert response.status_code == 400 and f"at most {MAX_TOTAL_IDS} per request" in response.json()["error"]

    window = demo.history_len  # the longest history the demo's feature tables keep (> the model's window)
    fits = predict(servers.predictor, [{"items": ["50"] * window, "k": 2}])
    assert fits.status_code == 200, fits.text
    longer = predict(servers.predictor, [{"items": ["50"] * (window + 1), "k": 2}])
    assert longer.status_code == 400
    assert f"instances[0].items holds {window + 1} ids; at most {window}" in longer.json()["error"]
    cart = predict(servers.transformer, [{"items": ["50"] * (window + 1), "k": 2}])
    assert cart.status_code == 400 and f"at most {window}" in cart.json()["error"]


def test_400s_do_not_echo_unbounded_values(servers):
    secret = "x" * 100_000
    for base, instance in ((servers.transformer, {"user_id": "1", "k": secret}),
                           (servers.transformer, {"user_id": "1", secret: 1}),
                           (servers.predictor, {"items": [], "k": secret})):
        response = predict(base, [instance])
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert len(error) <= MAX_MESSAGE_CHARS + 20 and "k" in error, error[:200]
    v2 = httpx.post(f"{servers.transformer}/v2/models/shoprec/infer", timeout=30,
                    json={"inputs": [{"name": secret, "datatype": "BYTES", "shape": [1], "data": ["1"]}]})
    assert v2.status_code == 400 and len(v2.json()["error"]) <= MAX_MESSAGE_CHARS + 20


def test_a_500_says_nothing_of_the_servers_internals(servers):
    # A V2 binary body whose JSON header length is not a number: KServe's int() raises inside.
    for base in (servers.transformer, servers.predictor):
        response = post(f"{base}/v2/models/shoprec/infer", b'{"inputs": []}',
                        {"inference-header-content-length": "twelve", "x-request-id": "req-500"})
        assert response.status_code == 500, response.text
        error = response.json()["error"]
        assert "invalid literal" not in error and "ValueError" not in error and "Traceback" not in error
        assert "req-500" in error and len(error) <= MAX_MESSAGE_CHARS


def test_a_category_filter_on_a_predictor_without_catalogue_is_a_503_not_a_400(demo):
    with running_predictor(["--model_dir", str(demo.bundle_dir)]) as base:
        response = predict(base, [{"items": ["50"], "k": 3, "category": "Drama"}])
        assert response.status_code == 503, response.text
        assert "without an item catalogue" in response.json()["error"]
        assert predict(base, [{"items": ["50"], "k": 3}]).status_code == 200


def test_health_keeps_answering_under_a_flood_of_large_requests(demo):
    window = demo.max_len
    large = {"instances": [{"items": [str(i) for i in range(1, window + 1)], "k": 100, "reasons": True}] * 256}
    body = json.dumps(large)
    with running_predictor(["--model_dir", str(demo.bundle_dir), "--scoring_threads", "1",
                            "--max_queued", "64"]) as base:
        started = time.perf_counter()
        one = post(f"{base}/v1/models/shoprec:predict", body, {"content-type": "application/json"})
        single_s = time.perf_counter() - started
        assert one.status_code == 200, one.text
        assert single_s > 0.5, f"a large request took {single_s:.2f} s: too small to stall anything"

        statuses: list[int] = []

        def flood() -> None:
            with httpx.Client(timeout=300) as client:
                statuses.append(client.post(f"{base}/v1/models/shoprec:predict", content=body,
                                            headers={"content-type": "application/json"}).status_code)

        threads = [threading.Thread(target=flood) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # the flood is in
        probes = []
        with httpx.Client(timeout=30) as client:
            for path in ["/v2/health/live", "/v2/health/ready", "/v1/models/shoprec"] * 4:
                before = time.perf_counter()
                response = client.get(f"{base}{path}")
                probes.append((path, response.status_code, time.perf_counter() - before))
                time.sleep(0.05)
        still_scoring = any(thread.is_alive() for thread in threads)
        for thread in threads:
            thread.join(timeout=300)
    assert still_scoring, "the flood was over before the probes: the test proves nothing"
    assert all(status == 200 for _, status, _ in probes), probes
    slowest = max(seconds for _, _, seconds in probes)
    assert slowest < min(0.5, single_s / 2), (slowest, single_s, probes)
    assert statuses == [200] * 6
