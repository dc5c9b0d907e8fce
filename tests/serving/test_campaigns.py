"""Campaigns: a table of sponsored candidates the predictor loads at start, named by a request
(`"campaign": "spring"`) instead of listed. The table's checks at load, then the real servers
(predictor with `--campaigns`, transformer in front) over HTTP: a campaign places exactly what
listing its active items would, below-floor items never appear, unknown campaigns and both
fields at once are 400s, and the prediction log records the campaign and the paid items. The
table may also live in an object store (moto's S3 server here): the loader and a predictor given
its URL in $SHOPREC_CAMPAIGNS read it there."""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest

from shoprec.errors import DataSourceError, InfraCheckError
from shoprec.kserve.process import running_predictor, running_servers
from shoprec.models.inference import BundleRecommender
from shoprec.ranking.sponsored import DEFAULT_FLOOR, Candidate
from shoprec.serving.campaigns import MAX_CAMPAIGN_ITEMS, load_campaigns
from shoprec.serving.prediction_log import read_predictions
from tests.registry import test_s3_registry as s3
from tests.serving.conftest import predict
from tests.serving.test_list_options import CART, ids, ranked

PAST = ("2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z")
FUTURE = ("2200-01-01T00:00:00Z", "")
# moto's S3 server, its environment and a fresh bucket: the registry tests' own fixtures.
s3_endpoint, s3_env, bucket = s3.s3_endpoint, s3.s3_env, s3.bucket

# --- the table --------------------------------------------------------------------------------


def write_csv(path, text: str):
    path.write_text(text)
    return path


def test_a_campaigns_table_is_read_with_its_windows(tmp_path):
    table = load_campaigns(write_csv(tmp_path / "c.csv", (
        "campaign_id,item_id,bid,start,end\n"
        "spring,50,1.5,,\n"
        "spring,172,0.8,2026-03-01T00:00:00Z,2026-06-01T00:00:00Z\n"
        "clearance,181,0.4,,2026-01-01T00:00:00Z\n")))
    assert table.names == ["clearance", "spring"] and "spring" in table and "autumn" not in table
    assert table.candidates("spring", pd.Timestamp("2026-04-01", tz="UTC")) == (Candidate("50", 1.5), Candidate("172", 0.8))
    assert table.candidates("spring", pd.Timestamp("2026-06-01", tz="UTC")) == (Candidate("50", 1.5),)  # end is exclusive
    assert table.candidates("clearance", pd.Timestamp("2026-02-01", tz="UTC")) == ()
    # Parquet, integer ids: "50", never "50.0".
    frame = pd.DataFrame({"campaign_id": ["x", "x"], "item_id": [50, 7], "bid": [1, 2.5]})
    frame.to_parquet(tmp_path / "c.parquet")
    assert load_campaigns(tmp_path / "c.parquet").candidates("x") == (Candidate("50", 1.0), Candidate("7", 2.5))


@pytest.mark.parametrize("text, message", [
    ("campaign_id,item_id\nspring,50\n", r"lacks column\(s\) \['bid'\]"),
    ("campaign_id,item_id,bid\nspring,50,-1\n", "row 2: bid must be a finite number >= 0"),
    ("campaign_id,item_id,bid\nspring,50,lots\n", "row 2: bid must be a finite number >= 0, not 'lots'"),
    ("campaign_id,item_id,bid\nspring,50,\n", "row 2: bid must be a finite number"),
    ("campaign_id,item_id,bid\n,50,1\n", "row 2: campaign_id must be a non-empty name"),
    ("campaign_id,item_id,bid\nspring,,1\n", "row 2: item_id is empty"),
    ("campaign_id,item_id,bid\nspring,50,1\nspring,50,2\n", "row 3: item '50' is given twice in campaign 'spring'"),
    ("campaign_id,item_id,bid,start,end\nspring,50,1,2026-02-01,2026-01-01\n", "row 2: end .* is not after start"),
    ("campaign_id,item_id,bid,start\nspring,50,1,someday\n", "column 'start' holds a value that is not a timestamp"),
])
def test_a_bad_campaigns_table_is_refused_naming_the_row(tmp_path, text, message):
    with pytest.raises(DataSourceError, match=message):
        load_campaigns(write_csv(tmp_path / "c.csv", text))


