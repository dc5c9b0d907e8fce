"""Cold items (in the catalogue, no training events) are reached through their content:
their id embedding is imputed from warm look-alikes after training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.models.inference import BundleRecommender
from shoprec.models.cold_items import ColdImputation, impute_cold_item_embeddings
from shoprec.models.sasrec import SASRec
from shoprec.training.fit import FitConfig, fit_and_evaluate, save_outcome
from shoprec.training.loop import TrainConfig

# ---------------------------------------------------------------- unit: a hand-set tiny model

E1, E2, E3 = torch.eye(4)[0], torch.eye(4)[1], torch.eye(4)[2]


def tiny_model() -> tuple[SASRec, np.ndarray]:
    """Items 1-5: warm, titles close to E1 (item 1 exactly E1); 6, 7: warm, far titles,
    category 1; 8: cold, title exactly E1; 9: cold, no title, category 1; 10: cold, nothing."""
    torch.manual_seed(0)
    model = SASRec(10, max_len=4, hidden=8, blocks=1, n_categories=2, text_dim=4)
    text = torch.zeros(11, 4)
    text[1] = E1
    for item, tilt in zip(range(2, 6), (0.1, 0.2, 0.3, 0.4)):
        text[item] = E1 + tilt * E2  # the nearest five to E1 are items 1-5, in this order
    text[6], text[7], text[8] = E2, E3, E1
    category = torch.tensor([0, 2, 2, 2, 2, 2, 1, 1, 0, 1, 0])
    model.set_item_features(category, text)
    counts = np.array([0, 4, 3, 3, 2, 2, 5, 1, 0, 0, 0], dtype=float)
    return model, counts


def test_cold_items_borrow_the_id_embeddings_of_their_content_look_alikes():
    model, counts = tiny_model()
    before = model.item_embedding.weight.detach().clone()
    result = impute_cold_item_embeddings(model, counts)
    after = model.item_embedding.weight.detach()
    assert result == ColdImputation(by_title=1, by_category=1, left_as_trained=1)
    assert (result.imputed, result.cold) == (2, 3)
    assert torch.allclose(after[8], before[1:6].mean(0))  # the five nearest titles, not 6 or 7
    assert torch.allclose(after[9], before[6:8].mean(0))  # no title: its category's warm items
    assert torch.equal(after[10], before[10])  # no content at all: kept as trained
    assert torch.equal(after[:8], before[:8])  # padding row 0 and every warm item untouched
    assert not after[0].any()


def test_a_duplicate_title_copies_the_warm_item_and_the_scoring_cache_follows():
    model, counts = tiny_model()
    model.eval()
    with torch.no_grad():
        stale = model.scoring_items().clone()  # caches the inference matrix
    impute_cold_item_embeddings(model, counts, neighbours=1)
    weight = model.item_embedding.weight.detach()
    assert torch.equal(weight[8], weight[1])  # title identical to item 1's
    with torch.no_grad():
        fresh = model.scoring_items()
        assert torch.allclose(fresh, model.item_matrix())  # not the stale cached copy
    assert not torch.allclose(fresh[8], stale[8])


def test_without_content_nothing_is_imputed_and_bad_counts_are_refused():
    torch.manual_seed(0)
    model = SASRec(3, max_len=4, hidden=8, blocks=1)
    before = model.item_embedding.weight.detach().clone()
    result = impute_cold_item_embeddings(model, np.array([0, 2, 0, 0]))
    assert result == ColdImputation(by_title=0, by_category=0, left_as_trained=2)
    assert torch.equal(model.item_embedding.weight, before)
    with pytest.raises(ValueError, match="train_counts has 3 entries; the model has 4 item rows"):
        impute_cold_item_embeddings(model, np.array([0, 1, 1]))


# ------------------------------------------ end to end: a new copy of a known item is reachable

PRODUCTS = ["whole milk", "sourdough bread", "cheddar cheese", "ground coffee",
            "green tea", "dark chocolate", "dish soap", "dog food"]
BRANDS = ["Acme", "Bolt", "Crest", "Delta", "Ember", "Fable", "Gusto", "Harbor", "Iris", "Juno"]
N_ITEMS = len(PRODUCTS) * len(BRANDS)
A, NEW_B = "i00", "new-b"


def chain_with_a_new_copy(n_users: int = 150, jump: float = 0.5, seed: int = 0) -> tuple[EventData, str]:
    """Each item has a fixed successor (one random cycle); users follow it, but after any
    item except A they jump to a random item with probability `jump`, so the model stays
    uncertain the way real shoppers keep it. B, A's successor, always follows A. The
    items table adds NEW_B: B's title and category, no events at all. Returns (data, B)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(N_ITEMS)
    successor = np.empty(N_ITEMS, dtype=np.int64)
    successor[order] = np.roll(order, -1)
    rows, start = [], pd.Timestamp("2024-01-01", tz="UTC")
    for user in range(n_users):
        item = int(rng.integers(N_ITEMS))
        for step in range(int(rng.integers(12, 20))):
            rows.append((f"u{user:03d}", f"i{item:02d}", start + pd.Timedelta(minutes=user * 100 + step)))
            jumps = item != 0 and rng.random() < jump
            item = int(rng.integers(N_ITEMS)) if jumps else int(successor[item])
    events = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP])
    events[S.EVENT_TYPE] = S.VIEW
    # Brand + product: look-alike titles within a product, as in a real catalogue.
    items = pd.DataFrame({
        S.ITEM_ID: [f"i{i:02d}" for i in range(N_ITEMS)],
        S.TITLE: [f"{BRANDS[i // len(PRODUCTS)]} {PRODUCTS[i % len(PRODUCTS)]}" for i in range(N_ITEMS)],
        S.CATEGORY: [f"c{i % 4}" for i in range(N_ITEMS)],
    })
    b = f"i{int(successor[0]):02d}"
    copy = items[items[S.ITEM_ID] == b].assign(**{S.ITEM_ID: NEW_B})
    data = EventData(events, pd.concat([items, copy], ignore_index=True), None, "chain",
                     {"repeat_purchase": False, "snapshot_id": "chain-0"})
    return data, b


