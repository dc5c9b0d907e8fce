"""A monitoring run: every report of one check, written into one folder of the home's reports.

    <home>/reports/monitoring/
        reference/            the training window, saved once by the training pipeline's
                              `monitor` step (see reference.py)
        <run id>/             one folder per run: <kind>.html + <kind>.json per report, run.json
        trigger_state.json    the trigger's cool-down memory (see trigger.py)
    <home>/reports/index.html the index of every report (see index.py)
    <home>/reports/evidently/ the same reports as an Evidently workspace (see workspace.py):
                              `evidently ui --workspace <home>/reports/evidently`

The quality report is quality.py's; MonitoringSettings lives in settings.py and is importable
from here too (the CLI and the KFP components take it from this module).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.errors import EmptyWindowError, MonitoringError
from shoprec.home import FEATURES_MANIFEST, Home
from shoprec.monitoring import drift as D
from shoprec.monitoring.drift import RUN_FILE
from shoprec.monitoring import frames as F
from shoprec.monitoring.quality import quality_report
from shoprec.monitoring.reference import (
    Reference, ServingModel, load_reference, reference_facts, save_reference,
)
from shoprec.monitoring.settings import MonitoringSettings
from shoprec.monitoring.workspace import DriftWorkspace


@dataclass
class MonitoringRun:
    """Where a run's reports are and what they said."""

    run_id: str
    folder: Path
    reports: list[D.ReportSummary]
    skipped: dict[str, str] = field(default_factory=dict)  # kind -> why it was not written
    # Serving outage in the window (answers given while the feature store was down): an alert
    # for people, never a drift signal: {"rate", "answers", "answers_total"}; empty when none.
    outage: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        verdicts = {r.verdict for r in self.reports}
        for worst in (D.DRIFT, D.QUALITY_DROP):
            if worst in verdicts:
                return worst
        return D.NO_DRIFT

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "verdict": self.verdict, "skipped": self.skipped,
                "outage": self.outage, "reports": [r.to_dict() for r in self.reports]}

    @staticmethod
    def read(folder: Path) -> "MonitoringRun":
        data = json.loads((folder / RUN_FILE).read_text())
        return MonitoringRun(data["run_id"], folder,
                             [D.ReportSummary.from_dict(r) for r in data["reports"]], data.get("skipped", {}),
                             data.get("outage", {}))


def new_run_id(prefix: str = "drift") -> str:
    return f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}"


# --- one check ---------------------------------------------------------------------------------