def test_a_campaign_holds_at_most_as_many_items_as_a_request_may_list(tmp_path):
    rows = "".join(f"big,{n},1\n" for n in range(MAX_CAMPAIGN_ITEMS + 1))
    with pytest.raises(DataSourceError, match=f"campaign 'big' holds more than {MAX_CAMPAIGN_ITEMS} items"):
        load_campaigns(write_csv(tmp_path / "c.csv", "campaign_id,item_id,bid\n" + rows))
    with pytest.raises(DataSourceError, match="does not exist"):
        load_campaigns(tmp_path / "missing.csv")


# --- from an object store (moto's S3 server, credentials and endpoint from the environment) ----


def put(bucket: str, key: str, body: bytes) -> str:
    import boto3

    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def test_a_campaigns_table_is_read_from_an_object_store(bucket, tmp_path):
    csv = put(bucket, "campaigns/current.csv", b"campaign_id,item_id,bid,start,end\n"
                                              b"spring,50,1.5,,\n"
                                              b"spring,172,0.8,2020-01-01T00:00:00Z,2020-02-01T00:00:00Z\n")
    table = load_campaigns(csv)
    assert table.names == ["spring"] and table.source == csv
    assert table.candidates("spring") == (Candidate("50", 1.5),)  # the second row's window is past
    frame = pd.DataFrame({"campaign_id": ["x", "x"], "item_id": [50, 7], "bid": [1, 2.5]})
    frame.to_parquet(tmp_path / "c.parquet")
    parquet = put(bucket, "campaigns/current.parquet", (tmp_path / "c.parquet").read_bytes())
    assert load_campaigns(parquet).candidates("x") == (Candidate("50", 1.0), Candidate("7", 2.5))
    # Its faults are named with the URL, as a local file's are with its path.
    bad = put(bucket, "campaigns/bad.csv", b"campaign_id,item_id,bid\nspring,50,-1\n")
    with pytest.raises(DataSourceError, match=f"{bad}, row 2: bid must be a finite number >= 0"):
        load_campaigns(bad)
    with pytest.raises(DataSourceError, match=f"campaigns table s3://{bucket}/campaigns/missing.csv does not exist"):
        load_campaigns(f"s3://{bucket}/campaigns/missing.csv")


@pytest.mark.integration
def test_the_predictor_loads_its_campaigns_from_the_url_in_its_environment(demo, bucket, monkeypatch):
    """On a cluster the predictor gets SHOPREC_CAMPAIGNS (serving/manifests.py) and the store's
    keys from the environment; here the process inherits this test's environment."""
    url = put(bucket, "campaigns/live.csv", b"campaign_id,item_id,bid\nspring,50,1.0\n")
    monkeypatch.setenv("SHOPREC_CAMPAIGNS", url)
    with running_predictor(["--model_dir", str(demo.bundle_dir), "--items", str(demo.items_path)]) as base:
        response = predict(base, [{"items": CART, "k": 10, "campaign": "spring"}])
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["campaign"] == "spring"
        unknown = predict(base, [{"items": CART, "campaign": "autumn"}])
        assert unknown.status_code == 400 and "this server's campaigns: 'spring'" in unknown.json()["error"]
    monkeypatch.setenv("SHOPREC_CAMPAIGNS", f"s3://{bucket}/campaigns/missing.csv")
    with pytest.raises(InfraCheckError, match="does not exist"):  # a missing table stops the start
        with running_predictor(["--model_dir", str(demo.bundle_dir)]):
            pass


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def campaign(demo, tmp_path_factory):
    """The "spring" campaign for the cart: an item below the floor bidding 1000, three items
    above it outside the organic top 10, and an item the model does not know; "ended" and
    "later" lie outside their windows."""
    model = BundleRecommender.from_bundle(demo.bundle_dir)
    items, relevance = ranked(model, CART)
    above = [i for i, r in zip(items[10:], relevance[10:]) if r > DEFAULT_FLOOR][:3]
    below = next(i for i, r in zip(items, relevance) if r < DEFAULT_FLOOR - 0.1)
    rows = [("spring", below, 1000.0, "", ""), *[("spring", i, 1.0 + n, "", "") for n, i in enumerate(above)],
            ("spring", "no-such-item", 5.0, "", ""), ("ended", above[0], 1.0, *PAST), ("later", above[0], 1.0, *FUTURE)]
    path = tmp_path_factory.mktemp("campaigns") / "campaigns.csv"
    pd.DataFrame(rows, columns=["campaign_id", "item_id", "bid", "start", "end"]).to_csv(path, index=False)
    return {"path": path, "above": above, "below": below, "organic": items[:10]}


