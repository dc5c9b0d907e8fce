"""Churn fixtures: a generated churn frame (no store needed) and a real home: an Instacart slice
through the churn Feast home (historical retrieval), trained and registered under
`shoprec-churn`, with the platform's online store materialized for serving."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.churn.labels import CHURNED
from shoprec.features import names as N

if TYPE_CHECKING:
    from shoprec.churn.train import ChurnOutcome


def generated_frame(users: int = 600, snapshots: int = 4, seed: int = 0) -> pd.DataFrame:
    """A churn training set whose label depends on recency *relative to* the user's usual pace
    (silence of more than ~2 usual gaps), so recency alone ranks it only partly."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for k in range(snapshots):
        purchases = rng.integers(1, 60, users)
        gap = 200.0 / purchases  # days between purchases
        silence = rng.uniform(0, 60, users)
        churned = (silence > 2 * gap + rng.normal(0, 2, users)).astype(np.int64)
        frame = {S.USER_ID: [f"u{i}" for i in range(users)], S.TIMESTAMP: start + pd.Timedelta(days=30 * k),
                 CHURNED: churned}
        for name in N.USER_COUNT_FEATURES:
            frame[name] = 0.0
        frame["purchases_all"] = purchases.astype(float)
        frame["purchases_30d"] = np.round(30 / gap * (silence < 30)).astype(float)
        frame["purchases_7d"] = np.round(7 / gap * (silence < 7)).astype(float)
        frame[N.DISTINCT_ITEMS] = purchases * 3.0
        frame[N.DAYS_SINCE_LAST_EVENT] = silence
        rows.append(pd.DataFrame(frame))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> "ChurnOutcome":
    """A small churn bundle trained on a generated frame (no store), not registered."""
    import torch

    from shoprec.churn.fit import FitConfig
    from shoprec.churn.train import ChurnConfig, train_churn

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("churn-bundle") / "bundle"
    return train_churn(generated_frame(users=200, snapshots=3), out,
                       ChurnConfig(resamples=100, fit=FitConfig(epochs=40, patience=10)))


@dataclass
class ChurnHome:
    root: Path
    version: str
    users: list[str]


@pytest.fixture(scope="session")
def churn_home_built(tmp_path_factory: pytest.TempPathFactory) -> ChurnHome:
    import torch

    from shoprec.churn.bundle import churn_registry
    from shoprec.churn.features import churn_home
    from shoprec.churn.fit import FitConfig
    from shoprec.churn.train import ChurnConfig, run_churn
    from shoprec.data.loaders import limit_to_users, load_instacart
    from shoprec.features.settings import FeatureStoreSettings
    from shoprec.features.store import apply_definitions, materialize
    from shoprec.features.tables import build_feature_tables
    from shoprec.home import Home

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("churn-home")
    home = Home(root)
    data = limit_to_users(load_instacart(), 120)
    config = ChurnConfig(snapshots=4, resamples=200, fit=FitConfig(epochs=60, patience=10))
    outcome = run_churn(data.events, data.items, FeatureStoreSettings(home=churn_home(home)),
                        root / "bundle", home.registry, config, source="instacart[:120]")
    registry = churn_registry(home.registry)
    if not outcome.promoted:  # the gate's verdict is data's business: a person promotes by hand here
        registry.promote(outcome.version, reason="test fixture: serve this version", actor="test")
    # The platform's online store as of the last event: what serving reads.
    settings = FeatureStoreSettings(home=home)
    build_feature_tables(data.events, data.items).write(settings.features_dir)
    materialize(apply_definitions(settings), settings)
    users = sorted(data.events[S.USER_ID].astype(str).unique())
    return ChurnHome(root, outcome.version, users)


def shifted_copy(bundle_dir: Path, out: Path, shift: float) -> Path:
    """Another churn bundle from `bundle_dir`: the same model with `shift` added to its output
    logit (other weights, so another sha256 and other probabilities), saved as a real bundle."""
    import torch

    from shoprec.churn.bundle import load_churn_bundle, save_churn_bundle

    bundle = load_churn_bundle(bundle_dir)
    with torch.no_grad():
        bundle.model.layers[-1].bias += shift
    return save_churn_bundle(out, bundle.model, bundle.features, bundle.config["reference"],
                             metrics=bundle.metrics, training=bundle.config.get("training", {}))
