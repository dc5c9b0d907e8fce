"""The reference of every monitoring check: the training window, saved once by the training
pipeline's `monitor` step into <home>/reports/monitoring/reference/ (events, items, item
popularity and, given a model bundle, the model's predictions with their quality frame)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.errors import EmptyWindowError, MonitoringError
from shoprec.home import Home
from shoprec.monitoring import drift as D
from shoprec.monitoring import frames as F
from shoprec.monitoring.settings import MonitoringSettings

REFERENCE_FILE = "reference.json"


def save_reference(
    home: Home,
    data: EventData,
    *,
    end: pd.Timestamp | None = None,
    bundle_dir: str | Path | None = None,
    settings: MonitoringSettings | None = None,
    keep_days: float = 90.0,
    lineage: dict[str, Any] | None = None,
) -> Path:
    """Save the training window (events before `end`, default all) as the reference of later
    checks: its last `keep_days` of events, the items, item popularity, and, given a model
    bundle, the model's recommendations on the validation users with their targets."""
    settings = settings or MonitoringSettings()
    events = data.events
    times = pd.to_datetime(events[S.TIMESTAMP], utc=True)
    end = F.utc(end) if end is not None else times.max() + pd.Timedelta(seconds=1)
    training = events[times < end]
    if training.empty:
        raise EmptyWindowError("reference (training) events", D.window_label(None, end))
    kept = F.window_events(training, end - pd.Timedelta(days=keep_days), end)
    out = home.monitoring_reference
    out.mkdir(parents=True, exist_ok=True)
    kept.to_parquet(out / S.EVENTS_FILE, index=False)
    if data.items is not None:
        data.items.to_parquet(out / S.ITEMS_FILE, index=False)
    popularity = F.popularity_table(training)
    popularity.to_parquet(out / "popularity.parquet", index=False)
    facts: dict[str, Any] = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "start": pd.to_datetime(training[S.TIMESTAMP], utc=True).min().isoformat(),
        "end": end.isoformat(), "events": int(len(training)), "kept_events": int(len(kept)),
        "source": data.source, "snapshot_id": data.info.get("snapshot_id"), "k": settings.k,
        "model": None, **(lineage or {}),
    }
    for stale in ("predictions.parquet", "quality.parquet"):
        (out / stale).unlink(missing_ok=True)
    if bundle_dir:
        predictions, quality, fallback = F.model_reference(bundle_dir, training, data.items, popularity, settings.k)
        predictions.to_parquet(out / "predictions.parquet", index=False)
        quality.to_parquet(out / "quality.parquet", index=False)
        facts.update({"model": str(bundle_dir), "fallback_rate": fallback})
    (out / REFERENCE_FILE).write_text(json.dumps(facts, indent=2, default=str))
    return out


@dataclass
class Reference:
    events: pd.DataFrame
    items: pd.DataFrame | None
    popularity: pd.DataFrame
    predictions: pd.DataFrame | None
    quality: pd.DataFrame | None
    facts: dict[str, Any]

    @property
    def end(self) -> pd.Timestamp:
        return F.utc(self.facts["end"])


def load_reference(home: Home) -> Reference:
    """The saved reference; MonitoringError when the training pipeline has not saved one."""
    folder = home.monitoring_reference
    if not (folder / REFERENCE_FILE).exists():
        raise MonitoringError(
            f"no monitoring reference in {folder}: run the training pipeline (its `monitor` step "
            f"saves the training window) or `shoprec drift --reference PATH`"
        )
    read = lambda name: pd.read_parquet(folder / name) if (folder / name).exists() else None  # noqa: E731
    return Reference(read(S.EVENTS_FILE), read(S.ITEMS_FILE), read("popularity.parquet"),
                     read("predictions.parquet"), read("quality.parquet"),
                     json.loads((folder / REFERENCE_FILE).read_text()))
