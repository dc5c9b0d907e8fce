"""Pipeline step `monitor` (last step of training_pipeline): the first drift report, the
training window against the newest held-out window of the same data, and the saved
reference that later monitoring runs compare against."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def monitor(
    clean: Input[Dataset],
    features: Input[Dataset],
    home: str,
    window_days: float,
    report: Output[HTML],
    metrics: Output[Metrics],
    model: Input[Model] = None,
) -> None:
    """Write the first report into the home's reports (home; '' = $SHOPREC_HOME or
    ./shoprec-home) and its index; `model` (optional) adds the model's recommendations on the
    validation users to the reference. `report` is a copy of the user-feature report."""
    import shutil

    from shoprec.components._runtime import log_peak_memory
    from shoprec.monitoring.run import MonitoringSettings, first_report

    result = first_report(clean.path, home, features_dir=features.path,
                          bundle_dir=model.path if model is not None else None,
                          settings=MonitoringSettings(window_days=window_days))
    shutil.copyfile(result.folder / result.reports[0].html, report.path)
    for summary in result.reports:
        metrics.log_metric(f"{summary.kind}_drift_share", summary.drift_share)
    report.metadata.update({"run_id": result.run_id, "verdict": result.verdict,
                            "folder": str(result.folder)})
    log_peak_memory(metrics)
