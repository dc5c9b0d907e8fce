"""Pipeline step `validate`: the Great Expectations gate; a hard failure fails the run."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def validate(
    raw: Input[Dataset],
    max_events_per_user_day: int,
    window_start: str,
    window_end: str,
    clean: Output[Dataset],
    quarantine: Output[Dataset],
    report: Output[Markdown],
    report_json: Output[Artifact],
    metrics: Output[Metrics],
    max_quarantine_share: float = 0.01,
    timestamp_unit: str = "auto",
) -> None:
    """Validate the raw tables: clean data and quarantine out, the report always.

    On a hard failure the report is written, the step exits non-zero naming the failed checks
    and the report, and no later step runs. Future-dated events, unknown items, fractional ids
    and bad quantities are quarantined; more than `max_quarantine_share` of the events failing
    one of those checks is a hard failure. `timestamp_unit` is the unit of epoch-number
    timestamps ("auto": detected from their magnitude).
    """
    from pathlib import Path

    from shoprec.components._runtime import log_peak_memory
    from shoprec.config import ValidationConfig
    from shoprec.data.gate import run_gate
    from shoprec.data.report import ReportPaths

    config = ValidationConfig.from_strings(max_events_per_user_day, window_start, window_end,
                                           max_quarantine_share, timestamp_unit)
    # The directory, not its tables in memory: the gate streams the events in batches.
    outcome = run_gate(
        raw.path,
        config,
        clean_dir=clean.path,
        quarantine_dir=quarantine.path,
        report=ReportPaths(json=Path(report_json.path), markdown=Path(report.path)),
    )
    summary = outcome.report
    metrics.log_metric("rows_in", summary.rows_in)
    metrics.log_metric("rows_clean", summary.rows_clean)
    for reason, count in summary.quarantined.items():
        metrics.log_metric(f"quarantined_{reason}", count)
    clean.metadata.update({"events": summary.rows_clean, "source": summary.source})
    quarantine.metadata.update({"rows": sum(summary.quarantined.values())})
    log_peak_memory(metrics)
