"""Pipeline step `churn_monitor`: the churn model's first drift reports, feature drift (its
inputs) and prediction drift (churn_probability), the population at the bundle's test snapshot
against the population at the last event, in the home's monitoring reports and index."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def churn_monitor(
    clean: Input[Dataset],
    model: Input[Model],
    decision: Input[Artifact],
    home: str,
    report: Output[HTML],
    metrics: Output[Metrics],
) -> None:
    """Write the churn drift reports (home: '' = $SHOPREC_HOME or ./shoprec-home) for the bundle
    just registered (its version, from `decision`, names the reports' model). `report` is a copy
    of the prediction-drift report."""
    import json
    import shutil

    from shoprec.churn.bundle import load_churn_bundle
    from shoprec.churn.drift import CHURN_PREDICTIONS_REPORT, churn_monitoring_run
    from shoprec.components._runtime import log_peak_memory
    from shoprec.data.dataset import EventData

    with open(decision.path, encoding="utf-8") as handle:
        version = json.load(handle)["version"]
    data = EventData.read(clean.path)
    result = churn_monitoring_run(home or None, load_churn_bundle(model.path), data.events, data.items,
                                  version=version)
    predictions = next(r for r in result.reports if r.kind == CHURN_PREDICTIONS_REPORT)
    shutil.copyfile(result.folder / predictions.html, report.path)
    for summary in result.reports:
        metrics.log_metric(f"{summary.kind}_drift_share", summary.drift_share)
    report.metadata.update({"run_id": result.run_id, "verdict": result.verdict, "folder": str(result.folder),
                            "model_version": version})
    log_peak_memory(metrics)
