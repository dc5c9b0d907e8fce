"""The gate on crafted per-user metrics: each rule alone, first-run behaviour, the paired bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shoprec.errors import GateError
from shoprec.evaluation.splits import SplitSpec
from shoprec.lifecycle.gate import Policy, decide_promotion, gate_bundle, paired_bootstrap
from shoprec.lifecycle.window import GateScores, GateWindow, newest_window

USERS = tuple(f"u{n}" for n in range(200))
SHORT = np.arange(200) < 50  # the first 50 users have short histories
RNG = np.random.default_rng(7)
BASE = RNG.uniform(0.0, 0.6, size=200)


def scores(name: str, ndcg: np.ndarray, coverage: float = 0.30) -> GateScores:
    return GateScores(name, USERS, np.asarray(ndcg, dtype=float), coverage)


def failed(decision) -> list[str]:
    return [c.name for c in decision.checks if not c.passed]


POLICY = Policy(min_improvement=0.01, coverage_tolerance=0.02, short_history_tolerance=0.01)


def test_a_clear_improvement_with_no_guard_drop_is_promoted():
    decision = decide_promotion(scores("cand", BASE + 0.05), scores("champ", BASE), short_history=SHORT,
                      policy=POLICY)

    assert decision.promote, decision.reasons
    assert failed(decision) == []
    assert decision.metrics["delta NDCG@10"] == pytest.approx(0.05)
    assert all(reason.startswith("PASS") for reason in decision.reasons)


def test_an_improvement_below_the_margin_alone_rejects():
    # +0.005 for every user: significant (the interval is a point above zero) but below 0.01.
    decision = decide_promotion(scores("cand", BASE + 0.005), scores("champ", BASE), short_history=SHORT,
                      policy=POLICY)

    assert not decision.promote
    assert failed(decision) == ["NDCG@10 margin vs champion"]
    assert "+0.0050" in decision.reasons[0] and "misses the required improvement of at least +0.0100" in decision.reasons[0]
    relaxed = decide_promotion(scores("cand", BASE + 0.005), scores("champ", BASE), short_history=SHORT,
                     policy=Policy(min_improvement=0.001))
    assert relaxed.promote


def test_an_improvement_whose_interval_reaches_zero_alone_rejects():
    # The mean rises by 0.02 through two long-history users only: the margin holds, but a
    # resample that misses both users shows no gain, so the interval's lower bound is 0.
    candidate = BASE.copy()
    candidate[[150, 151]] += 2.0
    decision = decide_promotion(scores("cand", candidate), scores("champ", BASE), short_history=SHORT,
                      policy=POLICY)

    assert not decision.promote
    assert failed(decision) == ["NDCG@10 significance vs champion"]
    assert decision.metrics["delta NDCG@10"] == pytest.approx(0.02)
    assert decision.metrics["delta low"] <= 0 < decision.metrics["delta high"]


def test_a_coverage_drop_beyond_tolerance_alone_rejects():
    decision = decide_promotion(scores("cand", BASE + 0.05, coverage=0.25), scores("champ", BASE, coverage=0.30),
                      short_history=SHORT, policy=POLICY)

    assert failed(decision) == ["coverage guard"]
    assert "drop +0.0500" in decision.reasons[0] and "beyond tolerance 0.0200" in decision.reasons[0]
    within = decide_promotion(scores("cand", BASE + 0.05, coverage=0.29), scores("champ", BASE, coverage=0.30),
                    short_history=SHORT, policy=POLICY)
    assert within.promote


def test_a_short_history_drop_beyond_tolerance_alone_rejects():
    candidate = BASE + 0.08
    candidate[SHORT] = BASE[SHORT] - 0.03  # better overall, worse for newcomers
    decision = decide_promotion(scores("cand", candidate), scores("champ", BASE), short_history=SHORT,
                      policy=POLICY)

    assert failed(decision) == ["short-history NDCG@10 guard"]
    assert "on 50 short-history users: drop +0.0300" in decision.reasons[0]
    tolerant = decide_promotion(scores("cand", candidate), scores("champ", BASE), short_history=SHORT,
                      policy=Policy(min_improvement=0.01, short_history_tolerance=0.05))
    assert tolerant.promote


def test_first_run_the_candidate_must_beat_mostpop_and_markov1():
    baselines = {"mostpop": scores("mostpop", BASE - 0.1), "markov1": scores("markov1", BASE - 0.05)}
    beats_both = decide_promotion(scores("cand", BASE), None, short_history=SHORT, policy=POLICY,
                        baselines=baselines)
    assert beats_both.promote and beats_both.champion is None
    assert [c.name for c in beats_both.checks] == [
        "NDCG@10 margin vs mostpop", "NDCG@10 significance vs mostpop",
        "NDCG@10 margin vs markov1", "NDCG@10 significance vs markov1"]

    baselines["markov1"] = scores("markov1", BASE + 0.02)
    loses = decide_promotion(scores("cand", BASE), None, short_history=SHORT, policy=POLICY, baselines=baselines)
    assert not loses.promote
    assert failed(loses) == ["NDCG@10 margin vs markov1", "NDCG@10 significance vs markov1"]
    assert "no champion yet" in loses.to_markdown()


def test_first_run_without_baseline_scores_is_an_error():
    with pytest.raises(GateError, match="markov1"):
        decide_promotion(scores("cand", BASE), None, short_history=SHORT, baselines={"mostpop": scores("m", BASE)})


def test_scores_from_different_windows_are_refused():
    other = GateScores("champ", tuple(reversed(USERS)), BASE, 0.3)
    with pytest.raises(GateError, match="same window"):
        decide_promotion(scores("cand", BASE), other, short_history=SHORT)


def test_paired_bootstrap_sees_a_consistent_gain_that_unpaired_intervals_miss():
    # Users differ wildly from one another, but the candidate is better for every one of them.
    champion = RNG.uniform(0.0, 1.0, size=300)
    candidate = champion + 0.01
    delta, low, high = paired_bootstrap(candidate, champion, 1000, 0.95, seed=0)
    assert delta == pytest.approx(0.01) and low == pytest.approx(0.01) and high == pytest.approx(0.01)
    with pytest.raises(GateError):
        paired_bootstrap(candidate, champion[:10])


def test_decision_renders_json_and_markdown_with_its_reasons(tmp_path):
    decision = decide_promotion(scores("cand", BASE + 0.005), scores("champ", BASE), short_history=SHORT,
                      policy=POLICY)
    decision.write(tmp_path / "decision.json", tmp_path / "decision.md")

    data = json.loads((tmp_path / "decision.json").read_text())
    assert data["promote"] is False and data["reasons"][0].startswith("FAIL NDCG@10 margin")
    assert data["policy"]["min_improvement"] == 0.01
    markdown = (tmp_path / "decision.md").read_text()
    assert markdown.startswith("# Promotion decision: REJECT")
    assert "| NDCG@10 margin vs champion | **FAIL** |" in markdown


def test_gate_scores_real_bundles_on_the_same_window(tmp_path):
    from tests.registry.conftest import make_bundle, sequences_frame
    from shoprec.sequences import build_vocab

    events = sequences_frame()
    window = newest_window(events, None, SplitSpec())
    assert len(window) == 12 and window.targets[0] == "i6" and window.histories[0][-1] == "i5"
    vocab = build_vocab(events)
    train = [vocab.index(list(s)) for s in window.train]
    markov = make_bundle(tmp_path / "markov", "markov1", sequences=train, vocab=vocab)
    mostpop = make_bundle(tmp_path / "mostpop", "mostpop", sequences=train, vocab=vocab)
    policy = Policy(bootstrap=200)

    first_run = gate_bundle(markov, window, None, policy)  # Markov-1 vs itself: no gain
    assert not first_run.promote
    assert failed(first_run) == ["NDCG@10 margin vs markov1", "NDCG@10 significance vs markov1"]

    versus_mostpop = gate_bundle(markov, window, mostpop, policy)
    assert versus_mostpop.champion == "champion"
    assert versus_mostpop.metrics["candidate NDCG@10"] > versus_mostpop.metrics["champion NDCG@10"]
    assert versus_mostpop.metrics["window"] == "leave-one-out"
    window.write(tmp_path / "window.json")
    assert GateWindow.read(tmp_path / "window.json") == window


def test_first_run_on_repeat_purchase_data_blocks_below_the_best_baseline_when_required_else_warns():
    from dataclasses import replace

    from shoprec.lifecycle.window import baseline_scores
    from tests.registry.conftest import sequences_frame

    window = newest_window(sequences_frame(), None, SplitSpec())
    assert set(baseline_scores(window, exclude_seen=True)) == {"mostpop", "markov1"}
    repeat = baseline_scores(window, exclude_seen=False)
    # Repeat-purchase data: the strong repeat baselines are fit (tuned) and scored too.
    assert set(repeat) == {"mostpop", "markov1", "buyagain", "decayfreq", "tifuknn"}
    assert all(s.users == window.users for s in repeat.values())
    baselines = {"mostpop": scores("mostpop", BASE - 0.1), "markov1": scores("markov1", BASE - 0.05),
                 "buyagain": scores("buyagain", BASE + 0.05), "tifuknn": scores("tifuknn", BASE - 0.01)}
    strict = replace(POLICY, require_all_baselines=True)
    # Required, a candidate that beats MostPop and Markov-1 but trails "buy again" is rejected:
    # the shop would be better served by the baseline.
    decision = decide_promotion(scores("cand", BASE), None, short_history=SHORT, policy=strict, baselines=baselines)
    assert not decision.promote
    assert failed(decision) == ["NDCG@10 margin vs buyagain", "NDCG@10 significance vs buyagain"]
    assert decision.reasons[0].startswith("FAIL NDCG@10 margin vs buyagain")
    assert decision.metrics["best baseline"] == "buyagain"
    assert "baselines (mostpop, markov1, buyagain, tifuknn)" in decision.to_markdown()
    # Beating the best baseline (and so every one) by a significant margin promotes.
    wins = decide_promotion(scores("cand", BASE + 0.07), None, short_history=SHORT, policy=strict,
                            baselines=baselines)
    assert wins.promote, wins.reasons
    # Required by default; relaxed, trailing an extra baseline is reported (WARN), not
    # blocking; MostPop and Markov-1 still block.
    assert Policy().require_all_baselines
    lenient = decide_promotion(scores("cand", BASE), None, short_history=SHORT, baselines=baselines,
                               policy=replace(POLICY, require_all_baselines=False))
    assert lenient.promote and lenient.reasons[0].startswith("WARN NDCG@10 margin vs buyagain")
    assert "**WARN**" in lenient.to_markdown()
