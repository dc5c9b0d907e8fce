"""The retraining trigger: thresholds decide_retraining, a cool-down limits, a launcher starts training.

`decide_retraining` reads a run's report summaries against a `TriggerPolicy`: drift, the
cold-start fallback rate and a quality drop are retraining signals; a serving outage (answers
given while the feature store was down) is an alert for people and never starts training.

`fire` launches at most once per cool-down. It holds the home's launch lock for the whole
launch (taken without waiting: a second check that finds a launch in flight stands down), so
two checks at once cannot both start training, and a process that dies mid-launch releases it.
Each try is kept as an attempt record in the trigger state ("launching", then "launched" or
"failed" with the error); the cool-down starts only when a launch succeeded, so a failed
launch is tried again by the next check instead of silencing retraining for a day.
A launcher is anything with `launch(report_id)`: the shells provide them (kfp.local on this
machine, a KFP run on a cluster); this module never starts a pipeline itself.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
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
    max_fallback_rate: a current cold-start fallback rate (unknown user, empty history) above
        this fires; outage fallbacks do not count (see max_outage_rate).
    max_quality_drop: a relative NDCG@k drop above this fires.
    cooldown_hours: at most one trigger per this many hours (> 0: a cool-down of zero would
        retrain on every check while the drift lasts).
    max_outage_rate: a share of answers given while the feature store was down above this
        raises an alert (never a retraining).

    Raises:
        ValueError: a share outside [0, 1] or a cool-down that is not a positive number.
    """

    max_drift_share: float = 0.5
    max_fallback_rate: float = 0.2
    max_quality_drop: float = 0.2
    cooldown_hours: float = 24.0
    max_outage_rate: float = 0.01

    def __post_init__(self) -> None:
        if not (isinstance(self.cooldown_hours, (int, float)) and math.isfinite(self.cooldown_hours)
                and self.cooldown_hours > 0):
            raise ValueError(f"cooldown_hours must be a positive number of hours, got {self.cooldown_hours!r} "
                             f"(a cool-down of 0 or less would start training on every check)")
        for name in ("max_drift_share", "max_fallback_rate", "max_quality_drop", "max_outage_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")


@dataclass
class RetrainDecision:
    fire: bool
    reasons: list[str]
    report_id: str | None  # the report that crossed a threshold first
    cooldown_until: str | None = None  # set when a crossing was held back by the cool-down
    decided_at: str = ""
    alerts: list[str] = field(default_factory=list)  # for people (a serving outage); never fire

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
        # Cold-start fallbacks only: the reports count outage fallbacks apart (`alerts`).
        fallback = (r.metrics.get("fallback_rate") or {}).get("current")
        if fallback is not None and fallback > policy.max_fallback_rate:
            found.append((r.report_id, f"fallback rate {fallback:.0%} > {policy.max_fallback_rate:.0%}"))
        for name, value in (r.metrics.get("quality") or {}).items():
            if name.startswith("NDCG") and value.get("drop") is not None and value["drop"] > policy.max_quality_drop:
                found.append((r.report_id, f"{name} dropped {value['drop']:.0%} "
                                           f"({value['reference']:.4f} -> {value['current']:.4f})"))
    return found


def alerts(reports: list[D.ReportSummary], policy: TriggerPolicy,
           outage: dict[str, Any] | None = None) -> list[str]:
    """Alerts for people: a serving outage above `max_outage_rate` of the answers. `outage` is
    the run's (`MonitoringRun.outage`: it is there even when every answer was an outage and no
    prediction report could be written); without it the reports' own outage figures count."""
    seen = [outage] if outage else [r.metrics.get("outage") for r in reports if r.metrics.get("outage")]
    found = []
    for facts in seen:
        rate = float(facts.get("rate") or 0.0)
        if facts.get("answers") and rate > policy.max_outage_rate:
            found.append(f"serving outage: {int(facts['answers']):,} of {int(facts.get('answers_total') or 0):,} answers "
                         f"({rate:.0%}) were fallbacks because the feature store was unavailable "
                         f"(> {policy.max_outage_rate:.0%}); this is an alert, not drift: no retraining")
    return found


