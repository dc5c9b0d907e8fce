"""Event logs with known drift for the monitoring tests, and a real (Markov-1) model bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.dataset import EventData

START = pd.Timestamp("2026-01-01", tz="UTC")
CATEGORIES = ["dairy", "bakery", "produce", "snacks", "drinks"]
N_ITEMS = 120


def catalogue() -> pd.DataFrame:
    ids = [f"i{n}" for n in range(N_ITEMS)]
    return pd.DataFrame({S.ITEM_ID: ids, S.CATEGORY: [CATEGORIES[n % len(CATEGORIES)] for n in range(N_ITEMS)],
                         S.PRICE: [2.0 + (n % 17) for n in range(N_ITEMS)]})


def make_events(seed: int, start: pd.Timestamp, days: float, users: int = 300, per_user: int = 12,
                price_scale: float = 1.0, category_weights: list[float] | None = None,
                user_offset: int = 0) -> pd.DataFrame:
    """Users browse and buy; item choice follows `category_weights` (default: even),
    prices are the catalogue's times `price_scale` with a little noise."""
    rng = np.random.default_rng(seed)
    items = catalogue()
    weights = np.array(category_weights or [1.0] * len(CATEGORIES), dtype=float)
    item_weights = weights[np.arange(N_ITEMS) % len(CATEGORIES)] * (1.0 / (1 + np.arange(N_ITEMS) % 23))
    item_weights /= item_weights.sum()
    n = users * per_user
    user = rng.integers(0, users, n) + user_offset
    item = rng.choice(N_ITEMS, n, p=item_weights)
    offsets = rng.uniform(0, days * 86400, n)
    return pd.DataFrame({
        S.USER_ID: [f"u{u}" for u in user],
        S.ITEM_ID: [f"i{i}" for i in item],
        S.EVENT_TYPE: rng.choice([S.VIEW, S.CART, S.PURCHASE], n, p=[0.7, 0.2, 0.1]),
        S.TIMESTAMP: start + pd.to_timedelta(offsets, unit="s"),
        S.QUANTITY: 1,
        S.PRICE: items[S.PRICE].to_numpy()[item] * price_scale * rng.uniform(0.95, 1.05, n),
        S.SESSION_ID: [f"s{u}" for u in user],
    }).sort_values(S.TIMESTAMP, ignore_index=True)


@pytest.fixture(scope="session")
def training_data() -> EventData:
    """21 days of a steady shop: the training window."""
    return EventData(make_events(1, START, 21), catalogue(), None, "synthetic", {"snapshot_id": "synthetic-1"})


@pytest.fixture(scope="session")
def training_dir(tmp_path_factory, training_data) -> Path:
    return training_data.write(tmp_path_factory.mktemp("clean"))


def current_window(shifted: bool, seed: int = 7) -> EventData:
    """The week after training: a fresh resample of the same shop, or a shifted one (prices x3,
    nearly everything bought from one category)."""
    events = make_events(seed, START + pd.Timedelta(days=21), 7, per_user=4,
                         price_scale=3.0 if shifted else 1.0,
                         category_weights=[20, 1, 1, 1, 1] if shifted else None)
    return EventData(events, catalogue(), None, "synthetic-current")


def baseline_bundle(directory: Path, training_data: EventData, baseline: str) -> Path:
    """A real bundle: the named baseline fitted on the training window's sequences."""
    from shoprec.models.bundle import save_bundle
    from shoprec.models.baselines import BASELINES
    from shoprec.sequences import build_sequences, build_vocab

    vocab = build_vocab(training_data.events, training_data.items)
    sequences = build_sequences(training_data.events, vocab)
    model = BASELINES[baseline](vocab.n_items).fit(sequences.items)
    return save_bundle(directory / "model", model, vocab, exclude_seen=False,
                       metrics={}, snapshot_id="synthetic-1")


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, training_data) -> Path:
    """A real bundle: the Markov-1 baseline."""
    return baseline_bundle(tmp_path_factory.mktemp("bundle"), training_data, "markov1")


@pytest.fixture(scope="session")
def popular_bundle_dir(tmp_path_factory, training_data) -> Path:
    """A second real bundle whose answers differ from the Markov-1 one: most-popular items."""
    return baseline_bundle(tmp_path_factory.mktemp("bundle"), training_data, "mostpop")