@pytest.fixture(scope="module")
def served(demo, campaign):
    with running_servers(demo.home.root, items=demo.items_path, campaigns=campaign["path"],
                         env={"SHOPREC_LOG_SALT": "test-salt", "OMP_NUM_THREADS": "1"}) as urls:
        yield urls





@pytest.mark.integration
def test_a_campaign_places_its_active_items_as_a_listed_sponsored_request_would(served, campaign):
    listed = [{"item_id": i, "bid": 1.0 + n} for n, i in enumerate(campaign["above"])]
    by_list = predict(served.transformer, [{"items": CART, "k": 10, "sponsored": [
        {"item_id": campaign["below"], "bid": 1000.0}, *listed]}])
    by_name = predict(served.transformer, [{"items": CART, "k": 10, "campaign": "spring"}])
    assert by_name.status_code == 200, by_name.text
    answer = by_name.json()["predictions"][0]
    assert answer["items"] == by_list.json()["predictions"][0]["items"]
    flags = [i["sponsored"] for i in answer["items"]]
    assert [n for n, f in enumerate(flags) if f] == [1, 4]
    # Equal relevance order aside, relevance x bid: the two best of the three, never the item
    # below the floor whatever its bid, and the unknown item is left out (no 400).
    assert set(ids(answer)[n] for n in (1, 4)) <= set(campaign["above"])
    assert campaign["below"] not in ids(answer)
    assert [i for i, f in zip(ids(answer), flags) if not f] == campaign["organic"][:8]

    # The predictor alone takes the same field and names the campaign in its answer.
    alone = predict(served.predictor, [{"items": CART, "k": 10, "campaign": "spring"}])
    assert alone.status_code == 200, alone.text
    body = alone.json()["predictions"][0]
    assert body["items"] == ids(answer) and body["sponsored"] == flags and body["campaign"] == "spring"


@pytest.mark.integration
@pytest.mark.parametrize("name", ["ended", "later"])
def test_a_campaign_outside_its_window_places_nothing(served, campaign, name):
    response = predict(served.transformer, [{"items": CART, "k": 10, "campaign": name}])
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    assert ids(answer) == campaign["organic"] and not any(i["sponsored"] for i in answer["items"])


