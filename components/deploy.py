"""Pipeline step `deploy` (runs under `dsl.If` on the promote decision): locally it moves the
registry's production alias; on a cluster it applies the InferenceService through the Kubernetes
API and waits for the new revision before moving the alias; the GitOps path only renders it."""

from kfp.dsl import Artifact, Input, Metrics, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def deploy(
    registry_uri: str,
    decision: Input[Artifact],
    target: str,
    namespace: str,
    canary_traffic_percent: int,
    deployment: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Deploy the registry version named in the promote step's `decision`; returns the version
    now in production.

    target "local": move the alias (a running predictor follows it).
    "cluster": server-side apply the InferenceService with the version's storageUri (service
    account credentials), wait for its new revision (serverless: `canary_traffic_percent` first,
    then 100% once it stayed Ready; raw mode: the rolling update), then move the alias; on a
    failure or timeout the previous spec is restored, the alias stays, the failure is recorded in
    the registry history and the step fails with the reason. The rollout log goes to `deployment`.
    "gitops": render only: the InferenceService YAML goes to `deployment` for a GitOps repo or
    `kubectl apply`, and the alias moves; nothing is applied.
    From the shoprec-settings ConfigMap: $SHOPREC_DEPLOY_TIMEOUT_S (default 600) bounds each
    wait ($SHOPREC_DEPLOY_POLL_S, default 5, between status reads), $SHOPREC_CANARY_HOLD_S (default 60) is how long a canary must stay Ready,
    $SHOPREC_KSERVE_DEPLOYMENT_MODE forces a mode (default: read from the service), and
    $SHOPREC_PAYLOAD_LOGGER_URL, when set, turns on KServe's payload logger on the transformer.
    The decision's reasons go to the history.
    """
    import functools
    import json
    import os

    from shoprec.components._runtime import log_peak_memory, rollout_policy_from_env
    from shoprec.kserve.manifests import render_inference_service
    from shoprec.lifecycle.deployment import deploy_cluster, deploy_gitops, deploy_local
    from shoprec.lifecycle.registry import Registry

    with open(decision.path) as handle:
        verdict = json.load(handle)
    registry = Registry(registry_uri)
    version = verdict["version"]
    if not verdict.get("promote"):
        raise ValueError(f"the decision for {version} is to reject it: nothing to deploy")
    reason = "promotion gate passed: " + "; ".join(verdict.get("reasons", [])[:3])
    render = functools.partial(render_inference_service,
                               logger_url=os.environ.get("SHOPREC_PAYLOAD_LOGGER_URL") or None)
    policy = rollout_policy_from_env(canary_traffic_percent)
    canary = policy.canary_traffic_percent
    if target == "local":
        event = deploy_local(registry, version, reason=reason, decision=verdict)
        with open(deployment.path, "w") as out:
            json.dump(event.to_dict(), out, indent=2, default=str)
    elif target == "cluster":
        from shoprec.kserve.cluster import KubernetesInferenceServices

        done = deploy_cluster(registry, version, reason=reason, render=render,
                              api=KubernetesInferenceServices(), namespace=namespace, policy=policy,
                              decision=verdict)
        event = done.event
        with open(deployment.path, "w") as out:
            json.dump({"event": event.to_dict(), "rollout": done.rollout.to_dict()}, out, indent=2, default=str)
    elif target == "gitops":
        event = deploy_gitops(registry, version, deployment.path, reason=reason, render=render,
                              namespace=namespace, canary_traffic_percent=canary, decision=verdict)
    else:
        raise ValueError(f"target must be 'local', 'cluster' or 'gitops', not {target!r}")
    deployment.metadata.update({"version": version, "target": target, "event": event.id})
    log_peak_memory(metrics)
    return registry.production() or ""
