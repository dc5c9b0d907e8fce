"""Exposure of recommendation lists: who gets the slots.

- long-tail share: the share of all recommended slots that go to long-tail items (outside the
  head that holds 80% of the training interactions, `evaluation.evaluate.head_items`);
- per group (a seller, a brand): each group's share of the slots beside its share of the
  catalogue, and the Gini coefficient of the slot shares (0: every group equally exposed);
- NDCG of arbitrary final lists (re-ranked, with sponsored items) against one target per user.
Lists are [U, k] item indices (0 = an empty slot, never counted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shoprec.evaluation import metrics as M


def long_tail_share(lists: np.ndarray, head: np.ndarray) -> float:
    """Share of the filled slots of `lists` holding an item outside `head` ([N+1] boolean)."""
    items = np.asarray(lists)
    filled = items[items > 0]
    return float((~np.asarray(head)[filled]).mean()) if len(filled) else float("nan")


def group_exposure(lists: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Per group (`groups`: [N+1] label per item index, None for none): slots, share of the
    slots, share of the catalogue, and their ratio (1: exposed as often as its size)."""
    labels = pd.Series(np.asarray(groups, dtype=object)[1:])
    items = np.asarray(lists)
    shown = pd.Series(np.asarray(groups, dtype=object)[items[items > 0]])
    catalogue = labels.dropna().value_counts()
    slots = shown.dropna().value_counts().reindex(catalogue.index, fill_value=0)
    frame = pd.DataFrame({"slots": slots, "slot_share": slots / max(1, slots.sum()),
                          "catalogue_share": catalogue / catalogue.sum()})
    frame["exposure_ratio"] = frame["slot_share"] / frame["catalogue_share"]
    return frame.sort_values("slot_share", ascending=False)


def gini(shares: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; towards 1: one takes all)."""
    values = np.sort(np.asarray(shares, dtype=np.float64))
    n, total = len(values), values.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2.0 * np.arange(1, n + 1) - n - 1) @ values / (n * total))


def list_ranks(lists: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each user's target in their list; the list length when absent (so
    the evaluator's rank metrics give no credit)."""
    lists = np.asarray(lists)
    hits = lists == np.asarray(targets)[:, None]
    return np.where(hits.any(1), hits.argmax(1), lists.shape[1])


def ndcg_of_lists(lists: np.ndarray, targets: np.ndarray, k: int = 10) -> np.ndarray:
    """Per user NDCG@k of a final list (`metrics.ndcg_at_k` of the target's position)."""
    return M.ndcg_at_k(list_ranks(np.asarray(lists)[:, :k], targets), k)
