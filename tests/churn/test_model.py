"""The churn model: beats recency when the signal needs more than recency (gate passes, version
promoted), bundle verified by sha256 at every load, drivers name what raised the risk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shoprec.churn.bundle import (CHURN_MODEL_NAME, churn_registry, load_churn_bundle, load_registered)
from shoprec.churn.fit import FitConfig
from shoprec.churn.scoring import score_matrix, score_rows
from shoprec.churn.train import ChurnConfig, train_churn
from shoprec.errors import BundleIntegrityError, RegistryError
from shoprec.features import names as N
from shoprec.models.bundle import WEIGHTS_FILE

from .conftest import generated_frame

CONFIG = ChurnConfig(resamples=300, fit=FitConfig(epochs=120, patience=20))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("churn-model")
    registry = churn_registry(root / "registry")
    return train_churn(generated_frame(), root / "bundle", CONFIG, registry), registry, root


def test_model_beats_recency_when_pace_matters_and_is_promoted(trained) -> None:
    outcome, registry, _ = trained
    models = outcome.evaluation["models"]
    assert models["churn_mlp"]["pr_auc"] > models["recency"]["pr_auc"]
    assert outcome.gate["passed"] and outcome.gate["low"] > 0
    assert outcome.promoted and registry.production() == outcome.version
    assert registry.get(outcome.version).kind == "churn-mlp"
    assert set(registry.get(outcome.version).metrics) == {"roc_auc", "pr_auc", "brier"}
    # Its own model name: a registry root of its own under the platform's.
    assert registry.uri.endswith(CHURN_MODEL_NAME)


def test_report_has_metrics_intervals_and_a_reliability_plot(trained) -> None:
    outcome, _, _ = trained
    card = (outcome.bundle_dir / "MODEL_CARD.md").read_text()
    for text in ("ROC-AUC", "PR-AUC", "Brier", "recency", "frequency", "paired bootstrap", "Reliability"):
        assert text in card
    page = (outcome.bundle_dir / "report.html").read_text()
    assert "<svg" in page and "<polyline" in page
    assert set(outcome.evaluation["reliability"]) == {"churn_mlp", "recency", "frequency"}


def test_registered_weights_are_checked_against_their_sha256(trained, tmp_path: Path) -> None:
    outcome, registry, _ = trained
    bundle, version = load_registered(registry)
    assert version == outcome.version and bundle.features[-1] == N.DAYS_SINCE_LAST_EVENT
    copy = tmp_path / "copy"
    shutil.copytree(outcome.bundle_dir, copy)
    weights = copy / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError):
        load_churn_bundle(copy)
    with pytest.raises(BundleIntegrityError):  # the registry's record is checked too
        load_churn_bundle(outcome.bundle_dir, expected_sha256="0" * 64)
    with pytest.raises(RegistryError, match="no production"):
        load_registered(churn_registry(tmp_path / "empty"))
    assert json.loads((outcome.bundle_dir / "config.json").read_text())["model_name"] == CHURN_MODEL_NAME


def test_same_answers_from_the_saved_bundle(trained) -> None:
    outcome, _, _ = trained
    bundle = load_churn_bundle(outcome.bundle_dir)
    frame = generated_frame(users=20, snapshots=1, seed=5)
    x = frame[bundle.features].to_numpy(np.float64)
    again = load_churn_bundle(outcome.bundle_dir)
    assert [a["churn_probability"] for a in score_matrix(bundle, x)] == \
        [a["churn_probability"] for a in score_matrix(again, x)]


def test_a_long_silence_raises_risk_and_is_named_as_the_driver(trained) -> None:
    outcome, _, _ = trained
    bundle = load_churn_bundle(outcome.bundle_dir)
    typical = dict(zip(bundle.features, bundle.reference))
    quiet = {**typical, N.DAYS_SINCE_LAST_EVENT: 55.0, "user_id": "quiet"}
    recent = {**typical, N.DAYS_SINCE_LAST_EVENT: 0.5, "user_id": "recent"}
    unknown = {"user_id": "nobody", "missing": True}
    a, b, c = score_rows(bundle, [quiet, recent, unknown])
    assert a["churn_probability"] > b["churn_probability"]
    assert a["drivers"][0]["feature"] == N.DAYS_SINCE_LAST_EVENT and a["drivers"][0]["contribution"] > 0
    assert all(d["feature"] != N.DAYS_SINCE_LAST_EVENT for d in b["drivers"])
    assert c == {"user_id": "nobody", "churn_probability": None, "drivers": [], "known": False}
