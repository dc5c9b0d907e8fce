"""A model with a learned repeat head served over real HTTP: the predictor (a KServe
ModelServer process) takes each history's `session_starts` (V1 field, V2 BOOL input) and ranks
exactly as the model scores those openings; without them a history is one session; an unknown
item's opening moves to the next known item; openings that do not align are a 400. The
expected rankings come from the model object itself, never from the server."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from shoprec.models.bundle import save_bundle
from shoprec.models.repeat_head import RepeatHead
from shoprec.models.sasrec import SASRec
from shoprec.sequences import ItemVocab, keep_with_openings
from shoprec.kserve.process import running_predictor
from tests.serving.conftest import predict

pytestmark = pytest.mark.integration

IDS = tuple(f"i{n}" for n in range(1, 13))
HISTORY = ["i1", "i2", "i3", "i1", "i4", "i2", "i5"]
OPENS = [True, False, False, True, False, True, False]


@pytest.fixture(scope="module")
def head_model() -> SASRec:
    torch.manual_seed(3)
    model = SASRec(len(IDS), max_len=5, hidden=16, blocks=1)
    head = RepeatHead(8)
    torch.nn.init.normal_(head.net[0].weight)  # an untrained head is near-uniform: make openings matter
    model.attach_repeat_head(head, 0.8)
    return model.eval()


@pytest.fixture(scope="module")
def base(head_model, tmp_path_factory) -> str:
    bundle = save_bundle(tmp_path_factory.mktemp("head") / "bundle", head_model, ItemVocab(IDS),
                         exclude_seen=False, metrics={})
    with running_predictor(["--model_dir", str(bundle)]) as url:
        yield url


def expected(model: SASRec, history: list[str], opens: list[bool], k: int = 5) -> tuple[list[str], list[float]]:
    """The top k as the model scores these item ids with these session openings."""
    index = np.asarray([IDS.index(i) + 1 for i in history], dtype=np.int64)
    scores = model.score_all([index], starts=[np.asarray(opens, dtype=bool)])[0].float()
    order = torch.argsort(scores, descending=True, stable=True)[:k]
    return [IDS[int(i) - 1] for i in order], [float(scores[int(i)]) for i in order]


def test_the_predictor_ranks_with_the_session_openings_sent(base, head_model) -> None:
    items, scores = expected(head_model, HISTORY, OPENS)
    answer = predict(base, [{"items": HISTORY, "session_starts": OPENS, "k": 5}]).json()["predictions"][0]
    assert answer["items"] == items
    assert answer["scores"] == pytest.approx(scores, rel=1e-5)
    # The openings matter: every item its own session ranks otherwise.
    alone = predict(base, [{"items": HISTORY, "session_starts": [True] * len(HISTORY), "k": 5}]).json()
    assert alone["predictions"][0]["scores"] == pytest.approx(expected(head_model, HISTORY, [True] * 7)[1], rel=1e-5)
    assert alone["predictions"][0]["scores"] != pytest.approx(scores, rel=1e-5)


def test_a_history_without_openings_is_one_session(base, head_model) -> None:
    one = [True] + [False] * (len(HISTORY) - 1)
    answer = predict(base, [{"items": HISTORY, "k": 5}]).json()["predictions"][0]
    assert answer["items"] == expected(head_model, HISTORY, one)[0]


def test_an_unknown_items_opening_moves_to_the_next_known_item(base, head_model) -> None:
    sent = ["i1", "i2", "new-a", "i3", "i4", "new-b"]
    opens = [True, False, True, False, True, False]
    kept, moved = keep_with_openings(np.asarray(sent), np.asarray(opens), np.asarray([s in IDS for s in sent]))
    assert kept.tolist() == ["i1", "i2", "i3", "i4"] and moved.tolist() == [True, False, True, True]
    answer = predict(base, [{"items": sent, "session_starts": opens, "k": 5}]).json()["predictions"][0]
    assert answer["items"] == expected(head_model, kept.tolist(), moved.tolist())[0]


def test_filters_and_reasons_read_the_openings_too(base, head_model) -> None:
    items, _ = expected(head_model, HISTORY, OPENS, k=6)
    answer = predict(base, [{"items": HISTORY, "session_starts": OPENS, "k": 5, "exclude": [items[0]],
                             "reasons": True}]).json()["predictions"][0]
    assert answer["items"] == items[1:6]
    assert len(answer["reasons"]) == 5 and answer["history_used"] == len(HISTORY)


def test_v2_takes_the_openings_as_a_bool_input_shaped_as_items(base, head_model) -> None:
    short = ["i6", "i7", "i6"]
    inputs = [{"name": "items", "datatype": "BYTES", "shape": [2, 7], "data": HISTORY + short + [""] * 4},
              {"name": "session_starts", "datatype": "BOOL", "shape": [2, 7],
               "data": OPENS + [True, False, True] + [False] * 4},
              {"name": "k", "datatype": "INT32", "shape": [1], "data": [5]}]
    reply = httpx.post(f"{base}/v2/models/shoprec/infer", json={"inputs": inputs}, timeout=30)
    assert reply.status_code == 200, reply.text
    ids = next(o for o in reply.json()["outputs"] if o["name"] == "item_id")["data"]
    assert ids[:5] == expected(head_model, HISTORY, OPENS)[0]
    assert ids[5:] == expected(head_model, short, [True, False, True])[0]
    inputs[1]["shape"], inputs[1]["data"] = [14], inputs[1]["data"]
    reply = httpx.post(f"{base}/v2/models/shoprec/infer", json={"inputs": inputs}, timeout=30)
    assert reply.status_code == 400 and "must have the shape of 'items'" in reply.text


@pytest.mark.parametrize("sent, message", [
    ([True, False], "session_starts must be a list of 7 true/false values"),
    ("yes", "session_starts must be a list of 7"),
    ([True, False, 1, False, False, False, False], "session_starts[2] must be true or false"),
])
def test_openings_that_do_not_align_are_a_400_naming_the_field(base, sent, message) -> None:
    reply = predict(base, [{"items": HISTORY, "session_starts": sent}])
    assert reply.status_code == 400
    assert message in reply.json()["error"]


def test_a_repeat_side_lets_requests_carry_the_history_it_reads(tmp_path) -> None:
    from shoprec.models.inference import MAX_HISTORY, BundleRecommender
    from shoprec.serving.requests import history_limit

    def read(**settings) -> int | None:
        model = SASRec(len(IDS), max_len=5, hidden=16, blocks=1, **settings)
        folder = save_bundle(tmp_path / str(len(list(tmp_path.iterdir()))), model, ItemVocab(IDS),
                             exclude_seen=False, metrics={})
        return BundleRecommender.from_bundle(folder).history_read

    assert read() == 5  # the transformer alone reads its window
    assert read(repeat_weight=2.0, repeat_history=300) == 300  # the bonus reads 300 items
    assert read(repeat_weight=2.0) is None  # ... or the whole history
    assert history_limit(None) == MAX_HISTORY and history_limit(None, 1000) == 1000
    assert history_limit(300) == 300 and history_limit(5, 1000) == 1000


# --- end to end: Feast's user_history -> the transformer -> the predictor ----------------------


HISTORY_LEN = 10  # user_history keeps 10 of each user's 24 events: the cut falls inside an order


def shop_log(users: int = 8, sessions: int = 6, seed: int = 1):
    """Purchases in orders: half the users' events carry order ids (a change opens a session),
    the others none (a gap of more than 30 minutes opens one); orders a day apart, items a
    minute apart, with a 40-minute pause inside some unlabelled orders."""
    import pandas as pd

    from shoprec import schema as S
    from shoprec.data.dataset import EventData

    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-03-01", tz="UTC")
    for user in range(users):
        labelled = user % 2 == 0
        for order in range(sessions):
            when = start + pd.Timedelta(days=order, hours=user)
            for position, item in enumerate([f"i{1 + user % 4}", *(f"i{n}" for n in rng.integers(1, 13, size=3))]):
                pause = pd.Timedelta(minutes=40) if (not labelled and position == 2 and order % 2) else pd.Timedelta(0)
                when = when + pd.Timedelta(minutes=1) + pause
                rows.append((f"u{user}", item, when, S.PURCHASE, f"o{user}-{order}" if labelled else None))
    events = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.EVENT_TYPE, S.SESSION_ID])
    return EventData(events, None, None, "shop", {"repeat_purchase": True})


@pytest.fixture(scope="module")
def shop(head_model, tmp_path_factory):
    from shoprec.features.settings import FeatureStoreSettings
    from shoprec.features.store import apply_definitions, materialize
    from shoprec.features.tables import build_feature_tables
    from shoprec.home import Home
    from shoprec.lifecycle.registry import Registry

    home = Home.at(tmp_path_factory.mktemp("shop-home"))
    data = shop_log()
    settings = FeatureStoreSettings(home=home)
    build_feature_tables(data.events, None, max_len=5, history_len=HISTORY_LEN).write(settings.features_dir)
    materialize(apply_definitions(settings), settings)
    bundle = save_bundle(home.bundles / "head", head_model, ItemVocab(IDS), exclude_seen=False, metrics={})
    registry = Registry.from_home(home)
    registry.promote(registry.register(bundle, note="head").version, reason="test", actor="test")
    return home, data


def test_a_user_is_served_with_the_session_openings_the_evaluator_reads(shop, head_model) -> None:
    from shoprec.kserve.process import running_servers
    from shoprec.sequences import FlatSequences, session_starts

    home, data = shop
    vocab = ItemVocab(IDS)
    seqs = FlatSequences.from_events(data.events, vocab, with_rows=True)
    opens = session_starts(data.events, seqs.rows, seqs.offsets)
    users = [str(u) for u in seqs.users]
    expected_lists, cut_inside = [], []
    for n in range(len(users)):
        items = seqs.flat[seqs.offsets[n]:seqs.offsets[n + 1]][-HISTORY_LEN:]  # what user_history keeps
        flags = opens[seqs.offsets[n]:seqs.offsets[n + 1]][-HISTORY_LEN:]
        cut_inside.append(not flags[0])
        scores = head_model.score_all([items.astype(np.int64)], starts=[flags])[0].float()
        expected_lists.append([IDS[int(i) - 1] for i in torch.argsort(scores, descending=True, stable=True)[:5]])
    # Sessions by order id and by gap (the pauses add openings), and a history cut inside a
    # session: its first item continues one (its flag comes from the whole log).
    assert opens.sum() > len(users) * 6 and any(cut_inside)
    with running_servers(home.root, env={"OMP_NUM_THREADS": "1"}) as urls:
        reply = predict(urls.transformer, [{"user_id": u, "k": 5} for u in users])
    assert reply.status_code == 200, reply.text
    for user, want, prediction in zip(users, expected_lists, reply.json()["predictions"]):
        assert prediction["fallback"] is None
        assert [i["item_id"] for i in prediction["items"]] == want, user
