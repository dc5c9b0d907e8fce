"""The typed split spec: round trips (a dict, JSON, and the legacy strings older bundles
recorded), a temporal cutoff resolved when the split is made and recorded on the split, and
evaluation, the gate window and the promote step reproducing the split a bundle records."""

from __future__ import annotations

import json
from datetime import timezone

import numpy as np
import pandas as pd
import pytest

from shoprec.errors import DataSourceError
from shoprec.evaluation.report import evaluate_bundle
from shoprec.evaluation.splits import SplitSpec, leave_one_out, make_split, temporal_cutoff, temporal_split
from shoprec.lifecycle.gate import Check, Policy
from shoprec.lifecycle.promotion import run_promotion
from shoprec.lifecycle.registry import Registry
from shoprec.lifecycle.window import newest_window
from shoprec.models.baselines import BASELINES
from shoprec.models.bundle import load_bundle, save_bundle
from shoprec.sequences import build_sequences, build_vocab
from shoprec.training.fit import FitConfig, fit_and_evaluate, save_outcome
from shoprec.training.loop import TrainConfig

CUT = pd.Timestamp("2024-01-08 12:00", tz="UTC")


@pytest.mark.parametrize("spec", [
    SplitSpec(), SplitSpec("leave-one-out", validation_users=20, seed=3),
    SplitSpec("temporal"), SplitSpec("temporal", CUT),
])
def test_split_spec_round_trips_through_a_dict_and_json(spec):
    assert SplitSpec.from_dict(spec.to_dict()) == spec
    assert SplitSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_split_spec_reads_the_strings_older_bundles_recorded():
    assert SplitSpec.from_dict("leave-one-out") == SplitSpec()
    assert SplitSpec.from_dict(None) == SplitSpec.from_dict("") == SplitSpec()  # nothing recorded
    legacy = SplitSpec.from_dict("temporal@2024-01-08T12:00:00+00:00")
    assert legacy == SplitSpec("temporal", CUT)
    assert legacy.label == "temporal@2024-01-08T12:00:00+00:00"  # the same string back
    assert SplitSpec().label == "leave-one-out"


def test_split_spec_cutoffs_are_utc_and_bad_specs_are_refused():
    assert SplitSpec("temporal", "2024-01-08 12:00").cutoff == CUT  # naive: taken as UTC
    shifted = SplitSpec("temporal", "2024-01-08T14:00:00+02:00").cutoff
    assert shifted == CUT and shifted.tzinfo == timezone.utc
    assert SplitSpec("temporal", "").cutoff is None  # a pipeline parameter's "no cutoff"
    assert "90%" in SplitSpec("temporal").describe() and CUT.isoformat() in SplitSpec("temporal", CUT).describe()
    with pytest.raises(DataSourceError, match="unknown split"):
        SplitSpec("random")  # type: ignore[arg-type]
    with pytest.raises(DataSourceError, match="cutoff"):
        SplitSpec("leave-one-out", CUT)
    with pytest.raises(DataSourceError, match="validation_users"):
        SplitSpec("temporal", validation_users=5)


def test_make_split_resolves_a_temporal_cutoff_and_records_it(planted):
    events = planted.events
    vocab = build_vocab(events, planted.items)
    split = make_split(events, vocab, SplitSpec("temporal"))
    cutoff = temporal_cutoff(events)
    assert split.spec == SplitSpec("temporal", cutoff)
    assert split.kind == f"temporal@{cutoff.isoformat()}"  # the display string reports keep showing
    assert split.spec.to_dict()["cutoff"] == cutoff.isoformat()
    direct = temporal_split(events, vocab, cutoff)
    again = make_split(events, vocab, SplitSpec.from_dict(json.loads(json.dumps(split.spec.to_dict()))))
    for other in (direct, again):
        assert other.kind == split.kind
        assert other.test.users.tolist() == split.test.users.tolist()
        assert other.test.targets.tolist() == split.test.targets.tolist()
        assert [s.tolist() for s in other.train] == [s.tolist() for s in split.train]


