"""The recommendation-quality report: Evidently's recsys metrics at k on the reference's
model predictions and on the logged answers that have ground truth in the current window."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from shoprec.monitoring import drift as D
from shoprec.monitoring import frames as F
from shoprec.monitoring.settings import MonitoringSettings

if TYPE_CHECKING:
    from shoprec.monitoring.workspace import DriftWorkspace

QUALITY_METRICS = ("NDCG", "HitRate", "MRR", "RecallTopK", "PrecisionTopK")


def quality_report(
    reference: pd.DataFrame, current: pd.DataFrame, *, run_id: str, out_dir: Path,
    reference_window: str, current_window: str, settings: MonitoringSettings,
    workspace: "DriftWorkspace | None" = None,
) -> D.ReportSummary:
    """Evidently's recsys metrics at k on both sides; verdict 'quality drop' when NDCG@k
    fell by more than `settings.quality_drop` (relative). `workspace`: see `drift_report`."""
    ref_values = recsys_at_k(reference, settings.k)
    cur_values = recsys_at_k(current, settings.k)
    quality = {
        name: {"reference": ref_values[name], "current": cur_values[name],
               "drop": _drop(ref_values[name], cur_values[name])}
        for name in ref_values
    }
    metrics = _recsys_metrics(settings.k)
    ndcg = quality[f"NDCG@{settings.k}"]["drop"]
    dropped = ndcg is not None and ndcg > settings.quality_drop
    return D.drift_report(
        reference, current, kind=D.QUALITY, report_id=f"{run_id}/{D.QUALITY}", out_dir=out_dir,
        numerical=[], categorical=[], reference_window=reference_window, current_window=current_window,
        metrics={"k": settings.k, "quality": quality, "users_current": int(current[F.QUALITY_USER].nunique())},
        extra_metrics=metrics, data_definition_extra=_recsys_definition(),
        summary_columns=[F.QUALITY_PREDICTION, F.QUALITY_TARGET], max_rows=None,
        verdict=D.QUALITY_DROP if dropped else None, workspace=workspace,
    )


def recsys_at_k(frame: pd.DataFrame, k: int) -> dict[str, float]:
    """Evidently's NDCG, HitRate, MRR, Recall and Precision at k of one recsys frame."""
    from evidently import Dataset, Report

    definition = _recsys_definition_object()
    result = Report(_recsys_metrics(k)).run(
        current_data=Dataset.from_pandas(frame, data_definition=definition), reference_data=None).dict()
    values: dict[str, float] = {}
    for metric, name in zip(result["metrics"], QUALITY_METRICS):
        # Each value is a curve over ranks 1..; the k-th point (position k-1) is the figure at k.
        curve = list(metric["value"]["value"].values())
        values[f"{name}@{k}"] = float(curve[min(k, len(curve)) - 1]) if curve else float("nan")
    return values


def _recsys_metrics(k: int) -> list[Any]:
    from evidently.metrics import MRR, NDCG, HitRate, PrecisionTopK, RecallTopK

    return [NDCG(k=k), HitRate(k=k), MRR(k=k), RecallTopK(k=k), PrecisionTopK(k=k)]


def _recsys_definition() -> dict[str, Any]:
    from evidently import Recsys

    return {"ranking": [Recsys(user_id=F.QUALITY_USER, item_id=F.QUALITY_ITEM, target=F.QUALITY_TARGET,
                               prediction=F.QUALITY_PREDICTION, recommendations_type="rank")]}


def _recsys_definition_object() -> Any:
    from evidently import DataDefinition

    return DataDefinition(numerical_columns=[F.QUALITY_PREDICTION, F.QUALITY_TARGET],
                          categorical_columns=[F.QUALITY_USER, F.QUALITY_ITEM], **_recsys_definition())


def _drop(reference: float, current: float) -> float | None:
    if not reference or reference != reference:
        return None
    return round((reference - current) / reference, 4)
