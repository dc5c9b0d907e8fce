"""Churn monitoring: feature drift (the model's inputs) and prediction drift (the distribution of
`churn_probability`), written by the platform's Evidently reports (`monitoring.drift.drift_report`)
into the home's monitoring reports, so they appear in the same index and Evidently workspace.

Both sides are the churn population at one time: every user active by it, with the model's
inputs as the online store would hold them then (`user_stats` computed from events at or before
that time, the same SQL as training) and the model's answer on them.

    reference   as of the bundle's test snapshot (what the model was evaluated on)
    current     as of a later time (default: the last event)

    <home>/reports/monitoring/<churn run id>/churn_features.{html,json},
                                             churn_predictions.{html,json}, run.json
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.churn.bundle import CHURN_MODEL_NAME, ChurnBundle
from shoprec.churn.features import snapshot_user_stats
from shoprec.churn.labels import utc
from shoprec.errors import MonitoringError
from shoprec.home import Home
from shoprec.monitoring import drift as D
from shoprec.monitoring.index import write_index
from shoprec.monitoring.run import MonitoringRun, new_run_id
from shoprec.monitoring.settings import MonitoringSettings
from shoprec.monitoring.workspace import DriftWorkspace

CHURN_FEATURES_REPORT = "churn_features"
CHURN_PREDICTIONS_REPORT = "churn_predictions"
PROBABILITY = "churn_probability"
HIGH_RISK = 0.5  # the share of users above this is reported beside the drift test: a campaign's size


def last_event_time(events: pd.DataFrame) -> pd.Timestamp:
    """The time just covering the last event, in whole seconds (snapshots are whole seconds)."""
    return pd.to_datetime(events[S.TIMESTAMP], utc=True).max().ceil("s")


def churn_population(
    bundle: ChurnBundle, events: pd.DataFrame, items: pd.DataFrame | None, at: pd.Timestamp | str
) -> pd.DataFrame:
    """Every user active by `at`: user_id, the model's inputs as of `at`, and churn_probability.

    Raises:
        MonitoringError: no user was active by `at`.
    """
    stamp = utc(at)
    rows = snapshot_user_stats(events, items, [stamp])
    if rows.empty:
        raise MonitoringError(f"no user was active by {stamp}: no churn population to compare")
    features = bundle.features
    frame = rows[[S.USER_ID, *features]].reset_index(drop=True).astype({name: "float64" for name in features})
    frame[PROBABILITY] = bundle.model.probability(frame[features].to_numpy(np.float64))
    return frame


def _prediction_facts(reference: pd.Series, current: pd.Series) -> dict[str, Any]:
    """What a person reads beside the test: mean risk and the share above HIGH_RISK, per side."""
    return {"mean_churn_probability": {"reference": round(float(reference.mean()), 6),
                                       "current": round(float(current.mean()), 6)},
            f"share_above_{HIGH_RISK}": {"reference": round(float((reference > HIGH_RISK).mean()), 6),
                                         "current": round(float((current > HIGH_RISK).mean()), 6)}}


def churn_drift_reports(
    bundle: ChurnBundle,
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    out_dir: Path,
    run_id: str,
    *,
    reference_at: pd.Timestamp | str | None = None,
    current_at: pd.Timestamp | str | None = None,
    settings: MonitoringSettings | None = None,
    workspace: DriftWorkspace | None = None,
    version: str | None = None,
) -> list[D.ReportSummary]:
    """The churn feature and prediction drift reports (reference vs current population) in `out_dir`.

    reference_at: default the bundle's test snapshot; current_at: default the last event.

    Raises:
        MonitoringError: the current time is not after the reference time, or nobody was active.
    """
    settings = settings or MonitoringSettings()
    ref_at = utc(reference_at if reference_at is not None else bundle.config["training"]["test_snapshot"])
    cur_at = utc(current_at) if current_at is not None else last_event_time(events)
    if cur_at <= ref_at:
        raise MonitoringError(f"churn drift: the current time {cur_at} is not after the reference {ref_at}")
    reference = churn_population(bundle, events, items, ref_at)
    current = churn_population(bundle, events, items, cur_at)
    # "as of" windows: everything up to each time (the populations are cumulative by definition).
    start = pd.to_datetime(events[S.TIMESTAMP], utc=True).min()
    labels = D.window_label(start, ref_at), D.window_label(start, cur_at)
    lineage = {"model_name": CHURN_MODEL_NAME, "model_version": version or "bundle",
               "reference_at": ref_at.isoformat(), "current_at": cur_at.isoformat(),
               "users": {"reference": int(len(reference)), "current": int(len(current))}}
    reports = []
    for kind, columns, extra in (
        (CHURN_FEATURES_REPORT, list(bundle.features), {}),
        (CHURN_PREDICTIONS_REPORT, [PROBABILITY], _prediction_facts(reference[PROBABILITY], current[PROBABILITY])),
    ):
        reports.append(D.drift_report(
            reference[columns].copy(), current[columns].copy(), kind=kind, report_id=f"{run_id}/{kind}",
            out_dir=out_dir, numerical=columns, categorical=[], reference_window=labels[0],
            current_window=labels[1], drift_share=settings.drift_share, max_rows=settings.max_rows,
            metrics={**lineage, **extra}, workspace=workspace))
    return reports


def churn_monitoring_run(
    home: Home | str | Path | None,
    bundle: ChurnBundle,
    events: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    reference_at: pd.Timestamp | str | None = None,
    current_at: pd.Timestamp | str | None = None,
    settings: MonitoringSettings | None = None,
    version: str | None = None,
    run_id: str | None = None,
) -> MonitoringRun:
    """Write the churn drift reports as one monitoring run of the home (its folder, run.json,
    the Evidently workspace) and refresh the report index."""
    home = Home.at(home)
    run_id = run_id or new_run_id("churn")
    folder = home.monitoring_run(run_id)
    reports = churn_drift_reports(bundle, events, items, folder, run_id, reference_at=reference_at,
                                  current_at=current_at, settings=settings,
                                  workspace=DriftWorkspace.of(home), version=version)
    result = MonitoringRun(run_id, folder, reports)
    record = {**result.to_dict(), "model": {"name": CHURN_MODEL_NAME, "version": version or "bundle",
                                            "bundle": str(bundle.path)}}
    (folder / D.RUN_FILE).write_text(json.dumps(record, indent=2, default=_plain))
    write_index(home)
    return result


def _plain(value: Any) -> Any:
    """numpy scalars and times in run.json as plain JSON values."""
    return value.item() if isinstance(value, np.generic) else str(value)


__all__: Sequence[str] = ("CHURN_FEATURES_REPORT", "CHURN_PREDICTIONS_REPORT", "PROBABILITY",
                          "churn_drift_reports", "churn_monitoring_run", "churn_population")
