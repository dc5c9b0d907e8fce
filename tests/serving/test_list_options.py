"""Sponsored slots, diversity re-ranking and new-user onboarding over real HTTP: the real
predictor and transformer (KServe ModelServer processes) on the real demo home (ML-100K slice,
Feast store, a trained SASRec). What the answers must be is worked out here from the same
bundle and data with the library, never from the servers' own output."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from shoprec.models.inference import BundleRecommender
from shoprec.ranking.diversity import intra_list_diversity
from shoprec.ranking.onboarding import OnboardingPopularity
from shoprec.ranking.relevance import percentile_relevance
from shoprec.ranking.sponsored import DEFAULT_FLOOR, slot_positions
from shoprec.serving.catalog import load_catalog
from shoprec.serving.cold_start import load_onboarding
from shoprec.serving.diversity import catalog_categories
from shoprec.serving.predictor import filtered_topk
from shoprec.serving.requests import Query
from shoprec.kserve.process import running_predictor
from tests.serving.conftest import predict

pytestmark = pytest.mark.integration

CART = ["50", "181", "100"]  # a cart: its history is exactly these items, no Feast in the way


@pytest.fixture(scope="module")
def model(demo) -> BundleRecommender:
    return BundleRecommender.from_bundle(demo.bundle_dir)


def ranked(model: BundleRecommender, history: list[str]) -> tuple[list[str], np.ndarray]:
    """Every item the model may show for this history, best first, and each one's relevance
    (percentile in the full ranking), from the bundle itself."""
    vocab = model.bundle.vocab
    _, row = filtered_topk(model, Query(tuple(history), k=vocab.n_items), None)
    order = [i for i in np.argsort(-row[0].numpy(), kind="stable") if i > 0 and np.isfinite(row[0, i].item())]
    return vocab.item_ids(np.asarray(order)), percentile_relevance(row, np.asarray(order))


def user_history(demo, user: str) -> list[str]:
    """What Feast serves as the user's history: the newest history_len of the training log."""
    row = list(demo.sequences.users).index(user)
    return demo.vocab.item_ids(np.asarray(demo.sequences.items[row][-demo.history_len:]))


def settled(base: str, instance: dict, tries: int = 5) -> dict:
    """The one prediction for `instance`, asked again while Feast missed the 50 ms feature
    timeout (a loaded test machine): these tests are about what follows the features."""
    for _ in range(tries):
        response = predict(base, [instance])
        assert response.status_code == 200, response.text
        prediction = response.json()["predictions"][0]
        if prediction["fallback"] != "features_unavailable":
            break
    return prediction


def ids(prediction: dict) -> list[str]:
    return [i["item_id"] for i in prediction["items"]]


# --- sponsored slots -------------------------------------------------------------------------


def test_sponsored_items_above_the_floor_are_placed_and_one_below_it_never_appears(servers, model):
    items, relevance = ranked(model, CART)
    above = [i for i, r in zip(items[10:], relevance[10:]) if r > DEFAULT_FLOOR][:3]
    below = next(i for i, r in zip(items, relevance) if r < DEFAULT_FLOOR - 0.1)
    plain = predict(servers.transformer, [{"items": CART, "k": 10}]).json()["predictions"][0]
    assert ids(plain) == items[:10] and all(i["sponsored"] is False for i in plain["items"])

    # The item below the floor bids a thousand times more: it still never appears.
    sponsored = [{"item_id": below, "bid": 1000.0}] + [{"item_id": i, "bid": 1.0} for i in above]
    response = predict(servers.transformer, [{"items": CART, "k": 10, "sponsored": sponsored}])

    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    assert below not in ids(answer) and len(answer["items"]) == 10
    flags = [i["sponsored"] for i in answer["items"]]
    assert [n for n, f in enumerate(flags) if f] == slot_positions(2, 10) == [1, 4]  # default: 2 slots
    # Equal bids: ranked by relevance, so the best two candidates above the floor, best first.
    assert [ids(answer)[n] for n in (1, 4)] == above[:2]
    assert [i for i, f in zip(ids(answer), flags) if not f] == ids(plain)[:8]  # organic order kept
    assert {answer["items"][n]["reason"] for n in (1, 4)} == {"sponsored"}


@pytest.mark.parametrize("slots", [0, 1, 3])
def test_sponsored_slots_caps_the_paid_items(servers, model, slots):
    items, relevance = ranked(model, CART)
    above = [i for i, r in zip(items[10:], relevance[10:]) if r > DEFAULT_FLOOR][:5]
    sponsored = [{"item_id": i, "bid": 2.0} for i in above]
    response = predict(servers.transformer, [{"items": CART, "k": 10, "sponsored": sponsored,
                                              "sponsored_slots": slots}])
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    assert sum(i["sponsored"] for i in answer["items"]) == slots
    if slots == 0:
        assert ids(answer) == items[:10]


