"""Small data with a planted pattern: each user's next item is a fixed function of the
previous one (a random cycle over the catalogue), so a sequence model can be near perfect
while popularity cannot."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import pytest
import torch

from shoprec import schema as S
from shoprec.data.dataset import EventData

N_ITEMS = 40


def planted_events(n_users: int = 150, n_items: int = N_ITEMS, seed: int = 0) -> EventData:
    rng = np.random.default_rng(seed)
    successor = np.roll(rng.permutation(n_items), 1)  # item -> next item, one cycle
    cycle = np.empty(n_items, dtype=np.int64)
    order = rng.permutation(n_items)
    cycle[order] = np.roll(order, -1)
    rows = []
    start_time = pd.Timestamp("2024-01-01", tz="UTC")
    for user in range(n_users):
        item = int(rng.integers(n_items))
        for step in range(int(rng.integers(12, 20))):
            rows.append((f"u{user:03d}", f"i{item:02d}", start_time + pd.Timedelta(minutes=user * 100 + step)))
            item = int(cycle[item])
    del successor
    events = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP])
    events[S.EVENT_TYPE] = S.VIEW
    items = pd.DataFrame({S.ITEM_ID: [f"i{i:02d}" for i in range(n_items)],
                          S.CATEGORY: [f"c{i % 4}" for i in range(n_items)]})
    return EventData(events, items, None, "planted", {"repeat_purchase": False, "snapshot_id": "planted-0"})


@pytest.fixture(scope="session")
def planted() -> EventData:
    torch.set_num_threads(1)
    return planted_events()
