"""Pipeline step `deploy` (runs under `dsl.If` on the promote decision): locally it moves the
registry's production alias; for a cluster it also renders the InferenceService manifest."""

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

    target "local": move the alias (a running predictor follows it); "cluster": write the
    InferenceService YAML with the version's storageUri and `canary_traffic_percent` (100 = full
    rollout) to `deployment`, and record the promotion. The decision's reasons go to the history.
    $SHOPREC_PAYLOAD_LOGGER_URL (from the shoprec-settings ConfigMap), when set, turns on
    KServe's payload logger on the transformer, sending there every request and answer.
    """
    import functools
    import json
    import os

    from shoprec.components._runtime import log_peak_memory
    from shoprec.kserve.manifests import render_inference_service
    from shoprec.lifecycle.deployment import deploy_cluster, deploy_local
    from shoprec.lifecycle.registry import Registry

    with open(decision.path) as handle:
        verdict = json.load(handle)
    registry = Registry(registry_uri)
    version = verdict["version"]
    if not verdict.get("promote"):
        raise ValueError(f"the decision for {version} is to reject it: nothing to deploy")
    reason = "promotion gate passed: " + "; ".join(verdict.get("reasons", [])[:3])
    if target == "local":
        event = deploy_local(registry, version, reason=reason, decision=verdict)
        with open(deployment.path, "w") as out:
            json.dump(event.to_dict(), out, indent=2, default=str)
    elif target == "cluster":
        canary = None if canary_traffic_percent >= 100 else canary_traffic_percent
        event = deploy_cluster(registry, version, deployment.path, reason=reason,
                               render=functools.partial(render_inference_service,
                                                        logger_url=os.environ.get("SHOPREC_PAYLOAD_LOGGER_URL") or None),
                               namespace=namespace,
                               canary_traffic_percent=canary, decision=verdict)
    else:
        raise ValueError(f"target must be 'local' or 'cluster', not {target!r}")
    deployment.metadata.update({"version": version, "target": target, "event": event.id})
    log_peak_memory(metrics)
    return registry.production() or ""
