"""One Evidently drift report: reference frame vs current frame -> a self-contained HTML file
and a JSON summary (drifted columns, share, dataset-drift verdict, per-column test results).

Evidently 0.7 API: `Report([...], include_tests=True).run(current_data=..., reference_data=...)`.
Evidently refuses an all-null column ("An empty column ... was provided for drift
calculation"), so such columns are left out of the drift tests and listed in the summary
instead; the data-summary part still shows them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shoprec.errors import EmptyWindowError, MonitoringError, SchemaMismatchError

if TYPE_CHECKING:
    from shoprec.monitoring.workspace import DriftWorkspace

# The kinds of report one monitoring run writes (file names inside the run folder).
USER_FEATURES = "user_features"
ITEM_FEATURES = "item_features"
PREDICTIONS = "predictions"
RUN_FILE = "run.json"  # a monitoring run folder's summary (the reports beside it are *.json too)
QUALITY = "quality"
REPORT_KINDS = (USER_FEATURES, ITEM_FEATURES, PREDICTIONS, QUALITY)
DEFAULT_MAX_ROWS = 250_000

DRIFT = "drift"
NO_DRIFT = "no drift"
QUALITY_DROP = "quality drop"


@dataclass
class ColumnTest:
    """Evidently's drift test of one column."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class ReportSummary:
    """The JSON summary written beside each HTML report (also what the index lists).

    Attributes:
        report_id: "<run id>/<kind>", unique in the home's reports.
        kind: one of REPORT_KINDS.
        created_at: ISO time the report was written (UTC).
        reference_window / current_window: "start .. end" of each side's data.
        columns: columns tested for drift; drifted_columns: those Evidently flagged.
        drift_share: drifted / tested; dataset_drift: share >= the configured drift share.
        column_tests: Evidently's per-column drift tests.
        all_null_columns: columns that are all null on a side (reported, not tested).
        metrics: extra figures (fallback rates, recsys quality at k: reference / current / drop).
        html: the HTML file's name, relative to the summary's folder.
    """

    report_id: str
    kind: str
    created_at: str
    reference_window: str
    current_window: str
    rows_reference: int
    rows_current: int
    columns: list[str]
    drifted_columns: list[str]
    drift_share: float
    dataset_drift: bool
    column_tests: list[ColumnTest] = field(default_factory=list)
    all_null_columns: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    html: str = ""
    verdict: str = NO_DRIFT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "ReportSummary":
        tests = [ColumnTest(**t) for t in data.get("column_tests", [])]
        return ReportSummary(**{**data, "column_tests": tests})

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default))
        return path