def test_the_predictor_alone_marks_sponsored_items_and_an_unknown_one_is_a_400(servers, model):
    items, relevance = ranked(model, CART)
    best_outside = items[10]
    assert relevance[10] > DEFAULT_FLOOR
    response = predict(servers.predictor, [{"items": CART, "k": 5, "sponsored": [{"item_id": best_outside, "bid": 1}]}])
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    assert answer["sponsored"] == [False, True, False, False, False] and answer["items"][1] == best_outside
    assert len(answer["scores"]) == 5

    unknown = predict(servers.predictor, [{"items": CART, "sponsored": [{"item_id": "no-such-item", "bid": 1}]}])
    assert unknown.status_code == 400 and "unknown sponsored item(s) 'no-such-item'" in unknown.json()["error"]
    # Through the transformer, the error names the client's instance: the cold-start one before
    # it never reached the predictor, whose own numbering starts at the cart.
    through = predict(servers.transformer, [{"user_id": "never-seen-shopper"},
                                            {"items": CART, "sponsored": [{"item_id": "no-such-item", "bid": 1}]}])
    assert through.status_code == 400, through.text
    assert "instances[1]: unknown sponsored item(s) 'no-such-item'" in through.json()["error"]


def test_v2_takes_sponsored_inputs_and_marks_them_in_a_bool_output(servers, demo, model):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    user = str(demo.sequences.users[0])
    items, relevance = ranked(model, user_history(demo, user))
    candidate = next(i for i, r in zip(items[5:], relevance[5:]) if r > DEFAULT_FLOOR)

    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            inputs = [InferInput("user_id", [2], "BYTES", [user, "never-seen-shopper"]),
                      InferInput("k", [1], "INT32", [5]),
                      InferInput("sponsored_item_id", [1], "BYTES", [candidate]),
                      InferInput("sponsored_bid", [1], "FP32", [1.5])]
            return await client.infer(servers.transformer, InferRequest("shoprec", inputs), model_name="shoprec")
        finally:
            await client.close()

    outputs = {o.name: o for o in asyncio.run(call()).outputs}
    assert outputs["sponsored"].datatype == "BOOL" and outputs["sponsored"].shape == [2, 5]
    # The known user gets the paid item in the second slot; the cold-start one never does.
    assert outputs["sponsored"].data == [False, True, False, False, False] + [False] * 5
    assert outputs["item_id"].data[1] == candidate and candidate not in outputs["item_id"].data[:1] + outputs["item_id"].data[2:5]
    metadata = httpx.get(f"{servers.transformer}/v2/models/shoprec").json()
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]}["sponsored"] == "BOOL"


# --- diversity -------------------------------------------------------------------------------


def test_diversity_zero_changes_nothing_and_more_raises_intra_list_diversity(servers, demo, model):
    catalog = load_catalog(demo.home.features, demo.items_path)  # what the predictor was given
    features = catalog_categories(catalog, model.bundle.vocab)
    users = [str(u) for u in demo.sequences.users[:6]]
    plain = predict(servers.transformer, [{"user_id": u, "k": 10} for u in users]).json()["predictions"]
    zero = predict(servers.transformer, [{"user_id": u, "k": 10, "diversity": 0} for u in users]).json()["predictions"]
    diverse = predict(servers.transformer, [{"user_id": u, "k": 10, "diversity": 0.8} for u in users])
    assert diverse.status_code == 200, diverse.text

    def ild(prediction: dict) -> float:
        return intra_list_diversity(model.bundle.vocab.index(ids(prediction)), features)

    before, after = [], []
    for p0, p1, p2 in zip(plain, zero, diverse.json()["predictions"]):
        assert p1["items"] == p0["items"] and "intra_list_diversity" not in p1  # unchanged
        assert p2["fallback"] is None and len(p2["items"]) == 10
        assert p2["intra_list_diversity"] == pytest.approx(ild(p2))
        before.append(ild(p0))
        after.append(ild(p2))
        assert after[-1] >= before[-1]
        assert p2["items"][0]["item_id"] == p0["items"][0]["item_id"]  # MMR starts from the model's best
    assert np.mean(after) > np.mean(before), (before, after)


