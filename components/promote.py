"""Pipeline step `promote`: the gate against the champion, the infra check of the real
predictor, and registration of the candidate; the decision is an artifact (JSON and Markdown)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def promote(
    candidate: Input[Model],
    data: Input[Dataset],
    registry_uri: str,
    min_improvement: float,
    coverage_tolerance: float,
    short_history_tolerance: float,
    decision: Output[Artifact],
    decision_report: Output[Markdown],
    metrics: Output[Metrics],
    require_all_baselines: bool = True,
) -> bool:
    """Decide whether the candidate bundle may replace the production version.

    `data` is the validated data set the candidate was trained on (its newest window is the
    evaluation window); `registry_uri` a registry folder or object-store URL. Outputs: the
    decision JSON (with the registered "version") and Markdown, the gate's numbers as metrics,
    and the verdict as the return value, for `deploy` under `dsl.If(task.outputs["Output"] == True)`.
    require_all_baselines: with no champion yet, the candidate must beat every baseline of the
    data set (on repeat data also BuyAgain, the decayed frequency and TIFU-KNN); false reports
    trailing those three as a WARN and promotes (`Policy.require_all_baselines`).
    """
    import json

    from shoprec.components._runtime import log_peak_memory
    from shoprec.kserve.infra_check import check_bundle
    from shoprec.lifecycle.gate import Policy
    from shoprec.lifecycle.promotion import run_promotion
    from shoprec.lifecycle.registry import Registry

    policy = Policy(min_improvement=min_improvement, coverage_tolerance=coverage_tolerance,
                    short_history_tolerance=short_history_tolerance,
                    require_all_baselines=require_all_baselines)
    outcome = run_promotion(candidate.path, data.path, Registry(registry_uri), policy,
                            infra_check=lambda bundle: check_bundle(bundle).as_check())
    with open(decision.path, "w") as out:
        json.dump(outcome.to_dict(), out, indent=2, default=float)
    with open(decision_report.path, "w") as out:
        out.write(outcome.decision.to_markdown())
    for name, value in outcome.decision.metrics.items():
        if isinstance(value, (int, float)):
            metrics.log_metric(name.replace(" ", "_").replace("@", "_at_"), float(value))
    decision.metadata.update({"promote": outcome.decision.promote, "version": outcome.version})
    log_peak_memory(metrics)
    return outcome.decision.promote
