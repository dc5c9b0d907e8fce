"""Pipeline step `churn_deploy` (runs under `dsl.If` on the churn gate): puts the churn version the
gate passed into production, as `deploy` does for the recommender. Locally it moves the churn
model's production alias (a churn server started with --registry follows it); on a cluster it
applies the `shoprec-churn` InferenceService for the version through the Kubernetes API and waits
for its revision before moving the alias; the GitOps path only renders it."""

from kfp.dsl import Artifact, Input, Metrics, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def churn_deploy(
    registry_uri: str,
    home: str,
    decision: Input[Artifact],
    target: str,
    namespace: str,
    canary_traffic_percent: int,
    deployment: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Deploy the churn version named in `churn_register`'s `decision` (registry_uri: the
    platform's registry root, '' = the home's); returns the churn version now in production.

    target "local", "cluster" or "gitops", as the recommender's deploy step (a failed cluster
    rollout is undone, recorded in the churn registry's history and fails the step). The same
    ConfigMap settings bound the waits ($SHOPREC_DEPLOY_TIMEOUT_S, ...). What was done goes to
    `deployment` (for gitops: the rendered InferenceService YAML)."""
    import json

    from shoprec.churn.bundle import churn_registry
    from shoprec.churn.steps import deploy_churn, registry_root
    from shoprec.components._runtime import log_peak_memory, rollout_policy_from_env
    from shoprec.kserve.churn.manifests import render_churn_service

    with open(decision.path, encoding="utf-8") as handle:
        verdict = json.load(handle)
    root = registry_root(registry_uri, home or None)
    api = None
    if target == "cluster":
        from shoprec.kserve.cluster import KubernetesInferenceServices

        api = KubernetesInferenceServices()
    done = deploy_churn(verdict, root, target, render=render_churn_service, api=api, namespace=namespace,
                        policy=rollout_policy_from_env(canary_traffic_percent), manifest_path=deployment.path)
    if target != "gitops":  # gitops wrote the manifest there
        with open(deployment.path, "w", encoding="utf-8") as out:
            json.dump(done, out, indent=2, default=str)
    deployment.metadata.update({"version": done["version"], "target": target, "event": done["event"]["id"]})
    log_peak_memory(metrics)
    return churn_registry(root).production() or ""