def test_a_predictor_without_a_catalogue_refuses_diversity_with_a_503_and_takes_its_own_floor(demo, model):
    items, relevance = ranked(model, CART)
    low = next(i for i, r in zip(items[10:], relevance[10:]) if r < DEFAULT_FLOOR)
    with running_predictor(["--model_dir", str(demo.bundle_dir), "--sponsored_floor", "0"]) as base:
        refused = predict(base, [{"items": CART, "k": 5, "diversity": 0.5}])
        assert refused.status_code == 503 and "--catalog" in refused.json()["error"]
        # Floor 0 (this server's setting): an item the default floor keeps out is placed.
        placed = predict(base, [{"items": CART, "k": 5, "sponsored": [{"item_id": low, "bid": 1}]}])
        assert placed.status_code == 200, placed.text
        assert placed.json()["predictions"][0]["items"][1] == low
        # A client cannot set the floor.
        floor = predict(base, [{"items": CART, "k": 5, "sponsored_floor": 0.0}])
        assert floor.status_code == 400 and "unknown field(s) ['sponsored_floor']" in floor.json()["error"]


# --- onboarding ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onboarding(demo) -> OnboardingPopularity:
    """The table as the transformer builds it at start from the home's dataset."""
    return load_onboarding(demo.home.data, load_catalog(demo.home.features, demo.items_path))


def test_a_new_user_with_categories_gets_onboarding_that_names_its_fallback(servers, demo, onboarding):
    assert onboarding.attributes  # ML-100K has a users table: age, gender, occupation
    answer = settled(servers.transformer, {"user_id": "brand-new", "k": 6,
                                           "preferences": {"categories": ["Comedy"]}})
    expected = onboarding.recommend(6, ["Comedy"])
    assert answer["fallback"] == "unknown_user"  # why the user is cold
    assert answer["onboarding"] == expected.fallback == "stated_categories"
    assert ids(answer) == expected.items and {i["category"] for i in answer["items"]} == {"Comedy"}
    assert {i["reason"] for i in answer["items"]} == {expected.reason} and not any(i["sponsored"] for i in answer["items"])

    drama = predict(servers.transformer, [{"user_id": "brand-new", "k": 6, "preferences": {"categories": ["Drama"]}}])
    assert not set(ids(drama.json()["predictions"][0])) & set(ids(answer))  # the stated category decides

    years = int(demo.data.users["age"].dropna().iloc[0])  # an age some user of the slice has
    segment = settled(servers.transformer, {"user_id": "brand-new", "k": 4,
                                            "preferences": {"attributes": {"age": years}}})
    expected = onboarding.recommend(4, attributes={"age": years})
    assert segment["onboarding"] == expected.fallback and ids(segment) == expected.items

    plain = settled(servers.transformer, {"user_id": "brand-new", "k": 4})
    assert "onboarding" not in plain and plain["fallback"] == "unknown_user"


def test_a_known_user_keeps_the_models_answer_whatever_they_state(servers, demo):
    user = str(demo.sequences.users[0])
    plain = settled(servers.transformer, {"user_id": user, "k": 5})
    stated = settled(servers.transformer, {"user_id": user, "k": 5, "preferences": {"categories": ["Comedy"]}})
    assert plain["fallback"] is None and stated["fallback"] is None
    assert stated["items"] == plain["items"] and "onboarding" not in stated


# --- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("instance, message", [
    ({"items": CART, "sponsored": [{"item_id": "50", "bid": -1}]}, "instances[0].sponsored[0].bid must be a finite number >= 0"),
    ({"items": CART, "sponsored": [{"item_id": "50"}]}, "instances[0].sponsored[0] must be an object with exactly 'item_id' and 'bid'"),
    ({"items": CART, "sponsored": {"item_id": "50", "bid": 1}}, "instances[0].sponsored must be a list"),
    ({"items": CART, "k": 3, "sponsored_slots": 4}, "instances[0].sponsored_slots must be an integer between 0 and k (3)"),
    ({"items": CART, "diversity": 2}, "instances[0].diversity must be a number between 0 and 1, got 2"),
    ({"items": CART, "diversity": True}, "instances[0].diversity must be a number between 0 and 1"),
    ({"user_id": "brand-new", "preferences": {"categories": ["Comedyy"]}}, "unknown category 'Comedyy'"),
    ({"user_id": "brand-new", "preferences": {"attributes": {"shoe_size": 9}}}, "unknown user attribute 'shoe_size'"),
    ({"user_id": "brand-new", "preferences": ["Comedy"]}, "instances[0].preferences must be an object"),
])
def test_bad_list_options_are_a_400_naming_the_field(servers, instance, message):
    response = predict(servers.transformer, [instance])
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize("instance, message", [
    ({"items": CART, "sponsored": [{"item_id": "50", "bid": -1}]}, "instances[0].sponsored[0].bid must be"),
    ({"items": CART, "diversity": 2}, "instances[0].diversity must be a number between 0 and 1"),
])
def test_the_predictor_refuses_the_same_faults(servers, instance, message):
    response = predict(servers.predictor, [instance])
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
