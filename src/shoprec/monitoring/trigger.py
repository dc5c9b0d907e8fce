"""The retraining trigger: thresholds decide_retraining, a cool-down limits, a launcher starts training.

`decide_retraining` reads a run's report summaries against a `TriggerPolicy`; `fire` records
the trigger in the home's trigger state file under a file lock (so two checks at once cannot
both start training) and only then launches, with the triggering report's id in the new run's
lineage. A launcher is anything with `launch(report_id)`: the shells provide them (kfp.local
on this machine, a KFP run on a cluster); this module never starts a pipeline itself.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Protocol

import pandas as pd

from shoprec.home import Home
from shoprec.monitoring import drift as D

LINEAGE_FILE = "lineage.json"
TRIGGER_PARAMETER = "triggered_by"  # a training pipeline parameter that carries the report id


@dataclass(frozen=True)
class TriggerPolicy:
    """Thresholds (configurable) and the cool-down.

    max_drift_share: a feature or prediction report whose share of drifted columns reaches
        this fires (Evidently's dataset-drift verdict uses the run's drift_share; this may be
        stricter or looser).
    max_fallback_rate: a current fallback rate above this fires.
    max_quality_drop: a relative NDCG@k drop above this fires.
    cooldown_hours: at most one trigger per this many hours.
    """

    max_drift_share: float = 0.5
    max_fallback_rate: float = 0.2
    max_quality_drop: float = 0.2
    cooldown_hours: float = 24.0


@dataclass
class RetrainDecision:
    fire: bool
    reasons: list[str]
    report_id: str | None  # the report that crossed a threshold first
    cooldown_until: str | None = None  # set when a crossing was held back by the cool-down
    decided_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "RetrainDecision":
        return RetrainDecision(**data)


@dataclass
class Triggered:
    """What `fire` started."""

    report_id: str
    at: str
    run: dict[str, Any] = field(default_factory=dict)  # the launcher's facts (run id, folder)


class Launcher(Protocol):
    def launch(self, report_id: str) -> dict[str, Any]:
        """Start a training run whose lineage names `report_id`; return facts about it."""


def crossings(reports: list[D.ReportSummary], policy: TriggerPolicy) -> list[tuple[str, str]]:
    """(report id, reason) for every threshold a report crosses, in report order."""
    found: list[tuple[str, str]] = []
    for r in reports:
        if r.kind in (D.USER_FEATURES, D.ITEM_FEATURES, D.PREDICTIONS) and r.columns:
            if r.dataset_drift or r.drift_share >= policy.max_drift_share:
                found.append((r.report_id, f"{r.kind}: {r.drift_share:.0%} of columns drifted "
                                           f"({', '.join(r.drifted_columns)})"))
        fallback = (r.metrics.get("fallback_rate") or {}).get("current")
        if fallback is not None and fallback > policy.max_fallback_rate:
            found.append((r.report_id, f"fallback rate {fallback:.0%} > {policy.max_fallback_rate:.0%}"))
        for name, value in (r.metrics.get("quality") or {}).items():
            if name.startswith("NDCG") and value.get("drop") is not None and value["drop"] > policy.max_quality_drop:
                found.append((r.report_id, f"{name} dropped {value['drop']:.0%} "
                                           f"({value['reference']:.4f} -> {value['current']:.4f})"))
    return found


def decide_retraining(
    reports: list[D.ReportSummary], policy: TriggerPolicy, home: Home, now: pd.Timestamp | None = None
) -> RetrainDecision:
    """Fire when a threshold is crossed and the last trigger is older than the cool-down."""
    now = _now(now)
    found = crossings(reports, policy)
    if not found:
        return RetrainDecision(False, ["no threshold crossed"], None, decided_at=now.isoformat())
    until = _cooldown_until(read_state(home), policy)
    if until is not None and now < until:
        return RetrainDecision(False, [r for _, r in found] + [f"held back: cool-down until {until.isoformat()}"],
                        found[0][0], cooldown_until=until.isoformat(), decided_at=now.isoformat())
    return RetrainDecision(True, [r for _, r in found], found[0][0], decided_at=now.isoformat())


def fire(
    decision: RetrainDecision, launcher: Launcher, policy: TriggerPolicy, home: Home,
    now: pd.Timestamp | None = None,
) -> Triggered | None:
    """Start training for a firing decision, at most once per cool-down: the cool-down is
    checked again and the trigger recorded under the state file's lock before launching."""
    if not decision.fire or decision.report_id is None:
        return None
    now = _now(now)
    with _locked_state(home) as (state, save):
        until = _cooldown_until(state, policy)
        if until is not None and now < until:
            return None
        state.update({"last_triggered_at": now.isoformat(), "report_id": decision.report_id,
                      "reasons": decision.reasons})
        save(state)
    run = launcher.launch(decision.report_id)
    with _locked_state(home) as (state, save):
        state.setdefault("history", []).append({"at": now.isoformat(), "report_id": decision.report_id, "run": run})
        save(state)
    return Triggered(decision.report_id, now.isoformat(), run)


def read_state(home: Home) -> dict[str, Any]:
    path = home.trigger_state
    return json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}


def _cooldown_until(state: dict[str, Any], policy: TriggerPolicy) -> pd.Timestamp | None:
    last = state.get("last_triggered_at")
    return pd.Timestamp(last) + pd.Timedelta(hours=policy.cooldown_hours) if last else None


@contextmanager
def _locked_state(home: Home) -> Iterator[tuple[dict[str, Any], Callable[[dict[str, Any]], None]]]:
    path = home.trigger_state
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = read_state(home)

            def save(new: dict[str, Any]) -> None:
                partial = path.with_suffix(".json.partial")
                partial.write_text(json.dumps(new, indent=2, default=str))
                partial.replace(path)

            yield state, save
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _now(now: pd.Timestamp | None) -> pd.Timestamp:
    if now is None:
        return pd.Timestamp.now(tz="UTC")
    stamp = pd.Timestamp(now)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