def decide_retraining(
    reports: list[D.ReportSummary], policy: TriggerPolicy, home: Home, now: pd.Timestamp | None = None,
    outage: dict[str, Any] | None = None,
) -> RetrainDecision:
    """Fire when a threshold is crossed and the last successful trigger is older than the
    cool-down. A serving outage (`outage`, see `alerts`) is listed in `alerts` and never fires."""
    now = _now(now)
    found = crossings(reports, policy)
    raised = alerts(reports, policy, outage)
    if not found:
        return RetrainDecision(False, ["no threshold crossed"], None, decided_at=now.isoformat(), alerts=raised)
    until = _cooldown_until(read_state(home), policy)
    if until is not None and now < until:
        return RetrainDecision(False, [r for _, r in found] + [f"held back: cool-down until {until.isoformat()}"],
                               found[0][0], cooldown_until=until.isoformat(), decided_at=now.isoformat(),
                               alerts=raised)
    return RetrainDecision(True, [r for _, r in found], found[0][0], decided_at=now.isoformat(), alerts=raised)


def fire(
    decision: RetrainDecision, launcher: Launcher, policy: TriggerPolicy, home: Home,
    now: pd.Timestamp | None = None,
) -> Triggered | None:
    """Start training for a firing decision, at most once per cool-down (see the module doc):
    None when the cool-down holds it back or another launch is in flight. The cool-down is
    checked again under the launch lock; an attempt record is written before the launch, and
    the trigger recorded (the cool-down started) only once the launcher returned.

    Raises:
        whatever the launcher raised, after the attempt is recorded as failed (the cool-down
        is left as it was, so the next check tries again).
    """
    if not decision.fire or decision.report_id is None:
        return None
    now = _now(now)
    with _launch_lock(home) as held:
        if not held:
            return None  # another check is launching right now: its launch is this one's too
        with _locked_state(home) as (state, save):
            until = _cooldown_until(state, policy)
            if until is not None and now < until:
                return None
            attempt = {"id": f"{now.isoformat()} {decision.report_id}", "at": now.isoformat(),
                       "report_id": decision.report_id, "reasons": decision.reasons, "status": LAUNCHING}
            state["attempts"] = (state.get("attempts", []) + [attempt])[-MAX_ATTEMPTS:]
            save(state)
        try:
            run = launcher.launch(decision.report_id)
        except BaseException as exc:
            _finish_attempt(home, attempt["id"], {"status": FAILED, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            raise
        with _locked_state(home) as (state, save):
            state.update({"last_triggered_at": now.isoformat(), "report_id": decision.report_id,
                          "reasons": decision.reasons})
            state.setdefault("history", []).append({"at": now.isoformat(), "report_id": decision.report_id, "run": run})
            _update_attempt(state, attempt["id"], {"status": LAUNCHED, "run": run})
            save(state)
    return Triggered(decision.report_id, now.isoformat(), run)


LAUNCHING, LAUNCHED, FAILED = "launching", "launched", "failed"
MAX_ATTEMPTS = 50  # attempt records kept in the state file


def _finish_attempt(home: Home, attempt_id: str, facts: dict[str, Any]) -> None:
    with _locked_state(home) as (state, save):
        _update_attempt(state, attempt_id, {**facts, "finished_at": pd.Timestamp.now(tz="UTC").isoformat()})
        save(state)


def _update_attempt(state: dict[str, Any], attempt_id: str, facts: dict[str, Any]) -> None:
    for attempt in state.get("attempts", []):
        if attempt.get("id") == attempt_id:
            attempt.update(facts)


@contextmanager
def _launch_lock(home: Home) -> Iterator[bool]:
    """The launch lock, taken without waiting: yields False when another process holds it."""
    path = home.trigger_state.with_suffix(".launch.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                yield False
                return
            raise
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(home: Home) -> dict[str, Any]:
    """The trigger state: last successful trigger, its history and every launch attempt."""
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
