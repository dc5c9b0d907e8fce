"""The gate as a step: validate, write the report and the outputs, stop on a hard failure.

The events are read and written a batch at a time: given a dataset directory (what the ingest
step writes), the gate never holds the whole log, so its memory follows `batch_rows`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.batches import DEFAULT_BATCH_ROWS, FrameEvents, ParquetEvents, ParquetSink
from shoprec.data.dataset import EventData, events_file, finish_dataset, read_companions
from shoprec.data.report import ReportPaths, write_report_files
from shoprec.data.validation import ValidationReport, check_events
from shoprec.errors import DataValidationError


@dataclass
class GateOutcome:
    """What the gate wrote: the report, the clean dataset directory, the quarantine file."""

    report: ValidationReport
    clean: Path
    quarantine: Path


def run_gate(
    data: EventData | str | Path,
    config: ValidationConfig,
    clean_dir: str | Path,
    quarantine_dir: str | Path,
    report: ReportPaths,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> GateOutcome:
    """Validate `data`; write the report always, the clean data and the quarantine when it passes.

    `data` is a data set in memory or a dataset directory (`EventData.write`), whose events
    are then streamed from disk `batch_rows` at a time. The clean data set goes to `clean_dir`
    (a dataset directory); the quarantined rows, each with its reason, to
    `quarantine_dir/quarantine.parquet`. Both are written into a staging folder beside
    `clean_dir` and moved into place only when the gate passes.

    Raises:
        DataValidationError: a hard check failed; it names the checks and the report. The
            input is left as it was and no clean output is written.
    """
    clean_dir, quarantine_dir = Path(clean_dir), Path(quarantine_dir)
    if isinstance(data, EventData):
        events: FrameEvents | ParquetEvents = FrameEvents(data.events)
        items, users, source, info = data.items, data.users, data.source, data.info
    else:
        events = ParquetEvents(events_file(data))
        items, users, source, info = read_companions(data)
    clean_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".shoprec-gate-", dir=clean_dir.parent) as staging:
        staged_clean = Path(staging) / S.EVENTS_FILE
        staged_quarantine = Path(staging) / S.QUARANTINE_FILE
        with ParquetSink(staged_clean, staged_quarantine, events.arrow_types()) as sink:
            summary = check_events(events, items, users, source, config, sink,
                                   batch_rows=batch_rows, scratch=staging, info=info)
        write_report_files(summary, report)
        if not summary.passed:
            raise DataValidationError(summary.failed_hard, report.markdown)
        clean_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(staged_clean, clean_dir / S.EVENTS_FILE)
        finish_dataset(clean_dir, summary.rows_clean, items, users, source, info)
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(staged_quarantine, quarantine_dir / S.QUARANTINE_FILE)
    return GateOutcome(summary, clean_dir, quarantine_dir / S.QUARANTINE_FILE)
