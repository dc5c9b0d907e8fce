"""The reference of every monitoring check: the training window, saved by the training
pipeline's `monitor` step into <home>/reports/monitoring/reference/ (events, items, item
popularity and, given a model bundle, the model's predictions with their quality frame).

The reference's predictions are the answers of the model in production after the run (the
candidate when the gate promoted it, else the champion): a rejected candidate's answers would
make every later check compare the live model with a model nobody serves.

It is written atomically: each save goes into a fresh folder `reference/<version>/`, and only
when every file is there does `reference/current.json` (a temp file renamed over the old one)
point at it. A check that reads at the same time sees the old reference or the new one, never
half of each; a save that fails leaves the old one in place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.errors import EmptyWindowError, MonitoringError
from shoprec.home import Home
from shoprec.monitoring import drift as D
from shoprec.monitoring import frames as F
from shoprec.monitoring.settings import MonitoringSettings

REFERENCE_FILE = "reference.json"
POINTER_FILE = "current.json"  # names the folder of the reference in force
KEEP_VERSIONS = 2  # the one in force and the one before (a check may still be reading it)


class _Registry(Protocol):
    """What the reference needs of `shoprec.lifecycle.registry.Registry`."""

    def production(self) -> str | None: ...

    def bundle_dir(self, version: str) -> Path: ...


@dataclass(frozen=True)
class ServingModel:
    """The model in production once a training run is through its gate: the one whose
    answers the reference must hold.

    bundle_dir: its bundle (None when nothing is in production: the reference has no
        predictions and the prediction reports say so).
    version: its registry version (None when unknown, e.g. a bundle trained by hand).
    promoted: True when it is this run's candidate, promoted by the gate.
    """

    bundle_dir: Path | None
    version: str | None
    promoted: bool

    @staticmethod
    def after_gate(decision: Mapping[str, Any], candidate_dir: str | Path | None,
                   registry: _Registry) -> "ServingModel":
        """The promote step's `decision` ({"promote": bool, "version": str, ...}) applied: the
        candidate (registered as `version`) when promoted, else the registry's production
        version, which the rejection leaves in place."""
        if decision.get("promote"):
            if candidate_dir is None:
                raise MonitoringError("the gate promoted the candidate, but its bundle was not given")
            return ServingModel(Path(candidate_dir), decision.get("version"), promoted=True)
        champion = registry.production()
        return ServingModel(registry.bundle_dir(champion) if champion else None, champion, promoted=False)


def save_reference(
    home: Home,
    data: EventData,
    *,
    end: pd.Timestamp | None = None,
    bundle_dir: str | Path | None = None,
    settings: MonitoringSettings | None = None,
    keep_days: float = 90.0,
    lineage: dict[str, Any] | None = None,
    model_version: str | None = None,
) -> Path:
    """Save the training window (events before `end`, default all) as the reference of later
    checks: its last `keep_days` of events, the items, item popularity, and, given a model
    bundle (the model in production: see `ServingModel`), the model's recommendations on the
    validation users with their targets. Atomic (see the module doc); returns the folder."""
    settings = settings or MonitoringSettings()
    events = data.events
    times = pd.to_datetime(events[S.TIMESTAMP], utc=True)
    end = F.utc(end) if end is not None else times.max() + pd.Timedelta(seconds=1)
    training = events[times < end]
    if training.empty:
        raise EmptyWindowError("reference (training) events", D.window_label(None, end))
    kept = F.window_events(training, end - pd.Timedelta(days=keep_days), end)
    root = home.monitoring_reference
    version = f"v-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}-{uuid.uuid4().hex[:8]}"  # sorts by time
    # Written under a dot name first: a folder that is not named yet is no version at all.
    out = root / f".{version}.partial"
    out.mkdir(parents=True)
    try:
        _write_reference(out, kept, training, end, data, bundle_dir, settings, lineage, model_version)
        out.rename(root / version)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    _point_at(root, version)
    _prune(root, version)
    return root / version


def _write_reference(out: Path, kept: pd.DataFrame, training: pd.DataFrame, end: pd.Timestamp,
                     data: EventData, bundle_dir: str | Path | None, settings: MonitoringSettings,
                     lineage: dict[str, Any] | None, model_version: str | None) -> None:
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
        "model": None, "model_version": model_version, **(lineage or {}),
    }
    if bundle_dir:
        predictions, quality, fallback = F.model_reference(bundle_dir, training, data.items, popularity, settings.k)
        predictions.to_parquet(out / "predictions.parquet", index=False)
        quality.to_parquet(out / "quality.parquet", index=False)
        facts.update({"model": str(bundle_dir), "fallback_rate": fallback})
    (out / REFERENCE_FILE).write_text(json.dumps(facts, indent=2, default=str))


def _point_at(root: Path, version: str) -> None:
    """Make `version` the reference in force: a temp file renamed over the pointer (atomic)."""
    partial = root / f".{POINTER_FILE}.{uuid.uuid4().hex[:8]}.partial"
    partial.write_text(json.dumps({"version": version,
                                   "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    os.replace(partial, root / POINTER_FILE)


def _prune(root: Path, current: str) -> None:
    """Remove all but the newest KEEP_VERSIONS versions, and the files of the old single-folder
    layout (a home from before versioned references)."""
    versions = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("v-")),
                      key=lambda p: p.name, reverse=True)
    keep = {current, *(p.name for p in versions[:KEEP_VERSIONS])}
    for old in versions:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    for legacy in (REFERENCE_FILE, S.EVENTS_FILE, S.ITEMS_FILE, "popularity.parquet",
                   "predictions.parquet", "quality.parquet"):
        (root / legacy).unlink(missing_ok=True)


def reference_folder(home: Home) -> Path | None:
    """The folder of the reference in force (None when none was saved yet)."""
    root = home.monitoring_reference
    pointer = root / POINTER_FILE
    if pointer.exists():
        return root / json.loads(pointer.read_text())["version"]
    # A home saved before references were versioned keeps its files in the folder itself.
    return root if (root / REFERENCE_FILE).exists() else None


def reference_facts(home: Home) -> dict[str, Any] | None:
    """The saved reference's facts (reference.json), or None when there is none."""
    folder = reference_folder(home)
    return json.loads((folder / REFERENCE_FILE).read_text()) if folder is not None else None


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
    folder = reference_folder(home)
    if folder is None:
        raise MonitoringError(
            f"no monitoring reference in {home.monitoring_reference}: run the training pipeline (its `monitor` step "
            f"saves the training window) or `shoprec drift --reference PATH`"
        )
    read = lambda name: pd.read_parquet(folder / name) if (folder / name).exists() else None  # noqa: E731
    return Reference(read(S.EVENTS_FILE), read(S.ITEMS_FILE), read("popularity.parquet"),
                     read("predictions.parquet"), read("quality.parquet"),
                     json.loads((folder / REFERENCE_FILE).read_text()))
