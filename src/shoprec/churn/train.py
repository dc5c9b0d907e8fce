"""The churn run, one function per stage: events -> labels and Feast features (point in time) ->
time split -> fit -> evaluate against the baselines -> bundle -> registry (+ gate -> alias).

The split is by time: the latest snapshot is the test set; training uses only snapshots whose
label window closes by the test snapshot (s + N <= s_test), so no training label reads the test
period. Validation rows (early stopping) are a fraction of the training users, held out whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.churn.bundle import churn_registry, register_churn, save_churn_bundle
from shoprec.churn.evaluate import churn_gate, evaluate_churn, headline
from shoprec.churn.features import (CHURN_FEATURES, churn_feature_tables, historical_churn_features,
                                    publish_churn_store)
from shoprec.churn.fit import FitConfig, fit_churn
from shoprec.churn.labels import CHURNED, DEFAULT_HORIZON_DAYS, DEFAULT_SNAPSHOTS, churn_labels, snapshot_times
from shoprec.churn.report import html_report, markdown_report
from shoprec.errors import DataSourceError
from shoprec.features.settings import FeatureStoreSettings
from shoprec.lifecycle.registry import Registry


@dataclass(frozen=True)
class ChurnConfig:
    horizon_days: int = DEFAULT_HORIZON_DAYS
    snapshots: int = DEFAULT_SNAPSHOTS
    step_days: int | None = None  # None: the horizon (label windows side by side)
    valid_fraction: float = 0.2
    resamples: int = 1000
    seed: int = 0
    fit: FitConfig = field(default_factory=FitConfig)


@dataclass
class ChurnOutcome:
    bundle_dir: Path
    evaluation: dict[str, Any]
    gate: dict[str, Any]
    facts: dict[str, Any]
    version: str | None = None
    promoted: bool = False


def churn_training_set(
    events: pd.DataFrame, items: pd.DataFrame | None, settings: FeatureStoreSettings,
    config: ChurnConfig = ChurnConfig(),
) -> pd.DataFrame:
    """Labels at each snapshot with their user_stats joined point in time by Feast, from a churn
    Feast home (`settings`) written here: user_id, timestamp, churned, one column per feature."""
    snapshots = snapshot_times(events, config.horizon_days, config.snapshots, config.step_days)
    labels = churn_labels(events, snapshots, config.horizon_days)
    store = publish_churn_store(churn_feature_tables(events, items, snapshots), settings)
    return historical_churn_features(store, labels)


def split_by_time(frame: pd.DataFrame, horizon_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): test = the latest snapshot's rows; train = snapshots whose label window
    ends at or before it."""
    times = pd.to_datetime(frame[S.TIMESTAMP], utc=True)
    test_time = times.max()
    train = frame[(times + pd.Timedelta(days=horizon_days) <= test_time).to_numpy()]
    test = frame[(times == test_time).to_numpy()]
    if train.empty or test.empty:
        raise DataSourceError(f"churn needs at least two snapshots {horizon_days} days apart; "
                              f"have {times.nunique()}")
    return train.reset_index(drop=True), test.reset_index(drop=True)


def split_users(frame: pd.DataFrame, fraction: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, valid): a stable hash of the user id picks about `fraction` of users for validation."""
    def bucket(user: str) -> float:
        digest = hashlib.sha256(f"{seed}:{user}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    held = frame[S.USER_ID].astype(str).map(bucket).to_numpy() < fraction
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


def train_churn(
    frame: pd.DataFrame, out_dir: str | Path, config: ChurnConfig = ChurnConfig(),
    registry: Registry | None = None, progress: bool = False, source: str = "",
) -> ChurnOutcome:
    """Fit, evaluate and bundle the churn model from a churn training set; when `registry` is
    given, register the bundle (whatever the verdict, so a person may still promote it) and move
    the production alias only when the gate passes."""
    features = list(CHURN_FEATURES)
    train, test = split_by_time(frame, config.horizon_days)
    fit_rows, valid_rows = split_users(train, config.valid_fraction, config.seed)
    x = {name: part[features].to_numpy(np.float64) for name, part in
         (("fit", fit_rows), ("valid", valid_rows), ("test", test))}
    y = {name: part[CHURNED].to_numpy(np.float64) for name, part in
         (("fit", fit_rows), ("valid", valid_rows), ("test", test), ("train", train))}
    fitted = fit_churn(x["fit"], y["fit"], x["valid"], y["valid"], config.fit, progress)
    evaluation = evaluate_churn(y["test"], fitted.model.probability(x["test"]), test, train, y["train"],
                                config.resamples, config.seed)
    gate = churn_gate(evaluation).to_dict()
    snapshots = sorted(pd.to_datetime(frame[S.TIMESTAMP], utc=True).unique())
    facts = {"source": source, "horizon_days": config.horizon_days, "snapshots": [str(s) for s in snapshots],
             "test_snapshot": str(snapshots[-1]), "rows": {"fit": len(fit_rows), "valid": len(valid_rows),
                                                            "test": len(test)},
             "device": fitted.device, "best_epoch": fitted.best_epoch, "features": features}
    evaluation["gate"] = gate
    reference = {name: float(np.median(x["fit"][:, j])) for j, name in enumerate(features)}
    bundle_dir = save_churn_bundle(
        out_dir, fitted.model, features, reference, metrics=evaluation,
        training={**facts, "config": asdict(config)},
        card=markdown_report(evaluation, gate, facts), report_html=html_report(evaluation, gate, facts))
    outcome = ChurnOutcome(Path(bundle_dir), evaluation, gate, facts)
    if registry is not None:
        record = register_churn(registry, bundle_dir, headline(evaluation), note=gate["reason"])
        outcome.version = record.version
        if gate["passed"]:
            registry.promote(record.version, reason=gate["reason"], actor="churn-gate", decision=gate)
            outcome.promoted = True
    return outcome


def run_churn(
    events: pd.DataFrame, items: pd.DataFrame | None, settings: FeatureStoreSettings, out_dir: str | Path,
    registry_uri: str | Path | None = None, config: ChurnConfig = ChurnConfig(), progress: bool = False,
    source: str = "",
) -> ChurnOutcome:
    """The whole churn run: training set through the churn Feast home, then `train_churn`; the
    version goes to the churn registry under `registry_uri` (the platform's registry root)."""
    frame = churn_training_set(events, items, settings, config)
    registry = churn_registry(registry_uri) if registry_uri is not None else None
    return train_churn(frame, out_dir, config, registry, progress, source)


__all__ = ["ChurnConfig", "ChurnOutcome", "churn_training_set", "run_churn", "split_by_time",
           "split_users", "train_churn"]