def fit(data: EventData, impute: bool):
    train = TrainConfig(max_epochs=40, batch_size=32, learning_rate=5e-3, patience=40,
                        progress=False, seed=0)
    config = FitConfig(model={"hidden": 32, "max_len": 20, "blocks": 1, "dropout": 0.1},
                       train=train, content=True, impute_cold_items=impute,
                       baselines=("mostpop",), bootstrap=20)
    return fit_and_evaluate(data, config)


def test_a_new_item_with_a_known_items_content_is_recommended_where_that_item_is(tmp_path):
    torch.set_num_threads(1)
    data, b = chain_with_a_new_copy()
    history = [A]  # a shopper who has just looked at A
    ranks = {}
    for impute in (True, False):
        outcome = fit(data, impute)
        path = save_outcome(outcome, tmp_path / str(impute), source="chain")
        served = [r.item_id for r in BundleRecommender.from_bundle(path).recommend(history, k=N_ITEMS + 1)]
        ranks[impute] = (served.index(b), served.index(NEW_B))
        if impute:
            assert outcome.cold_items == ColdImputation(by_title=1, by_category=0, left_as_trained=0)
            assert json.loads((path / "metrics.json").read_text())["cold_items"]["imputed"] == 1
            card = (path / "MODEL_CARD.md").read_text()
            assert "1 cold items given content-imputed embeddings (1 by title, 0 by category)" in card
            imputed_weights = outcome.models["sasrec"].item_embedding.weight.detach()
        else:
            assert outcome.cold_items is None
            trained = outcome.models["sasrec"].item_embedding.weight.detach()
            new_b = outcome.vocab.index([NEW_B])[0]
            warm = torch.ones(len(trained), dtype=torch.bool)
            warm[new_b] = False
            # Same seed, same training: imputation changed the new item's row and nothing else.
            assert torch.equal(trained[warm], imputed_weights[warm])
            assert not torch.allclose(trained[new_b], imputed_weights[new_b])
    (b_with, new_with), (b_without, new_without) = ranks[True], ranks[False]
    assert b_with == b_without == 0  # the model learnt that B follows A
    assert new_with < 10  # the new copy of B is recommended after A ...
    assert new_without >= 15  # ... where its trained id embedding had buried it
