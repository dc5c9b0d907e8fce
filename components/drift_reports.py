"""Monitoring pipeline step 1, `drift_reports`: every drift report of one check."""

from kfp.dsl import HTML, Artifact, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def drift_reports(
    home: str,
    current_events: str,
    window_days: float,
    drift_share: float,
    k: int,
    summary: Output[Artifact],
    report: Output[HTML],
) -> None:
    """Compare the newest `window_days` of `current_events` (a CSV/Parquet events file or a
    dataset folder; '' = prediction log only) and of the home's prediction log with the saved
    reference. `summary` is the run's JSON (every report's summary); `report` a copy of its
    first report's HTML."""
    import json
    import shutil
    from pathlib import Path

    from shoprec.home import Home
    from shoprec.monitoring.run import MonitoringSettings, read_current, run_monitoring

    result = run_monitoring(Home.at(home), read_current(current_events),
                            settings=MonitoringSettings(window_days=window_days, drift_share=drift_share, k=k))
    Path(summary.path).write_text(json.dumps({**result.to_dict(), "folder": str(result.folder)}, default=str))
    shutil.copyfile(result.folder / result.reports[0].html, report.path)
    summary.metadata.update({"run_id": result.run_id, "verdict": result.verdict})
