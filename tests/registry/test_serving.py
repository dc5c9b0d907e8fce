"""The predictor: V1 parsing, the infra check against the real KServe server, and a live
promotion / rollback picked up by a running server with no failed request."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from shoprec.models.bundle import WEIGHTS_FILE, save_bundle
from shoprec.errors import InfraCheckError, InvalidRequest
from shoprec.models.inference import BundleRecommender
from shoprec.kserve.infra_check import canned_instances, check_bundle, predict
from shoprec.kserve.process import running_predictor
from shoprec.models.baselines import MostPop
from shoprec.serving.predictor import answer
from shoprec.serving.requests import MAX_INSTANCES, Query, parse_v1
from tests.registry.conftest import VOCAB, make_features, make_window_bundle


def test_parse_v1_reads_instances_and_defaults_k():
    assert parse_v1({"instances": [{"items": ["i1", 7]}, {"items": [], "k": 3}]}) == [
        Query(("i1", "7"), 10), Query((), 3)]


@pytest.mark.parametrize("payload, message", [
    (b'{"instances": []}', "Content-Type: application/json"),
    ({"inputs": []}, '"instances"'),
    ({"instances": []}, "non-empty list"),
    ({"instances": [{"items": "i1"}]}, r"instances\[0\].items must be a list"),
    ({"instances": [{"items": [["i1"]]}]}, r"instances\[0\].items\[0\] must be a string or integer"),
    ({"instances": [{"items": [], "k": 0}]}, r"instances\[0\].k must be an integer between 1 and"),
    ({"instances": [{"items": [], "k": "5"}]}, r"instances\[0\].k"),
    ({"instances": [{"items": [], "user": "u1"}]}, r"unknown field\(s\) \['user'\]"),
    ({"instances": [{"items": []}] * (MAX_INSTANCES + 1)}, f"at most {MAX_INSTANCES}"),
])
def test_parse_v1_names_what_is_wrong(payload, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_v1(payload)


def test_answer_matches_recommend_for_each_query(bundle_factory):
    recommender = BundleRecommender.from_bundle(bundle_factory("markov1"))
    queries = [Query(("i4",), 3), Query(("i1", "i2"), 5), Query((), 3)]
    got = answer(recommender, queries)
    for query, row in zip(queries, got):
        expected = recommender.recommend(list(query.history), query.k)
        assert row["items"] == [r.item_id for r in expected]
        assert row["scores"] == [r.score for r in expected]
    assert got[0]["items"][0] == "i5"  # Markov-1 learned i4 -> i5


@pytest.mark.integration
def test_infra_check_passes_a_bundle_that_serves(bundle_factory):
    result = check_bundle(bundle_factory("markov1"))

    assert result.passed, result.failures
    assert result.requests == 3 and "answered as BundleRecommender.recommend does" in result.reason
    assert result.as_check().passed


@pytest.mark.integration
def test_infra_check_rejects_a_bundle_that_fails_to_load(bundle_factory):
    bundle = bundle_factory()
    weights = bundle / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")

    result = check_bundle(bundle)

    assert not result.passed
    assert "predictor exited" in result.reason and "BundleIntegrityError" in result.reason
    assert "refusing to load" in result.reason


@pytest.mark.integration
def test_infra_check_rejects_a_bundle_that_loads_but_cannot_answer(tmp_path):
    # A model over 20 items shipped with a 12-item vocabulary: it loads, then fails to answer.
    model = MostPop(20).fit([np.arange(13, 21, dtype=np.int64)] * 3)
    bundle = save_bundle(tmp_path / "broken", model, VOCAB, exclude_seen=True, metrics={})

    result = check_bundle(bundle)

    assert not result.passed
    assert "answered HTTP 500" in result.reason
    assert result.failures[0].startswith("batch request answered HTTP 500")


@pytest.mark.integration
def test_the_predictor_refuses_a_model_reading_a_longer_window_than_its_features(tmp_path):
    bundle = make_window_bundle(tmp_path / "sasrec-20", max_len=20)
    features = make_features(tmp_path / "features", max_len=10)

    with pytest.raises(InfraCheckError) as refused:
        with running_predictor(["--model_dir", str(bundle), "--catalog", str(features)]):
            pass

    message = str(refused.value)
    assert "exited" in message and "BundleError" in message
    assert "max_len=20" in message and "max_len=10" in message and "rebuild the features" in message


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.integration
def test_a_running_server_follows_promotion_and_rollback_without_a_failed_request(
        registry, bundle_factory):
    old = registry.register(bundle_factory("mostpop")).version
    new = registry.register(bundle_factory("markov1")).version
    registry.promote(old, reason="champion")
    instances = [{"items": ["i4"], "k": 3}, {"items": ["i9", "i10"], "k": 5}]
    expected = {v: answer(registry.load(v), parse_v1({"instances": instances})) for v in (old, new)}
    assert expected[old] != expected[new]

    with running_predictor(["--registry", registry.uri, "--poll_seconds", "0.1"]) as base:
        seen: list[tuple[int, dict]] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                seen.append(predict(base, instances, timeout=10))

        client = threading.Thread(target=hammer)
        client.start()
        try:
            wait_for(lambda: len(seen) >= 3)
            registry.promote(new, reason="better")
            wait_for(lambda: seen[-1][1].get("model_version") == new)
            count_at_switch = len(seen)
            wait_for(lambda: len(seen) >= count_at_switch + 3)
            registry.rollback(reason="undo")
            wait_for(lambda: seen[-1][1].get("model_version") == old)
            wait_for(lambda: len(seen) >= count_at_switch + 6)
        finally:
            stop.set()
            client.join(timeout=30)

    statuses = {status for status, _ in seen}
    assert statuses == {200}, [body for status, body in seen if status != 200][:3]
    for _, body in seen:  # every answer is wholly the old model's or wholly the new one's
        assert body["predictions"] == expected[body["model_version"]]
    versions = [body["model_version"] for _, body in seen]
    switches = [b for a, b in zip(versions, versions[1:]) if a != b]
    assert switches == [new, old]


def test_canned_instances_cover_cold_start_unknown_items_and_k():
    instances = canned_instances(VOCAB)
    assert {"items": [], "k": 10} in instances
    assert any("no-such-item-shoprec-check" in i["items"] for i in instances)
    assert {i["k"] for i in instances} >= {1, 10}
