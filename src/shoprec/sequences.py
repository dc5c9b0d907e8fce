"""Core sequence types below models, training and evaluation: the item vocabulary, padding,
per-user item sequences and the (inputs, targets) batch every model trains on.

Items are indexed 1..N; index 0 is padding everywhere (inputs, targets, score columns).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shoprec import schema as S
from shoprec.errors import DataSourceError

PAD = 0


@dataclass(frozen=True)
class ItemVocab:
    """The item catalogue as a fixed order: item id (text) <-> index 1..N (0 is padding)."""

    ids: tuple[str, ...]

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @cached_property
    def _positions(self) -> dict[str, int]:
        # Built once per vocabulary: serving looks up a few hundred ids per request, where a
        # dict is ~10x faster than rebuilding a pandas Index of the whole catalogue each time.
        return {item: n + 1 for n, item in enumerate(self.ids)}

    def index(self, item_ids: Sequence[object] | pd.Series | np.ndarray) -> np.ndarray:
        """Indices of `item_ids` (as text); unknown items get 0 (padding)."""
        if len(item_ids) > 10_000:  # whole event tables: pandas' vectorised hash join
            positions = pd.Index(self.ids).get_indexer(pd.Series(item_ids, dtype="object").astype(str))
            return (positions + 1).astype(np.int64)  # -1 (unknown) becomes 0
        lookup = self._positions
        return np.fromiter((lookup.get(str(i), PAD) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def item_ids(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """Item ids of indices 1..N."""
        return [self.ids[int(i) - 1] for i in indices]

    def write(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps({"item_ids": list(self.ids)}))
        return Path(path)

    @staticmethod
    def read(path: str | Path) -> "ItemVocab":
        return ItemVocab(tuple(json.loads(Path(path).read_text())["item_ids"]))


def build_vocab(events: pd.DataFrame, items: pd.DataFrame | None = None) -> ItemVocab:
    """Every item of the items table (so items without interactions get an index), then any
    further item seen in the events, each in sorted text order."""
    if S.ITEM_ID not in events:
        raise DataSourceError(f"events frame has no '{S.ITEM_ID}' column: {list(events.columns)}")
    known: list[str] = []
    if items is not None and S.ITEM_ID in items:
        known = sorted(pd.unique(items[S.ITEM_ID].astype(str)))
    extra = sorted(set(pd.unique(events[S.ITEM_ID].astype(str))) - set(known))
    return ItemVocab(tuple(known + extra))


@dataclass
class Sequences:
    """Per-user item sequences in time order: `users[i]` bought/viewed `items[i]` (indices)."""

    users: np.ndarray  # [U] user ids as text
    items: list[np.ndarray]  # U arrays of int64 item indices, oldest first

    def __len__(self) -> int:
        return len(self.users)


def build_sequences(events: pd.DataFrame, vocab: ItemVocab) -> Sequences:
    """Sort events by (user, time) - stable, so ties keep their file order - and split per user.

    Events of items outside the vocabulary are dropped (they cannot be scored)."""
    missing = [c for c in (S.USER_ID, S.ITEM_ID) if c not in events]
    if missing:
        raise DataSourceError(f"events frame lacks column(s) {missing}: {list(events.columns)}")
    keys = [S.USER_ID, S.TIMESTAMP] if S.TIMESTAMP in events else [S.USER_ID]
    frame = events.assign(**{S.USER_ID: events[S.USER_ID].astype(str)}).sort_values(
        keys, kind="stable"
    )
    index = vocab.index(frame[S.ITEM_ID].to_numpy())
    users = frame[S.USER_ID].to_numpy()
    keep = index != PAD
    index, users = index[keep], users[keep]
    if len(index) == 0:
        return Sequences(np.array([], dtype=object), [])
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    parts = np.split(index, starts[1:])
    return Sequences(users[starts], parts)


@dataclass
class Batch:
    """inputs [B, L] and targets [B, L], left-padded with 0; a target is 0 where there is none."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))


def pad_histories(histories: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """The last `max_len` items of each history, left-padded: [B, max_len or shorter]."""
    width = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), width), dtype=np.int64)
    for i, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-width:]
        if len(tail):
            out[i, width - len(tail):] = tail
    return torch.from_numpy(out)
