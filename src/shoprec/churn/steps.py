"""The churn pipeline's steps as library functions (the KFP components are thin calls to these).

    train_from_clean    validated events -> churn training set (own Feast home) -> fit ->
                        evaluate -> bundle; nothing is registered yet
    gate_and_register   re-check a bundle, register it under `shoprec-churn` (whatever the
                        verdict, so a person may still promote it) and decide: the gate
    deploy_churn        put a version the gate passed into production, as the recommender's
                        deploy step does: local, move the alias (a churn server started with
                        --registry follows it); cluster, apply the `shoprec-churn`
                        InferenceService for the version, wait for its revision, then move the
                        alias; gitops, render that service and move the alias

Split so the bundle (and its report) exists as a pipeline artifact before anything touches the
registry, and nothing is deployed unless the gate passed, as for the recommender
(train -> promote -> deploy).
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
from shoprec.lifecycle.deployment import (InferenceServiceApi, ManifestRenderer, RolloutPolicy, deploy_cluster,
                                          deploy_gitops, deploy_local)

GATE_ACTOR = "churn-gate"
DEPLOY_TARGETS = ("local", "cluster", "gitops")  # as the recommender's deploy step


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
    """Register a churn bundle and decide whether it goes to production (nothing is deployed
    here: `deploy_churn` does that, only for a bundle that passed).

    The verdict is recomputed from the bundle's own evaluation (not read from the verdict the
    training step wrote), so the rule applied is the one in this release of `churn_gate`.

    Returns the decision: {"model_name", "version", "promote", "gate", "metrics", "registry",
    "production"} (production: the version in production when it was decided).

    Raises:
        BundleError / BundleIntegrityError: the bundle is incomplete or its weights changed.
    """
    bundle = load_churn_bundle(bundle_dir)
    gate = churn_gate(bundle.metrics).to_dict()
    metrics = headline(bundle.metrics)
    registry = churn_registry(registry_uri)
    record = register_churn(registry, bundle_dir, metrics, note=gate["reason"])
    return {"model_name": CHURN_MODEL_NAME, "version": record.version, "promote": gate["passed"],
            "gate": gate, "metrics": metrics, "registry": registry.uri,
            "production": registry.production()}


def deploy_churn(decision: dict[str, Any], registry_uri: str, target: str, *,
                 render: ManifestRenderer | None = None, api: InferenceServiceApi | None = None,
                 namespace: str = "shoprec", policy: RolloutPolicy = RolloutPolicy(),
                 manifest_path: str | Path | None = None) -> dict[str, Any]:
    """Deploy the version `decision` (from `gate_and_register`) passed; returns what was done:
    {"target", "version", "event": the registry history event, "rollout" (cluster only)}.

    target "local": move the churn model's production alias. "cluster": roll the
    `shoprec-churn` InferenceService (`render`, e.g. `shoprec.kserve.churn.manifests.
    render_churn_service`) out through `api` with `policy`, then move the alias; a failed
    rollout is undone and recorded (`shoprec.lifecycle.deployment.deploy_cluster`). "gitops":
    render that service to `manifest_path` and move the alias.

    Raises:
        ValueError: the gate rejected the version, or an unknown target / a missing argument.
        DeployError: the cluster rollout failed (the previous spec was restored).
    """
    version = decision["version"]
    if not decision.get("promote"):
        raise ValueError(f"the churn gate rejected {CHURN_MODEL_NAME} {version}: nothing to deploy")
    registry = churn_registry(registry_uri)
    reason = f"churn gate passed: {decision['gate']['reason']}"
    if target not in DEPLOY_TARGETS:
        raise ValueError(f"target must be one of {', '.join(DEPLOY_TARGETS)}, not {target!r}")
    if target != "local" and render is None:
        raise ValueError(f"a {target} deploy needs the InferenceService renderer")
    done: dict[str, Any] = {"target": target, "version": version}
    if target == "local":
        event = deploy_local(registry, version, reason=reason, actor=GATE_ACTOR, decision=decision)
    elif target == "cluster":
        if api is None:
            raise ValueError("a cluster deploy needs the Kubernetes API")
        rolled = deploy_cluster(registry, version, reason=reason, render=render, api=api, actor=GATE_ACTOR,
                                name=CHURN_MODEL_NAME, namespace=namespace, policy=policy, decision=decision)
        event, done["rollout"] = rolled.event, rolled.rollout.to_dict()
    else:
        if manifest_path is None:
            raise ValueError("a gitops deploy needs the path to render the InferenceService to")
        event = deploy_gitops(registry, version, manifest_path, reason=reason, render=render, namespace=namespace,
                              canary_traffic_percent=policy.canary_traffic_percent, decision=decision)
    done["event"] = event.to_dict()
    return done


def decision_markdown(decision: dict[str, Any]) -> str:
    """The decision as people read it in the pipeline UI."""
    gate = decision["gate"]
    verdict = "PASSED THE GATE: to deploy" if decision["promote"] else "REGISTERED, NOT PROMOTED"
    lines = [f"# {decision['model_name']} {decision['version']}", "",
             f"**{verdict}**: {gate['reason']}", "",
             f"- registry: {decision['registry']}", f"- production when decided: {decision['production']}", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in decision["metrics"].items()]
    return "\n".join(lines) + "\n"