def window_label(start: pd.Timestamp | None, end: pd.Timestamp | None) -> str:
    """A window as people read it: '2017-03-01 .. 2017-03-08' (open ends as '...')."""
    fmt = lambda t: "..." if t is None or pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    return f"{fmt(start)} .. {fmt(end)}"


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    kind: str,
    report_id: str,
    out_dir: Path,
    numerical: list[str],
    categorical: list[str],
    reference_window: str = "",
    current_window: str = "",
    drift_share: float = 0.5,
    metrics: dict[str, Any] | None = None,
    extra_metrics: list[Any] | None = None,
    data_definition_extra: dict[str, Any] | None = None,
    summary_columns: list[str] | None = None,
    num_method: str | None = None,
    cat_method: str | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    verdict: str | None = None,
    workspace: "DriftWorkspace | None" = None,
) -> ReportSummary:
    """Compare `current` against `reference` with Evidently's DataDriftPreset (over the
    `numerical` + `categorical` columns) and DataSummaryPreset; write `<kind>.html` and
    `<kind>.json` into `out_dir` and return the summary.

    extra_metrics: more Evidently metrics for the same report (the recsys quality metrics);
    data_definition_extra: more DataDefinition arguments they need (ranking=...).
    max_rows: a side longer than this is compared through a uniform random sample of this
        many rows (fixed seed; None = all rows). The distance methods used here estimate the
        same distance from 250,000 rows as from millions (their error shrinks as 1/sqrt(n)),
        while Evidently's run time grows with the rows; the summary keeps the true counts
        and says when a sample was compared.
    verdict: the report's verdict when the caller decides it (the quality report's "quality
        drop"); None = drift / no drift from Evidently's tests.
    workspace: also store Evidently's snapshot in this local Evidently workspace (project
        of `kind`, named `report_id`); the summary's metrics name the snapshot.

    Raises:
        EmptyWindowError: either side has no rows.
        SchemaMismatchError: the two frames do not have the same columns.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    check_schema(reference, current, kind)
    if current.empty:
        raise EmptyWindowError(f"current {kind}", current_window or "given")
    if reference.empty:
        raise EmptyWindowError(f"reference {kind}", reference_window or "given")
    tested = numerical + categorical
    absent = [c for c in tested if c not in reference.columns]
    if absent:
        raise MonitoringError(f"{kind}: column(s) {absent} to test are not in the data")
    rows = {"reference": len(reference), "current": len(current)}
    reference, current = _sample(reference, max_rows), _sample(current, max_rows)
    null_columns = {
        "reference": [c for c in tested if reference[c].isna().all()],
        "current": [c for c in tested if current[c].isna().all()],
    }
    all_null = set(null_columns["reference"]) | set(null_columns["current"])
    for frame in (reference, current):
        for column in categorical:
            # Evidently wants one type per categorical column: strings, nulls kept as nulls.
            frame[column] = frame[column].astype(str).where(frame[column].notna(), None).astype("category")
        for column in numerical:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    drift_columns = [c for c in tested if c not in all_null]
    if min(len(reference), len(current)) > 1000:
        # Evidently's own choice at this size, named up front: it spares a pass over every
        # column to pick a method (seconds on 250k rows).
        num_method = num_method or "wasserstein"
        cat_method = cat_method or "jensenshannon"
    shown = summary_columns if summary_columns is not None else tested
    definition = DataDefinition(
        numerical_columns=[c for c in numerical if c in shown or c in drift_columns],
        categorical_columns=[c for c in categorical if c in shown or c in drift_columns],
        **(data_definition_extra or {}),
    )
    items: list[Any] = []
    if drift_columns:
        # Methods None = Evidently's choice by size: K-S / chi-square p-values up to 1,000
        # rows (distances are too noisy there), normed Wasserstein / Jensen-Shannon above.
        items.append(DataDriftPreset(columns=drift_columns, drift_share=drift_share,
                                     num_method=num_method, cat_method=cat_method))
    items.append(DataSummaryPreset(columns=shown))
    items.extend(extra_metrics or [])
    with warnings.catch_warnings():
        # Evidently divides by zero counts for all-null columns: harmless, and reported above.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report(items, include_tests=True).run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
            # What the workspace UI shows beside each snapshot (and a panel can filter on).
            tags=["shoprec", kind],
            metadata={"report_id": report_id, "reference_window": reference_window,
                      "current_window": current_window},
        )
        result = snapshot.dict()
    tests = column_tests(result)
    drifted = [t.column for t in tests if t.drifted]
    share = len(drifted) / len(drift_columns) if drift_columns else 0.0
    dataset_drift = bool(drift_columns) and share >= drift_share
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"{kind}.html"
    snapshot.save_html(str(html_path))
    summary = ReportSummary(
        report_id=report_id,
        kind=kind,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        reference_window=reference_window,
        current_window=current_window,
        rows_reference=int(rows["reference"]),
        rows_current=int(rows["current"]),
        columns=drift_columns,
        drifted_columns=drifted,
        drift_share=round(share, 4),
        dataset_drift=dataset_drift,
        column_tests=tests,
        all_null_columns={side: cols for side, cols in null_columns.items() if cols},
        metrics=dict(metrics or {}),
        html=html_path.name,
        verdict=verdict or (DRIFT if dataset_drift else NO_DRIFT),
    )
    summary.metrics.setdefault("evidently", _evidently_values(result))
    if len(reference) < rows["reference"] or len(current) < rows["current"]:
        summary.metrics["compared_sample_rows"] = {"reference": len(reference), "current": len(current)}
    if workspace is not None:
        summary.metrics["evidently_workspace"] = workspace.add(snapshot, kind, report_id)
    add_verdict_banner(html_path, summary)
    summary.write(out_dir / f"{kind}.json")
    return summary


def _sample(frame: pd.DataFrame, max_rows: int | None) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=max_rows, random_state=0).reset_index(drop=True)


def check_schema(reference: pd.DataFrame, current: pd.DataFrame, report: str) -> None:
    """Raise SchemaMismatchError naming the columns when the frames' columns differ."""
    ref_cols, cur_cols = list(reference.columns), list(current.columns)
    missing = [c for c in ref_cols if c not in cur_cols]
    extra = [c for c in cur_cols if c not in ref_cols]
    if missing or extra:
        raise SchemaMismatchError(report, missing, extra)


