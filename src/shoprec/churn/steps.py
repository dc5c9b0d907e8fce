"""The churn pipeline's steps as library functions (the KFP components are thin calls to these).

    train_from_clean    validated events -> churn training set (own Feast home) -> fit ->
                        evaluate -> bundle; nothing is registered yet
    gate_and_register   re-check a bundle, register it under `shoprec-churn` (whatever the
                        verdict, so a person may still promote it) and move `production` only
                        when the gate passes

Split in two so the bundle (and its report) exists as a pipeline artifact before anything
touches the registry, as for the recommender (train -> promote).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoprec.churn.bundle import CHURN_MODEL_NAME, churn_registry, load_churn_bundle, register_churn
from shoprec.churn.evaluate import churn_gate, headline
from shoprec.churn.features import churn_home
from shoprec.churn.train import ChurnConfig, ChurnOutcome, run_churn
from shoprec.data.dataset import EventData
from shoprec.features.settings import FeatureStoreSettings
from shoprec.home import Home

GATE_ACTOR = "churn-gate"


def churn_store_settings(home: str | Path | Home | None) -> FeatureStoreSettings:
    """The churn training store of a home: its own file registry and DuckDB offline store under
    `<home>/churn/features`, never the environment's stores. On a cluster the environment names
    the platform's SQL registry and Redis; `feast apply` of the churn home there would repoint the
    platform's feature views at the churn tables, so the churn home stays local on purpose."""
    return FeatureStoreSettings(home=churn_home(Home.at(home or None)))


def registry_root(registry_uri: str, home: str | Path | None) -> str:
    """The platform's registry root: `registry_uri`, else the home's registry folder."""
    return registry_uri or str(Home.at(home or None).registry)


def train_from_clean(
    clean_dir: str | Path, home: str | Path | None, out_dir: str | Path,
    config: ChurnConfig = ChurnConfig(), progress: bool = False,
) -> ChurnOutcome:
    """Train and evaluate the churn model on a validated dataset directory; the bundle (weights,
    metrics with the gate's verdict, Markdown and HTML report) goes to `out_dir`."""
    data = EventData.read(clean_dir)
    return run_churn(data.events, data.items, churn_store_settings(home), out_dir, None, config,
                     progress, source=data.source)


def gate_and_register(bundle_dir: str | Path, registry_uri: str) -> dict[str, Any]:
    """Register a churn bundle and promote it when it passes the gate.

    The verdict is recomputed from the bundle's own evaluation (not read from the verdict the
    training step wrote), so the rule applied is the one in this release of `churn_gate`.

    Returns the decision: {"model_name", "version", "promoted", "gate", "metrics", "registry"}.

    Raises:
        BundleError / BundleIntegrityError: the bundle is incomplete or its weights changed.
    """
    bundle = load_churn_bundle(bundle_dir)
    gate = churn_gate(bundle.metrics).to_dict()
    metrics = headline(bundle.metrics)
    registry = churn_registry(registry_uri)
    record = register_churn(registry, bundle_dir, metrics, note=gate["reason"])
    if gate["passed"]:
        registry.promote(record.version, reason=gate["reason"], actor=GATE_ACTOR, decision=gate)
    return {"model_name": CHURN_MODEL_NAME, "version": record.version, "promoted": gate["passed"],
            "gate": gate, "metrics": metrics, "registry": registry.uri,
            "production": registry.production()}


def decision_markdown(decision: dict[str, Any]) -> str:
    """The decision as people read it in the pipeline UI."""
    gate = decision["gate"]
    lines = [f"# {decision['model_name']} {decision['version']}", "",
             f"**{'PROMOTED' if decision['promoted'] else 'REGISTERED, NOT PROMOTED'}**: {gate['reason']}", "",
             f"- registry: {decision['registry']}", f"- production now: {decision['production']}", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in decision["metrics"].items()]
    return "\n".join(lines) + "\n"
