"""Sponsored slots: the floor, the cap, organic order, ranking by relevance x bid, and the
serving adapter on a real model's score row."""

from __future__ import annotations

import numpy as np
import pytest
from shoprec.models.baselines import MostPop
from shoprec.ranking.relevance import percentile_relevance
from shoprec.ranking.sponsored import Candidate, place_sponsored, slot_positions
from shoprec.sequences import ItemVocab
from shoprec.serving.sponsored import candidates_from, with_sponsored

ORGANIC = ["o1", "o2", "o3", "o4", "o5", "o6"]


def organic_part(slots):
    return [s.item for s in slots if not s.sponsored]


def test_a_candidate_below_the_floor_never_appears_whatever_its_bid() -> None:
    candidates = [Candidate("low", 1e9), Candidate("high", 0.1)]
    relevance = {"low": 0.85, "high": 0.95}
    placed = place_sponsored(ORGANIC, candidates, relevance, k=6, floor=0.9)
    assert "low" not in [s.item for s in placed]
    assert [s.item for s in placed if s.sponsored] == ["high"]
    # exactly at the floor is not above it
    assert not any(s.sponsored for s in place_sponsored(ORGANIC, [Candidate("x", 5.0)], {"x": 0.9}, k=6, floor=0.9))


def test_excluded_candidates_are_never_shown_even_at_floor_zero() -> None:
    placed = place_sponsored(ORGANIC, [Candidate("seen", 10.0)], {"seen": None}, k=6, floor=0.0)
    assert [s.item for s in placed] == ORGANIC


def test_organic_order_is_kept_and_the_list_keeps_k_positions() -> None:
    candidates = [Candidate(f"s{n}", 1.0 + n) for n in range(4)]
    relevance = {c.item: 0.99 for c in candidates}
    placed = place_sponsored(ORGANIC, candidates, relevance, k=6, floor=0.5)
    assert len(placed) == 6
    assert organic_part(placed) == ORGANIC[:4]  # in order, the last ones make room
    assert [n for n, s in enumerate(placed) if s.sponsored] == slot_positions(2, 6) == [1, 4]


@pytest.mark.parametrize("slots", [0, 1, 2, 3])
def test_never_more_sponsored_items_than_slots(slots: int) -> None:
    candidates = [Candidate(f"s{n}", 1.0) for n in range(10)]
    placed = place_sponsored(ORGANIC, candidates, {c.item: 0.95 for c in candidates}, k=6, slots=slots, floor=0.5)
    assert sum(s.sponsored for s in placed) == min(slots, 2)  # positions 1 and 4 exist in 6; 7 does not
    if slots == 0:
        assert [s.item for s in placed] == ORGANIC


def test_ranked_by_relevance_times_bid() -> None:
    candidates = [Candidate("a", 1.0), Candidate("b", 3.0), Candidate("c", 2.0)]
    relevance = {"a": 0.99, "b": 0.6, "c": 0.95}  # values 0.99, 1.8, 1.9
    placed = place_sponsored(ORGANIC, candidates, relevance, k=6, floor=0.5)
    assert [s.item for s in placed if s.sponsored] == ["c", "b"]
    assert placed[1].sponsored and placed[1].bid == 2.0 and placed[1].relevance == 0.95


def test_a_candidate_already_in_the_organic_list_is_not_shown_twice() -> None:
    placed = place_sponsored(ORGANIC, [Candidate("o3", 5.0)], {"o3": 0.99}, k=6, floor=0.5)
    assert [s.item for s in placed] == ORGANIC and not any(s.sponsored for s in placed)


def test_unknown_items_negative_bids_and_repeats_are_named() -> None:
    with pytest.raises(ValueError, match="unknown sponsored item.*'ghost'"):
        place_sponsored(ORGANIC, [Candidate("ghost", 1.0)], {}, k=6)
    with pytest.raises(ValueError, match=r"bid.*x \(-1.0\)"):
        place_sponsored(ORGANIC, [Candidate("x", -1.0)], {"x": 0.99}, k=6)
    with pytest.raises(ValueError, match="more than once.*'x'"):
        place_sponsored(ORGANIC, [Candidate("x", 1.0), Candidate("x", 2.0)], {"x": 0.99}, k=6)


def test_percentile_relevance_is_the_place_in_the_full_ranking() -> None:
    scores = np.array([-np.inf, 5.0, 1.0, 3.0, -np.inf, 3.0])  # column 0 padding
    relevance = percentile_relevance(scores, np.array([1, 2, 3, 4]))
    assert relevance[0] == 1.0  # the top item
    assert relevance[3] == 0.0  # masked
    assert relevance[1] == pytest.approx(1 - 3 / 4)  # items 1, 3 and 5 score >= 1.0
    assert relevance[2] == pytest.approx(1 - 2 / 4)  # a tie counts against the item


def model_and_vocab():
    """MostPop over 6 items: popularity 6 > 5 > 4 > 3 > 2 > 1 for i1..i6."""
    sequences = [np.array([i] * (7 - i)) for i in range(1, 7)]
    return MostPop(6).fit(sequences), ItemVocab(tuple(f"i{i}" for i in range(1, 7)))


def test_serving_adapter_marks_sponsored_and_keeps_parallel_lists() -> None:
    model, vocab = model_and_vocab()
    scores = model.score_all([np.array([], dtype=np.int64)]).float()
    scores[0, 6] = float("-inf")  # i6 excluded by the request
    organic = {"items": ["i1", "i2", "i3"], "scores": [float(scores[0, n]) for n in (1, 2, 3)],
               "reasons": ["r1", "r2", "r3"]}
    candidates = [Candidate("i5", 100.0), Candidate("i4", 1.0), Candidate("i6", 1e6)]
    out = with_sponsored(organic, scores, vocab, candidates, k=3, slots=2, floor=0.0)
    # i4 (relevance 0.4) x 1 < i5 (relevance 0.2) x 100; i6 excluded: never shown; one slot fits k=3 at position 1
    assert out["items"] == ["i1", "i5", "i2"]
    assert out["sponsored"] == [False, True, False]
    assert out["reasons"] == ["r1", None, "r2"] and out["scores"][1] == pytest.approx(float(scores[0, 5]))
    high_floor = with_sponsored(organic, scores, vocab, candidates, k=3, floor=0.5)
    assert high_floor["items"] == organic["items"] and high_floor["sponsored"] == [False] * 3
    with pytest.raises(ValueError, match="'nope'"):
        with_sponsored(organic, scores, vocab, [Candidate("nope", 1.0)], k=3)


def test_request_candidates_are_checked() -> None:
    assert candidates_from([{"item_id": "i1", "bid": 2}]) == [Candidate("i1", 2.0)]
    for bad, where in (([{"item_id": "i1", "bid": -2}], r"\[0\].bid"), ([{"item_id": "i1"}], r"\[0\]"),
                       ({"item_id": "i1"}, "list"), ([{"item_id": "", "bid": 1}], "item_id")):
        with pytest.raises(ValueError, match=where):
            candidates_from(bad)
