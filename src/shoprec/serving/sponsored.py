"""Sponsored slots in a predictor answer: the request's candidates checked, their relevance
read from the same score row the organic list came from, and the answer rebuilt by
`shoprec.ranking.sponsored.place_sponsored` (the rules live there; `shoprec.ranking.relevance`
defines relevance: the percentile in the user's full ranking).

The answer keeps the predictor's parallel lists ("items", "scores", and "reasons" when asked)
and gains "sponsored": one boolean per item. A sponsored item's score is the model's own score
for it (so clients can see what the model thought of it) and its reason is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from shoprec.ranking.relevance import eligible, percentile_relevance
from shoprec.ranking.sponsored import DEFAULT_FLOOR, DEFAULT_SLOTS, Candidate, check_candidates, place_sponsored
from shoprec.sequences import ItemVocab

MAX_CANDIDATES = 100  # per instance: bounds the work one request can ask for
FIELD = "sponsored"
PARALLEL = ("scores", "reasons")  # the answer's lists that follow "items" position by position


def candidates_from(raw: Any) -> list[Candidate]:
    """The request's `"sponsored": [{"item_id": ..., "bid": ...}]` as candidates; ValueError
    naming the entry at fault (the request parser turns it into a 400)."""
    if not isinstance(raw, list):
        raise ValueError(f"'{FIELD}' must be a list of {{\"item_id\": ..., \"bid\": ...}} objects")
    if len(raw) > MAX_CANDIDATES:
        raise ValueError(f"'{FIELD}' holds {len(raw)} candidates; at most {MAX_CANDIDATES}")
    out = []
    for n, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) != {"item_id", "bid"}:
            raise ValueError(f"'{FIELD}'[{n}] must be an object with exactly 'item_id' and 'bid'")
        item, bid = entry["item_id"], entry["bid"]
        if not isinstance(item, (str, int)) or isinstance(item, bool) or str(item) == "":
            raise ValueError(f"'{FIELD}'[{n}].item_id must be a non-empty string")
        if isinstance(bid, bool) or not isinstance(bid, (int, float)) or not math.isfinite(bid) or bid < 0:
            raise ValueError(f"'{FIELD}'[{n}].bid must be a finite number >= 0 (item {str(item)[:60]!r})")
        out.append(Candidate(str(item), float(bid)))
    return out


def with_sponsored(answer: dict[str, Any], scores: torch.Tensor | np.ndarray, vocab: ItemVocab,
                   candidates: Sequence[Candidate], *, k: int, slots: int = DEFAULT_SLOTS,
                   floor: float = DEFAULT_FLOOR) -> dict[str, Any]:
    """`answer` ({"items", "scores"[, "reasons"]}: the organic top k, best first) with up to
    `slots` sponsored items placed, and a "sponsored" flag per item.

    scores: the user's [N+1] (or [1, N+1]) score row with every item the answer may not show
    already at -inf (seen items under the seen-items policy, `exclude`, a category filter): a
    candidate there is never shown. ValueError names unknown items and bad bids."""
    row = np.atleast_2d(scores.detach().float().numpy() if isinstance(scores, torch.Tensor)
                        else np.asarray(scores, dtype=np.float64))[0]
    index = vocab.index([c.item for c in candidates]) if candidates else np.zeros(0, dtype=np.int64)
    known = index > 0
    relevance_of = percentile_relevance(row, index[known]) if known.any() else np.zeros(0)
    showable = eligible(row, index[known]) if known.any() else np.zeros(0, dtype=bool)
    relevance: dict[Any, float | None] = {
        c.item: (float(r) if ok else None)
        for c, r, ok in zip([c for c, k_ in zip(candidates, known) if k_], relevance_of, showable)
    }
    check_candidates(candidates, relevance)  # unknown ids, bad bids, repeats: named
    placed = place_sponsored(answer["items"], candidates, relevance, k=k, slots=slots, floor=floor)
    position = {item: n for n, item in enumerate(answer["items"])}
    out: dict[str, Any] = {key: value for key, value in answer.items() if key not in ("items", *PARALLEL)}
    out["items"] = [str(s.item) for s in placed]
    for key in PARALLEL:
        if key in answer:
            out[key] = [answer[key][position[s.item]] if not s.sponsored else
                        (float(row[vocab.index([s.item])[0]]) if key == "scores" else None) for s in placed]
    out[FIELD] = [s.sponsored for s in placed]
    return out
