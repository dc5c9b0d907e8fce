"""Pipeline step `churn_register`: the churn gate (PR-AUC above the recency baseline's, paired
interval above zero) and registration under `shoprec-churn`; the decision is an artifact (JSON and
Markdown) and the return value, on which `churn_deploy` runs (nothing is deployed here)."""

from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def churn_register(
    model: Input[Model],
    home: str,
    registry_uri: str,
    decision: Output[Artifact],
    decision_report: Output[Markdown],
    metrics: Output[Metrics],
) -> bool:
    """Register the churn bundle in the platform's registry (registry_uri: a folder or object-store
    URL, '' = the home's registry; the churn model lives under <root>/shoprec-churn) whatever the
    verdict. Returns the verdict: True when the gate passed (then `churn_deploy` runs)."""
    import json

    from shoprec.churn.steps import decision_markdown, gate_and_register, registry_root
    from shoprec.components._runtime import log_peak_memory

    outcome = gate_and_register(model.path, registry_root(registry_uri, home or None))
    with open(decision.path, "w", encoding="utf-8") as out:
        json.dump(outcome, out, indent=2, default=float)
    with open(decision_report.path, "w", encoding="utf-8") as out:
        out.write(decision_markdown(outcome))
    for name, value in outcome["metrics"].items():
        metrics.log_metric(name, round(float(value), 6))
    metrics.log_metric("promote", int(outcome["promote"]))
    decision.metadata.update({"version": outcome["version"], "promote": outcome["promote"],
                              "model_name": outcome["model_name"]})
    log_peak_memory(metrics)
    return bool(outcome["promote"])
