"""The gate as a step: validate, write the report and the outputs, stop on a hard failure."""

from __future__ import annotations

from pathlib import Path

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.dataset import EventData
from shoprec.data.report import ReportPaths, write_report_files
from shoprec.data.validation import ValidationOutcome, validate
from shoprec.errors import DataValidationError


def run_gate(
    data: EventData,
    config: ValidationConfig,
    clean_dir: str | Path,
    quarantine_dir: str | Path,
    report: ReportPaths,
) -> ValidationOutcome:
    """Validate `data`; write the report always, the clean data and the quarantine when it passes.

    The clean data set goes to `clean_dir` (an `EventData` directory); the quarantined rows,
    each with its reason, to `quarantine_dir/quarantine.parquet`.

    Raises:
        DataValidationError: a hard check failed; it names the checks and the report. The
            input is left as it was and no clean output is written.
    """
    outcome = validate(data, config)
    write_report_files(outcome.report, report)
    if not outcome.report.passed:
        raise DataValidationError(outcome.report.failed_hard, report.markdown)
    outcome.clean.write(clean_dir)
    quarantine = Path(quarantine_dir)
    quarantine.mkdir(parents=True, exist_ok=True)
    outcome.quarantine.to_parquet(quarantine / S.QUARANTINE_FILE, index=False)
    return outcome
