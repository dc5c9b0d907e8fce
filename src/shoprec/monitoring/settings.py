"""What one monitoring check compares and how (shared by run.py, reference.py and quality.py)."""

from __future__ import annotations

from dataclasses import dataclass

from shoprec.monitoring import drift as D

DEFAULT_WINDOW_DAYS = 7.0


@dataclass
class MonitoringSettings:
    """What one check compares and how.

    window_days: length of the current window (the reference window has the same length).
    drift_share: share of drifted columns at which a report's verdict is dataset drift.
    k: cut-off of the prediction and quality reports.
    quality_drop: relative NDCG@k drop (reference -> current) that a quality report calls a drop.
    max_rows: rows compared per side (see `drift.drift_report`).
    """

    window_days: float = DEFAULT_WINDOW_DAYS
    drift_share: float = 0.5
    k: int = 10
    quality_drop: float = 0.2
    max_rows: int | None = D.DEFAULT_MAX_ROWS
