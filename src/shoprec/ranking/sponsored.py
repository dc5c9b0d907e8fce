"""Sponsored slots: paid items placed into an organic ranked list without ruining it.

The rules, in order:
- at most `slots` sponsored items per list (default 2), and only at positions the list has;
- a candidate is eligible only if its relevance (`shoprec.ranking.relevance`: the percentile
  of the item in the user's full ranking, 1 = the model's top item) is strictly above `floor`,
  it was not excluded (relevance None: seen, banned or filtered out), its bid is positive (a
  zero bid buys nothing) and it is not already in the organic top k (it is shown there, unpaid);
- eligible candidates are ranked by relevance x bid (ties: higher relevance, then the order
  given); the best takes the first sponsored position;
- sponsored positions are fixed (`slot_positions`: 2nd, 5th, 8th, ... by default: the top spot
  stays organic, and paid items are spread rather than stacked); organic items fill every
  other position in their own order, so the list's last organic items make room;
- faults are ValueErrors naming the items: a candidate the ranking does not know, a negative
  or non-finite bid, a candidate given twice.

Items are any hashable keys: item ids (serving) or vocabulary indices (evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_SLOTS = 2
# Top 10% of the user's full ranking: below it a paid item is one the model would not have
# placed near the list at all (benchmarks/RESULTS.md, "Sponsored slots", measures the cost).
DEFAULT_FLOOR = 0.9
FIRST_POSITION = 1  # 0-based: the first sponsored item is the list's second
SPACING = 3  # organic items between two sponsored positions, plus one
MAX_NAMED = 5  # items an error message names before "and N more"


@dataclass(frozen=True)
class Candidate:
    """A sponsored candidate: the item and what the advertiser bids for a slot."""

    item: Hashable
    bid: float


@dataclass(frozen=True)
class Slot:
    """One position of the answer. Sponsored slots carry their relevance and bid."""

    item: Hashable
    sponsored: bool = False
    relevance: float | None = None
    bid: float | None = None


def slot_positions(slots: int, k: int) -> list[int]:
    """0-based positions of up to `slots` sponsored items in a list of k."""
    return [p for p in range(FIRST_POSITION, FIRST_POSITION + SPACING * slots, SPACING) if p < k]


def check_candidates(candidates: Sequence[Candidate], known: Mapping[Hashable, float | None]) -> None:
    """ValueError naming unknown items, negative / non-finite bids and repeated items."""
    unknown = [c.item for c in candidates if c.item not in known]
    bad_bids = [f"{c.item} ({c.bid})" for c in candidates
                if not isinstance(c.bid, (int, float)) or not math.isfinite(c.bid) or c.bid < 0]
    seen: set[Hashable] = set()
    repeated = [c.item for c in candidates if c.item in seen or seen.add(c.item)]  # type: ignore[func-returns-value]
    faults = []
    if unknown:
        faults.append(f"unknown sponsored item(s) {_named(unknown)}")
    if bad_bids:
        faults.append(f"sponsored bid(s) must be finite and >= 0: {_named(bad_bids)}")
    if repeated:
        faults.append(f"sponsored item(s) given more than once: {_named(repeated)}")
    if faults:
        raise ValueError("; ".join(faults))


def place_sponsored(
    organic: Sequence[Hashable],
    candidates: Sequence[Candidate],
    relevance: Mapping[Hashable, float | None],
    *,
    k: int,
    slots: int = DEFAULT_SLOTS,
    floor: float = DEFAULT_FLOOR,
) -> list[Slot]:
    """The answer of k positions: `organic` (best first) with up to `slots` sponsored items.

    relevance: each candidate's relevance in [0, 1], None where the item may not be shown (seen
    and excluded, filtered out); a candidate missing from it is unknown (ValueError)."""
    if slots < 0 or k < 0:
        raise ValueError(f"slots and k must be >= 0, not slots={slots}, k={k}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"the relevance floor is a percentile in [0, 1], not {floor}")
    check_candidates(candidates, relevance)
    shown = set(organic[:k])
    ranked = []
    for order, c in enumerate(candidates):
        rel = relevance[c.item]
        if rel is None or not rel > floor or c.bid <= 0 or c.item in shown:
            continue
        ranked.append((-rel * c.bid, -rel, order, c, rel))
    ranked.sort(key=lambda row: row[:3])
    chosen = ranked[:len(slot_positions(slots, k))]  # a position past the list's end does not exist
    positions = dict(zip(slot_positions(len(chosen), k), chosen))
    out: list[Slot] = []
    organic_left, end = iter(organic), object()
    pending = list(chosen)
    for position in range(k):
        if position in positions:
            *_, c, rel = positions[position]
            pending.remove(positions[position])
            out.append(Slot(c.item, True, float(rel), float(c.bid)))
            continue
        item = next(organic_left, end)
        if item is end:  # a short organic list: the sponsored items left follow it
            break
        out.append(Slot(item))
    out += [Slot(c.item, True, float(rel), float(c.bid)) for *_, c, rel in pending][: k - len(out)]
    return out


def _named(items: Sequence[object]) -> str:
    shown = ", ".join(repr(i) if isinstance(i, str) and "(" not in i else str(i) for i in items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")