def run_monitoring(
    home: Home,
    current: EventData | None,
    *,
    settings: MonitoringSettings | None = None,
    predictions_dir: Path | None = None,
    now: pd.Timestamp | None = None,
    run_id: str | None = None,
) -> MonitoringRun:
    """Compare the newest `window_days` of `current` events and of the prediction log against
    the saved reference; write every report, the run summary and the index.

    Feature reports need `current` events; prediction reports need a model reference and log
    records in the window; the quality report needs both and ground truth. A report that
    cannot be written is listed in `skipped` with the reason, unless nothing at all can be
    compared, which raises EmptyWindowError.
    """
    from shoprec.monitoring.index import write_index
    from shoprec.serving.prediction_log import read_predictions

    settings = settings or MonitoringSettings()
    reference = load_reference(home)
    run_id = run_id or new_run_id()
    folder = home.monitoring_run(run_id)
    workspace = DriftWorkspace.of(home)
    reports: list[D.ReportSummary] = []
    skipped: dict[str, str] = {}
    window = pd.Timedelta(days=settings.window_days)
    ref_start, ref_end = reference.end - window, reference.end

    if current is not None:
        cur_start, cur_end = F.last_window(current.events, settings.window_days)
        reports += feature_reports(
            reference.events, current.events, reference.items if current.items is None else current.items,
            (ref_start, ref_end), (cur_start, cur_end), run_id, folder, settings, reference.items,
            workspace=workspace)
    else:
        cur_end = F.utc(now) if now is not None else pd.Timestamp.now(tz="UTC")
        cur_start = cur_end - window
        skipped[D.USER_FEATURES] = skipped[D.ITEM_FEATURES] = "no current events given (--current)"

    log_dir = predictions_dir or home.predictions
    log = read_predictions(log_dir, cur_start, cur_end) if log_dir.exists() else pd.DataFrame()
    outage = _outage(log)
    # Answers given during an outage are fallbacks for the stack's sake, not the shoppers':
    # drift and quality are measured on the others only (the outage is reported apart).
    served = F.without_outage(log)
    if reference.predictions is None:
        skipped[D.PREDICTIONS] = skipped[D.QUALITY] = "the reference has no model predictions"
    elif log.empty:
        skipped[D.PREDICTIONS] = skipped[D.QUALITY] = (
            f"no prediction log records in {D.window_label(cur_start, cur_end)} under {log_dir}")
    elif served.empty:
        skipped[D.PREDICTIONS] = skipped[D.QUALITY] = (
            f"every one of the {len(log):,} logged answers was an outage fallback (feature store "
            f"unavailable): an alert, nothing to compare")
    else:
        reports.append(D.drift_report(
            reference.predictions, F.log_prediction_frame(served, reference.popularity),
            kind=D.PREDICTIONS, report_id=f"{run_id}/{D.PREDICTIONS}", out_dir=folder,
            numerical=list(F.PREDICTION_NUMERICAL), categorical=list(F.PREDICTION_CATEGORICAL),
            reference_window=_reference_label(reference), current_window=D.window_label(cur_start, cur_end),
            drift_share=settings.drift_share, max_rows=settings.max_rows,
            metrics={"fallback_rate": {"reference": reference.facts.get("fallback_rate", 0.0),
                                       "current": F.fallback_rate(log)},
                     "answers_current": int(len(served)), "outage": outage},
            workspace=workspace,
        ))
        truth = F.log_quality_frame(served, current.events, settings.k) if current is not None else None
        if truth is None or truth.empty or reference.quality is None or reference.quality.empty:
            skipped[D.QUALITY] = "no ground truth: no logged user did anything after their answer in the window"
        else:
            reports.append(quality_report(reference.quality, truth, run_id=run_id, out_dir=folder,
                                          reference_window=_reference_label(reference),
                                          current_window=D.window_label(cur_start, cur_end),
                                          settings=settings, workspace=workspace))
    if not reports:
        raise EmptyWindowError("current", f"{D.window_label(cur_start, cur_end)} (nothing to compare: "
                               + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
    result = MonitoringRun(run_id, folder, reports, skipped, outage if outage["answers"] else {})
    (folder / RUN_FILE).write_text(json.dumps(result.to_dict(), indent=2, default=D._json_default))
    write_index(home)
    return result


def _outage(log: pd.DataFrame) -> dict[str, Any]:
    """The outage facts of a prediction-log window (see `MonitoringRun.outage`)."""
    answers = int(F.is_outage(log).sum()) if len(log) else 0
    return {"rate": round(F.outage_rate(log), 4), "answers": answers, "answers_total": int(len(log))}


def feature_reports(
    reference_events: pd.DataFrame,
    current_events: pd.DataFrame,
    items: pd.DataFrame | None,
    reference_window: tuple[pd.Timestamp, pd.Timestamp],
    current_window: tuple[pd.Timestamp, pd.Timestamp],
    run_id: str,
    folder: Path,
    settings: MonitoringSettings,
    reference_items: pd.DataFrame | None = None,
    workspace: DriftWorkspace | None = None,
) -> list[D.ReportSummary]:
    """The user-feature and item-feature drift reports of two equally long windows (also
    stored in `workspace` when given)."""
    check_event_schema(reference_events, current_events)
    ref_users, ref_items = F.feature_frames(reference_events, reference_items if reference_items is not None else items,
                                            *reference_window, what="reference")
    cur_users, cur_items = F.feature_frames(current_events, items, *current_window, what="current")
    labels = D.window_label(*reference_window), D.window_label(*current_window)
    out = []
    for kind, ref, cur, num, cat in (
        (D.USER_FEATURES, ref_users, cur_users, F.USER_NUMERICAL, F.USER_CATEGORICAL),
        (D.ITEM_FEATURES, ref_items, cur_items, F.ITEM_NUMERICAL, F.ITEM_CATEGORICAL),
    ):
        out.append(D.drift_report(ref, cur, kind=kind, report_id=f"{run_id}/{kind}", out_dir=folder,
                                  numerical=list(num), categorical=list(cat), reference_window=labels[0],
                                  current_window=labels[1], drift_share=settings.drift_share,
                                  max_rows=settings.max_rows, workspace=workspace))
    return out


def check_event_schema(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    """The current events must carry the reference's canonical columns, with no strays."""
    from shoprec.errors import SchemaMismatchError

    canonical = [c for c in S.EVENT_COLUMNS if c in reference.columns]
    missing = [c for c in canonical if c not in current.columns]
    extra = [c for c in current.columns if c not in reference.columns]
    if missing or extra:
        raise SchemaMismatchError("current events", missing, extra)


def _reference_label(reference: Reference) -> str:
    return D.window_label(F.utc(reference.facts["start"]), reference.end)


# --- the training pipeline's monitor step ------------------------------------------------------


def first_report(
    clean_dir: str | Path,
    home: Home | str | Path | None,
    features_dir: str | Path | None = None,
    bundle_dir: str | Path | None = None,
    settings: MonitoringSettings | None = None,
    serving: ServingModel | None = None,
) -> MonitoringRun:
    """The training pipeline's last step: the newest `window_days` of the clean data are held
    out; the training window before them is the reference. Writes the first feature drift
    report (real temporal drift: the window before the hold-out against the hold-out) and
    saves the whole clean data as the reference of later checks, with the answers of the
    model in production (`serving`, see `ServingModel.after_gate`).

    serving: None = `bundle_dir` is the model in production (a run without a gate). When the
        gate rejected the candidate (`serving.promoted` false), a reference already saved for
        the same production version is kept as it is: it is the window that model was
        promoted on, and replacing it with newer data would hide the drift the model faces.

    features_dir: the pipeline's feature tables; their `features.json` (as_of, snapshot id)
    goes into the report's lineage. The drift frames themselves are rebuilt per window from
    the clean events, because the tables are as of one time and both windows need their own.
    """
    settings = settings or MonitoringSettings()
    home = Home.at(home)
    data = EventData.read(clean_dir)
    hold_start, hold_end = F.last_window(data.events, settings.window_days)
    lineage: dict[str, Any] = {"clean": str(clean_dir)}
    manifest = Path(features_dir) / FEATURES_MANIFEST if features_dir else None
    if manifest is not None and manifest.exists():
        lineage["features"] = json.loads(manifest.read_text())
    run_id = new_run_id("training")
    folder = home.monitoring_run(run_id)
    reports = feature_reports(
        data.events, data.events, data.items,
        (hold_start - pd.Timedelta(days=settings.window_days), hold_start), (hold_start, hold_end),
        run_id, folder, settings, workspace=DriftWorkspace.of(home))
    result = MonitoringRun(run_id, folder, reports,
                           {D.PREDICTIONS: "first report: no prediction log yet",
                            D.QUALITY: "first report: no prediction log yet"})
    serving = serving or ServingModel(Path(bundle_dir) if bundle_dir else None, None, promoted=True)
    existing = reference_facts(home) if not serving.promoted else None
    if existing is not None and serving.version is not None and existing.get("model_version") == serving.version:
        lineage["reference"] = (f"kept: the gate rejected the candidate and the reference of "
                                f"{serving.version} (in production) stays")
    else:
        save_reference(home, data, bundle_dir=serving.bundle_dir, settings=settings,
                       lineage={"training_run": run_id, "promoted": serving.promoted},
                       model_version=serving.version)
        lineage["reference"] = (f"saved with the predictions of {serving.version or serving.bundle_dir}"
                                + (" (promoted)" if serving.promoted else " (in production; the candidate was rejected)")
                                if serving.bundle_dir else "saved without model predictions: no model in production")
    (folder / RUN_FILE).write_text(json.dumps({**result.to_dict(), "lineage": lineage}, indent=2,
                                              default=D._json_default))
    from shoprec.monitoring.index import write_index

    write_index(home)
    return result


def read_current(path: str | Path | None) -> EventData | None:
    """Current events from a dataset folder (events.parquet inside) or a CSV / Parquet events
    file; None for '' / None (prediction log only)."""
    if not path:
        return None
    from shoprec.data.loaders import load_event_files

    source = Path(path)
    if source.is_dir():
        return EventData.read(source)
    if not source.exists():
        raise MonitoringError(f"current events {source} not found")
    return load_event_files(source)
