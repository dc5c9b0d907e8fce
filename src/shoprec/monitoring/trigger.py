"""The retraining trigger: thresholds decide, a cool-down limits, a launcher starts training.

`decide` reads a run's report summaries against a `TriggerPolicy`; `fire` records the
trigger in `<home>/reports/monitoring/trigger_state.json` under a file lock (so two checks at
once cannot both start training) and only then launches, with the triggering report's id in
the new run's lineage. Launchers: `LocalLauncher` (kfp.local, through
`pipelines.local.run_locally`) and `KfpLauncher` (a cluster: `kfp.Client.create_run_from_pipeline_func`).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import pandas as pd

from shoprec.home import Home
from shoprec.monitoring import drift as D

STATE_FILE = "trigger_state.json"
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
class Decision:
    fire: bool
    reasons: list[str]
    report_id: str | None  # the report that crossed a threshold first
    cooldown_until: str | None = None  # set when a crossing was held back by the cool-down
    decided_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "Decision":
        return Decision(**data)


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


def decide(
    reports: list[D.ReportSummary], policy: TriggerPolicy, home: Home, now: pd.Timestamp | None = None
) -> Decision:
    """Fire when a threshold is crossed and the last trigger is older than the cool-down."""
    now = _now(now)
    found = crossings(reports, policy)
    if not found:
        return Decision(False, ["no threshold crossed"], None, decided_at=now.isoformat())
    until = _cooldown_until(read_state(home), policy)
    if until is not None and now < until:
        return Decision(False, [r for _, r in found] + [f"held back: cool-down until {until.isoformat()}"],
                        found[0][0], cooldown_until=until.isoformat(), decided_at=now.isoformat())
    return Decision(True, [r for _, r in found], found[0][0], decided_at=now.isoformat())


def fire(
    decision: Decision, launcher: Launcher, policy: TriggerPolicy, home: Home,
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
    path = _state_path(home)
    return json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}


class LocalLauncher:
    """Runs the training pipeline (`module:function`) here through kfp.local, in a fresh
    Python process (a kfp.local task cannot define components in-process: kfp.dsl is only
    partly there inside a task: see _KFP_RUNTIME below). The report id goes into the run's `lineage.json` and, when
    the pipeline has a `triggered_by` parameter, into its arguments."""

    def __init__(self, pipeline_ref: str, arguments: dict[str, Any], pipeline_root: Path) -> None:
        self.pipeline_ref, self.arguments, self.pipeline_root = pipeline_ref, dict(arguments), pipeline_root

    def launch(self, report_id: str) -> dict[str, Any]:
        import os
        import subprocess
        import sys

        from shoprec.errors import MonitoringError

        request = json.dumps({"pipeline": self.pipeline_ref, "arguments": self.arguments,
                              "root": str(self.pipeline_root), "report_id": report_id})
        # Inside a KFP task _KFP_RUNTIME=true strips kfp.dsl to the runtime parts; the new
        # process defines and runs pipelines, so it needs the whole SDK.
        env = {**{k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"}, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-c", _LOCAL_RUN, request], capture_output=True, text=True, env=env)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise MonitoringError(f"local training run of {self.pipeline_ref} did not start: "
                                  f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return json.loads(lines[-1])


# What the fresh process runs: the pipeline through pipelines.local.run_locally, then lineage.
_LOCAL_RUN = """
import importlib, json, sys
from pathlib import Path
from pipelines.local import run_locally
from shoprec.monitoring.trigger import LINEAGE_FILE, _with_lineage, pipeline_parameters
request = json.loads(sys.argv[1])
module, _, name = request["pipeline"].partition(":")
pipeline = getattr(importlib.import_module(module), name or "training_pipeline")
arguments = _with_lineage(request["arguments"], request["report_id"], pipeline_parameters(pipeline))
result = run_locally(pipeline, arguments, Path(request["root"]))
(result.root / LINEAGE_FILE).write_text(json.dumps({"triggered_by": request["report_id"], "arguments": arguments}, indent=2, default=str))
print(json.dumps({"mode": "local", "run_folder": str(result.root), "succeeded": result.succeeded, "error": result.error}))
"""


class KfpLauncher:
    """Creates a run on a Kubeflow Pipelines cluster through the KFP client; the report id is
    in the run name and, when the pipeline has a `triggered_by` parameter, its arguments."""

    def __init__(self, client: Any, pipeline: Callable[..., Any], arguments: dict[str, Any],
                 experiment_name: str = "shoprec-retraining") -> None:
        self.client, self.pipeline, self.arguments = client, pipeline, dict(arguments)
        self.experiment_name = experiment_name

    def launch(self, report_id: str) -> dict[str, Any]:
        arguments = _with_lineage(self.arguments, report_id, pipeline_parameters(self.pipeline))
        run_name = f"retrain-{report_id.replace('/', '-')}"
        result = self.client.create_run_from_pipeline_func(
            self.pipeline, arguments=arguments, run_name=run_name, experiment_name=self.experiment_name)
        return {"mode": "kfp", "run_id": getattr(result, "run_id", None), "run_name": run_name,
                "triggered_by": report_id}


def pipeline_parameters(pipeline: Callable[..., Any]) -> set[str]:
    """Input parameter names of a KFP pipeline function (empty when it is not one)."""
    spec = getattr(pipeline, "pipeline_spec", None)
    if spec is None:
        return set()
    return set(spec.root.input_definitions.parameters.keys())


def _with_lineage(arguments: dict[str, Any], report_id: str, parameters: set[str]) -> dict[str, Any]:
    if TRIGGER_PARAMETER in parameters:
        return {**arguments, TRIGGER_PARAMETER: report_id}
    return dict(arguments)


def _cooldown_until(state: dict[str, Any], policy: TriggerPolicy) -> pd.Timestamp | None:
    last = state.get("last_triggered_at")
    return pd.Timestamp(last) + pd.Timedelta(hours=policy.cooldown_hours) if last else None


def _state_path(home: Home) -> Path:
    from shoprec.monitoring.run import monitoring_dir

    return monitoring_dir(home) / STATE_FILE


@contextmanager
def _locked_state(home: Home) -> Iterator[tuple[dict[str, Any], Callable[[dict[str, Any]], None]]]:
    path = _state_path(home)
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