def column_tests(result: dict[str, Any]) -> list[ColumnTest]:
    """Per-column drift tests out of `snapshot.dict()`: each ValueDrift metric with the
    status of its test (FAIL = drift detected by the column's method and threshold)."""
    status: dict[str, str] = {}
    for test in result.get("tests", []):
        config = test.get("metric_config") or {}
        if (config.get("params") or {}).get("type", "").endswith(":ValueDrift"):
            status[config["metric_id"]] = test["status"]
    tests: list[ColumnTest] = []
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if not config.get("type", "").endswith(":ValueDrift"):
            continue
        tests.append(ColumnTest(
            column=config["column"],
            method=str(config.get("method")),
            score=_finite(metric.get("value")),
            threshold=_finite(config.get("threshold")),
            drifted=status.get(metric["id"]) == "FAIL",
        ))
    return tests


def add_verdict_banner(html_path: Path, summary: ReportSummary) -> None:
    """Put the verdict in plain HTML at the top of Evidently's page, so it reads (and a
    browser test finds it) before any script runs."""
    colour = "#b71c1c" if summary.verdict != NO_DRIFT else "#1b5e20"
    drifted = ", ".join(summary.drifted_columns) or "none"
    nulls = "; ".join(f"{side}: {', '.join(cols)}" for side, cols in summary.all_null_columns.items())
    banner = (
        f'<div id="shoprec-verdict" style="font-family:sans-serif;padding:12px 16px;'
        f'border-left:6px solid {colour};background:#fafafa;margin:8px">'
        f'<b>shoprec {summary.kind} report {_escape(summary.report_id)}</b> &mdash; '
        f'verdict: <b style="color:{colour}">{summary.verdict.upper()}</b><br>'
        f'reference {_escape(summary.reference_window)} ({summary.rows_reference:,} rows) vs current '
        f'{_escape(summary.current_window)} ({summary.rows_current:,} rows); drifted columns '
        f'({summary.drift_share:.0%}): {_escape(drifted)}'
        + (f"<br>all-null columns (not tested): {_escape(nulls)}" if nulls else "")
        + (f"<br>compared on uniform samples: {summary.metrics['compared_sample_rows']}"
           if "compared_sample_rows" in summary.metrics else "")
        + _outage_line(summary)
        + "</div>"
    )
    text = html_path.read_text(encoding="utf-8")
    at = text.find("<body")
    at = text.find(">", at) + 1 if at >= 0 else 0
    html_path.write_text(text[:at] + banner + text[at:], encoding="utf-8")


def _outage_line(summary: ReportSummary) -> str:
    """The serving-outage alert, apart from the verdict: answers given while the feature
    store was down say nothing about drift, so they are left out of the compared data."""
    outage = summary.metrics.get("outage") or {}
    if not outage.get("answers"):
        return ""
    return (f'<br><b style="color:#e65100">ALERT: serving outage</b>: {outage["answers"]:,} answer(s) '
            f'({outage["rate"]:.0%}) were fallbacks because the feature store was unavailable; '
            f"they are left out of this report (an outage is an alert, not drift)")


def _evidently_values(result: dict[str, Any]) -> dict[str, Any]:
    """The dataset-level drift figure Evidently computed (count and share of drifted columns)."""
    for metric in result.get("metrics", []):
        if metric.get("config", {}).get("type", "").endswith(":DriftedColumnsCount"):
            return {"drifted_columns_count": metric["value"]}
    return {}


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    return str(value)
