"""Pipeline step `monitor` (last step of training_pipeline): the first drift report, the
training window against the newest held-out window of the same data, and the saved
reference that later monitoring runs compare against: the answers of the model in
production once the gate has spoken (the candidate if promoted, else the champion)."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

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
    decision: Input[Artifact] = None,
    registry_uri: str = "",
) -> None:
    """Write the first report into the home's reports (home; '' = $SHOPREC_HOME or
    ./shoprec-home), its index and the home's Evidently workspace, and save the reference.

    `decision` is the promote step's decision: when it promoted the candidate, `model` (the
    candidate bundle) answers the reference's validation users; when it rejected it, the
    production version of the registry (`registry_uri`; '' = the home's registry) does, and a
    reference already saved for that version is kept. Without `decision`, `model` (optional)
    is taken as the model in production. `report` is a copy of the user-feature report."""
    import json
    import shutil

    from shoprec.components._runtime import log_peak_memory
    from shoprec.home import Home
    from shoprec.monitoring.drift import RUN_FILE
    from shoprec.monitoring.reference import ServingModel
    from shoprec.monitoring.run import MonitoringSettings, first_report

    serving = None
    if decision is not None:
        from shoprec.lifecycle.registry import Registry

        with open(decision.path, encoding="utf-8") as handle:
            verdict = json.load(handle)
        registry = Registry(registry_uri) if registry_uri else Registry.from_home(Home.at(home))
        serving = ServingModel.after_gate(verdict, model.path if model is not None else None, registry)
    result = first_report(clean.path, home, features_dir=features.path,
                          bundle_dir=model.path if model is not None else None,
                          settings=MonitoringSettings(window_days=window_days), serving=serving)
    shutil.copyfile(result.folder / result.reports[0].html, report.path)
    for summary in result.reports:
        metrics.log_metric(f"{summary.kind}_drift_share", summary.drift_share)
    lineage = json.loads((result.folder / RUN_FILE).read_text()).get("lineage", {})
    report.metadata.update({"run_id": result.run_id, "verdict": result.verdict,
                            "folder": str(result.folder), "reference": lineage.get("reference", "")})
    log_peak_memory(metrics)