@pytest.mark.integration
def test_an_unknown_campaign_and_both_fields_at_once_are_400s(served, campaign):
    for base in (served.transformer, served.predictor):
        unknown = predict(base, [{"items": CART, "campaign": "autumn"}])
        assert unknown.status_code == 400, unknown.text
        error = unknown.json()["error"]
        assert "instances[0].campaign: unknown campaign 'autumn'" in error
        assert "'ended', 'later', 'spring'" in error  # what the server knows
        both = predict(base, [{"items": CART, "campaign": "spring", "sponsored": [{"item_id": "50", "bid": 1}]}])
        assert both.status_code == 400, both.text
        assert "instances[0] has both 'sponsored' and 'campaign'" in both.json()["error"]
        empty = predict(base, [{"items": CART, "campaign": ""}])
        assert empty.status_code == 400 and "instances[0].campaign must be a campaign name" in empty.json()["error"]
    v2 = httpx.post(f"{served.transformer}/v2/models/shoprec/infer", timeout=30, json={"inputs": [
        {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["never-seen"]},
        {"name": "campaign", "datatype": "BYTES", "shape": [1], "data": ["spring"]},
        {"name": "sponsored_item_id", "datatype": "BYTES", "shape": [1], "data": ["50"]},
        {"name": "sponsored_bid", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
    assert v2.status_code == 400 and "'campaign' are both given" in v2.json()["error"]


@pytest.mark.integration
def test_v2_names_a_campaign_with_a_bytes_input(served, demo, campaign):
    v1 = predict(served.transformer, [{"items": CART, "k": 10, "campaign": "spring"}]).json()["predictions"][0]
    response = httpx.post(f"{served.predictor}/v2/models/shoprec/infer", timeout=30, json={"inputs": [
        {"name": "items", "datatype": "BYTES", "shape": [1, len(CART)], "data": CART},
        {"name": "k", "datatype": "INT32", "shape": [1], "data": [10]},
        {"name": "campaign", "datatype": "BYTES", "shape": [1], "data": ["spring"]}]})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["item_id"]["data"] == ids(v1)
    assert outputs["sponsored"]["data"] == [i["sponsored"] for i in v1["items"]]
    unknown = httpx.post(f"{served.predictor}/v2/models/shoprec/infer", timeout=30, json={"inputs": [
        {"name": "items", "datatype": "BYTES", "shape": [1], "data": ["50"]},
        {"name": "campaign", "datatype": "BYTES", "shape": [1], "data": ["autumn"]}]})
    assert unknown.status_code == 400 and "input campaign[0]: unknown campaign 'autumn'" in unknown.json()["error"]


@pytest.mark.integration
def test_the_prediction_log_records_the_campaign_and_which_items_were_paid(served, demo, campaign):
    user = str(demo.sequences.users[0])
    listed = [{"item_id": i, "bid": 1.0} for i in campaign["above"]]
    requests = {"log-campaign": [{"items": CART, "k": 10, "campaign": "spring"}, {"user_id": "never-seen", "k": 3}],
                "log-listed": [{"items": CART, "k": 6, "sponsored": listed, "sponsored_slots": 1}],
                "log-plain": [{"user_id": user, "k": 4}]}
    answers = {}
    for request_id, instances in requests.items():
        response = predict(served.transformer, instances, headers={"x-request-id": request_id})
        assert response.status_code == 200, response.text
        answers[request_id] = response.json()["predictions"]
    logs = demo.home.logs / "predictions"
    deadline = time.monotonic() + 20  # written by the server's background writer
    while True:
        frame = read_predictions(logs)
        mine = frame[frame["request_id"].isin(list(requests))]
        if len(mine) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(mine) == 4
    # What the log file itself holds, line by line, for each answer.
    for request_id, predictions in answers.items():
        rows = mine[mine["request_id"] == request_id]
        assert len(rows) == len(predictions)
        for (_, row), prediction in zip(rows.iterrows(), predictions):
            assert list(row["items"]) == [i["item_id"] for i in prediction["items"]]
            assert list(row["sponsored"]) == [i["sponsored"] for i in prediction["items"]]
    campaign_row, cold_row = mine[mine["request_id"] == "log-campaign"].itertuples(index=False)
    assert campaign_row.campaign == "spring" and sum(campaign_row.sponsored) == 2
    assert cold_row.campaign is None and not any(cold_row.sponsored)
    listed_row = next(mine[mine["request_id"] == "log-listed"].itertuples(index=False))
    assert listed_row.campaign is None and list(listed_row.sponsored) == [False, True, False, False, False, False]
    plain_row = next(mine[mine["request_id"] == "log-plain"].itertuples(index=False))
    assert len(plain_row.sponsored) == 4 and not any(plain_row.sponsored)
