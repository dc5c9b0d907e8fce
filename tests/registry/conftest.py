"""Tiny real bundles (closed-form baselines fit in milliseconds) and a registry folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S

from shoprec.features.tables import build_feature_tables
from shoprec.models.bundle import save_bundle
from shoprec.models.baselines import BASELINES
from shoprec.models.sasrec import SASRec
from shoprec.lifecycle.registry import Registry
from shoprec.sequences import ItemVocab

VOCAB = ItemVocab(tuple(f"i{n}" for n in range(1, 13)))  # 12 items, i1..i12 -> 1..12
# Sequences with a clear next-item structure (i -> i+1) and a popularity skew to items 1-3.
TRAIN = [np.array(s, dtype=np.int64) for s in (
    [1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [3, 4, 5, 6, 7], [1, 2, 3], [1, 2, 3], [7, 8, 9, 10],
    [8, 9, 10, 11], [9, 10, 11, 12], [1, 2], [2, 3], [4, 5, 6, 7, 8], [5, 6, 7, 8, 9],
)]


def make_bundle(directory: Path, kind: str = "mostpop", sequences: list[np.ndarray] | None = None,
                vocab: ItemVocab = VOCAB, metrics: dict | None = None) -> Path:
    model = BASELINES[kind](vocab.n_items).fit(sequences if sequences is not None else TRAIN)
    default = {"primary": kind, "models": {kind: {"metrics": {"NDCG@10": 0.1, "coverage": 0.5}}}}
    return save_bundle(directory, model, vocab, exclude_seen=True,
                       metrics=metrics if metrics is not None else default)


def make_window_bundle(directory: Path, max_len: int, vocab: ItemVocab = VOCAB, repeat_history: int = 0) -> Path:
    """A tiny untrained SASRec bundle reading the newest `max_len` items (its window), and
    with `repeat_history` a repeat bonus reading that many."""
    model = SASRec(vocab.n_items, max_len=max_len, hidden=8, blocks=1, dropout=0.0,
                   repeat_weight=1.0 if repeat_history else 0.0, repeat_history=repeat_history)
    return save_bundle(directory, model, vocab, exclude_seen=True, metrics={})


def make_features(directory: Path, max_len: int, history_len: int | None = None) -> Path:
    """Real feature tables (and their features.json) built with window `max_len` and
    `history_len` (default: the window)."""
    build_feature_tables(sequences_frame(), max_len=max_len, history_len=history_len or max_len).write(directory)
    return directory


@pytest.fixture
def bundle_factory(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def build(kind: str = "mostpop", **kwargs) -> Path:
        return make_bundle(tmp_path / "bundles" / f"{kind}-{next(counter)}", kind, **kwargs)

    return build


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def sequences_frame() -> pd.DataFrame:
    """12 users walking a chain of items i1 -> i2 -> ... (Markov-1 learns it; MostPop cannot)."""
    rows = []
    for user in range(12):
        start = user % 6
        for step in range(6):
            rows.append((f"u{user}", f"i{start + step + 1}", "view",
                         pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=step)))
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP])