def test_make_split_leave_one_out_records_its_validation_sample(planted):
    vocab = build_vocab(planted.events, planted.items)
    spec = SplitSpec(validation_users=20, seed=3)
    split = make_split(planted.events, vocab, spec)
    assert split.spec == spec and split.kind == "leave-one-out" and len(split.valid) == 20
    same = leave_one_out(build_sequences(planted.events, vocab), 20, 3)
    assert same.valid.users.tolist() == split.valid.users.tolist()


def _baseline_bundle(directory, planted, training):
    """A Markov-1 bundle (fit in milliseconds) whose config.json records `training`."""
    vocab = build_vocab(planted.events, planted.items)
    made = make_split(planted.events, vocab, SplitSpec("temporal"))
    model = BASELINES["markov1"](vocab.n_items).fit(made.train)
    return save_bundle(directory, model, vocab, exclude_seen=True, metrics={}, training=training(made)), made


def test_evaluate_bundle_and_the_gate_window_use_the_recorded_temporal_split(planted, tmp_path):
    bundle, made = _baseline_bundle(tmp_path / "spec", planted, lambda s: {"split": s.spec.to_dict()})
    legacy, _ = _baseline_bundle(tmp_path / "legacy", planted, lambda s: {"split": s.kind})
    loo = make_split(planted.events, build_vocab(planted.events, planted.items), SplitSpec())
    assert 0 < len(made.test) < len(loo.test)  # the two splits test different users

    evaluated = evaluate_bundle(bundle, planted, bootstrap=20)
    assert evaluated.scalars["test_users"] == len(made.test)
    assert made.spec.describe() in evaluated.markdown
    # A bundle that recorded the old "temporal@<iso>" string is evaluated on the same cutoff.
    assert evaluate_bundle(legacy, planted, bootstrap=20).scalars == evaluated.scalars

    for directory in (bundle, legacy):
        recorded = SplitSpec.from_dict(load_bundle(directory).config["training"]["split"])
        window = newest_window(planted.events, planted.items, recorded)
        assert window.kind == made.kind
        assert window.users == tuple(str(u) for u in made.test.users)
        assert window.targets == tuple(build_vocab(planted.events, planted.items).item_ids(made.test.targets))


def test_the_promote_step_builds_its_window_from_the_candidates_recorded_split(planted, tmp_path):
    bundle, made = _baseline_bundle(tmp_path / "candidate", planted, lambda s: {"split": s.spec.to_dict()})
    data_dir = planted.write(tmp_path / "data")
    outcome = run_promotion(bundle, data_dir, Registry(tmp_path / "registry"), Policy(bootstrap=20),
                            infra_check=lambda _: Check("infra check", True, "skipped in this test"))
    assert outcome.decision.metrics["window"] == made.kind


def test_a_model_trained_on_a_temporal_split_is_evaluated_on_the_same_cutoff(planted, tmp_path):
    config = FitConfig(model={"hidden": 16, "max_len": 20, "blocks": 1, "dropout": 0.1},
                       train=TrainConfig(max_epochs=2, batch_size=64, learning_rate=5e-3, progress=False),
                       split=SplitSpec("temporal"), content=False, baselines=("mostpop",), bootstrap=20)
    outcome = fit_and_evaluate(planted, config)
    assert outcome.split.spec == SplitSpec("temporal", temporal_cutoff(planted.events))
    bundle = save_outcome(outcome, tmp_path / "bundle", source="planted")
    recorded = load_bundle(bundle).config["training"]["split"]
    assert recorded == outcome.split.spec.to_dict() and recorded["cutoff"] is not None
    assert outcome.split.spec.describe() in (bundle / "MODEL_CARD.md").read_text()

    evaluated = evaluate_bundle(bundle, planted, baselines=("mostpop",), bootstrap=20)
    assert evaluated.scalars["test_users"] == len(outcome.split.test)
    for name in ("sasrec", "mostpop"):
        assert np.isclose(evaluated.scalars[f"{name}_NDCG@10"], outcome.results[name].to_dict()["metrics"]["NDCG@10"],
                          atol=1e-6)
