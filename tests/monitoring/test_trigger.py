"""The trigger: thresholds, at most once per cool-down, the report id in the run's lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shoprec.errors import MonitoringError
from shoprec.home import Home
from shoprec.monitoring import drift as D
from shoprec.monitoring.trigger import (
    RetrainDecision, TriggerPolicy, crossings, decide_retraining, fire, read_state,
)
from shoprec.kfp.launchers import KfpLauncher, LocalLauncher

T0 = pd.Timestamp("2026-03-01 12:00", tz="UTC")


def summary(kind: str, share: float, report_id: str = "run1/user_features", **metrics) -> D.ReportSummary:
    columns = ["a", "b", "c", "d"]
    drifted = columns[: round(share * 4)]
    return D.ReportSummary(report_id, kind, T0.isoformat(), "r", "c", 10, 10, columns, drifted, share,
                           share >= 0.5, metrics=metrics)


class CountingLauncher:
    """Counts launches (stands in for a training run in the cool-down arithmetic only)."""

    def __init__(self) -> None:
        self.launched: list[str] = []

    def launch(self, report_id: str) -> dict:
        self.launched.append(report_id)
        return {"mode": "count", "n": len(self.launched)}


def test_thresholds_name_what_crossed() -> None:
    policy = TriggerPolicy(max_drift_share=0.5, max_fallback_rate=0.2, max_quality_drop=0.1)
    found = crossings([
        summary(D.USER_FEATURES, 0.25),
        summary(D.ITEM_FEATURES, 0.75, "run1/item_features"),
        summary(D.PREDICTIONS, 0.0, "run1/predictions", fallback_rate={"reference": 0.0, "current": 0.4}),
        summary(D.QUALITY, 0.0, "run1/quality",
                quality={"NDCG@10": {"reference": 0.2, "current": 0.1, "drop": 0.5}}),
    ], policy)
    assert [report for report, _ in found] == ["run1/item_features", "run1/predictions", "run1/quality"]
    assert "75% of columns drifted (a, b, c)" in found[0][1]
    assert "fallback rate 40%" in found[1][1] and "NDCG@10 dropped 50%" in found[2][1]


def test_trigger_fires_exactly_once_inside_its_cooldown(tmp_path) -> None:
    home, launcher = Home(tmp_path), CountingLauncher()
    policy = TriggerPolicy(cooldown_hours=24)
    drifted = [summary(D.ITEM_FEATURES, 1.0, "run1/item_features")]
    fired = []
    for hours in (0, 1, 5, 23.9):
        decision = decide_retraining(drifted, policy, home, now=T0 + pd.Timedelta(hours=hours))
        fired.append(fire(decision, launcher, policy, home, now=T0 + pd.Timedelta(hours=hours)))
    assert launcher.launched == ["run1/item_features"]
    assert fired[0] is not None and fired[1:] == [None, None, None]
    held = decide_retraining(drifted, policy, home, now=T0 + pd.Timedelta(hours=2))
    assert not held.fire and held.cooldown_until == (T0 + pd.Timedelta(hours=24)).isoformat()
    # A decision taken before the first trigger landed cannot slip through either.
    stale = RetrainDecision(True, ["drift"], "run2/item_features")
    assert fire(stale, launcher, policy, home, now=T0 + pd.Timedelta(hours=3)) is None
    # After the cool-down it fires again, once.
    later = T0 + pd.Timedelta(hours=24, minutes=1)
    assert fire(decide_retraining(drifted, policy, home, now=later), launcher, policy, home, now=later) is not None
    assert len(launcher.launched) == 2
    assert [h["report_id"] for h in read_state(home)["history"]] == ["run1/item_features"] * 2


def test_no_crossing_never_fires(tmp_path) -> None:
    decision = decide_retraining([summary(D.USER_FEATURES, 0.25)], TriggerPolicy(), Home(tmp_path), now=T0)
    assert not decision.fire and decision.reasons == ["no threshold crossed"]


class FakeKfpApiClient:
    """Test double for the KFP API server (no cluster here): records the run request that
    kfp.Client.create_run_from_pipeline_func would send."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def create_run_from_pipeline_func(self, pipeline_func, arguments, run_name, experiment_name):
        self.calls.append({"pipeline": pipeline_func, "arguments": arguments, "run_name": run_name,
                           "experiment": experiment_name})
        return type("RunPipelineResult", (), {"run_id": "run-123"})()


def test_kfp_launcher_puts_the_report_id_in_the_new_run() -> None:
    from tests.monitoring.retrain_probe import retrain_probe

    client = FakeKfpApiClient()
    facts = KfpLauncher(client, retrain_probe, {"dataset": "ml-100k"}).launch("drift-1/item_features")
    call = client.calls[0]
    assert call["arguments"] == {"dataset": "ml-100k", "triggered_by": "drift-1/item_features"}
    assert call["run_name"] == "retrain-drift-1-item_features" and call["pipeline"] is retrain_probe
    assert facts["run_id"] == "run-123"


def test_local_launcher_runs_the_pipeline_with_lineage(tmp_path) -> None:
    facts = LocalLauncher("tests.monitoring.retrain_probe:retrain_probe", {"dataset": "ml-100k"}, tmp_path / "runs").launch("drift-1/predictions")
    assert facts["succeeded"], facts
    run = Path(facts["run_folder"])
    assert json.loads((run / "lineage.json").read_text())["triggered_by"] == "drift-1/predictions"
    record = json.loads(next(run.glob("record-arguments*/record")).read_text())
    assert record == {"dataset": "ml-100k", "triggered_by": "drift-1/predictions"}


@pytest.mark.parametrize("hours", [0, -1, 0.0, float("nan"), float("inf")])
def test_a_cooldown_that_is_not_a_positive_number_is_refused(hours) -> None:
    with pytest.raises(ValueError, match="cooldown_hours must be a positive number"):
        TriggerPolicy(cooldown_hours=hours)


@pytest.mark.parametrize("field", ["max_drift_share", "max_fallback_rate", "max_quality_drop", "max_outage_rate"])
def test_a_share_threshold_outside_zero_to_one_is_refused(field) -> None:
    with pytest.raises(ValueError, match=f"{field} must be a share"):
        TriggerPolicy(**{field: 1.5})


def test_a_failed_launch_starts_no_cooldown_and_leaves_an_attempt_record(tmp_path) -> None:
    home, policy = Home(tmp_path), TriggerPolicy(cooldown_hours=24)
    drifted = [summary(D.ITEM_FEATURES, 1.0, "run1/item_features")]
    # A real launch that fails: the local launcher's process cannot import the pipeline.
    broken = LocalLauncher("tests.monitoring.no_such_module:pipeline", {}, tmp_path / "runs")
    with pytest.raises(MonitoringError, match="did not start"):
        fire(decide_retraining(drifted, policy, home, now=T0), broken, policy, home, now=T0)
    state = read_state(home)
    assert "last_triggered_at" not in state and "history" not in state
    [failed] = state["attempts"]
    assert failed["status"] == "failed" and failed["report_id"] == "run1/item_features"
    assert "no_such_module" in failed["error"] and failed["at"] == T0.isoformat()
    # The next check, an hour later, is not held back by a cool-down that never started.
    later = T0 + pd.Timedelta(hours=1)
    decision = decide_retraining(drifted, policy, home, now=later)
    assert decision.fire and decision.cooldown_until is None
    launcher = CountingLauncher()
    assert fire(decision, launcher, policy, home, now=later) is not None
    state = read_state(home)
    assert [a["status"] for a in state["attempts"]] == ["failed", "launched"]
    assert state["last_triggered_at"] == later.isoformat() and len(state["history"]) == 1
    # Now the cool-down runs from the successful launch.
    assert not decide_retraining(drifted, policy, home, now=later + pd.Timedelta(hours=23)).fire


def test_a_launch_in_flight_stands_a_second_check_down(tmp_path) -> None:
    home, policy = Home(tmp_path), TriggerPolicy(cooldown_hours=24)
    drifted = [summary(D.ITEM_FEATURES, 1.0, "run1/item_features")]
    second: list = []

    class SlowLauncher(CountingLauncher):
        """While its launch is in flight, a second check decides and fires."""

        def launch(self, report_id: str) -> dict:
            other = decide_retraining([summary(D.USER_FEATURES, 1.0, "run2/user_features")], policy, home, now=T0)
            assert other.fire  # the state says nothing yet: the decision alone would fire
            second.append(fire(other, CountingLauncher(), policy, home, now=T0))
            return super().launch(report_id)

    launcher = SlowLauncher()
    assert fire(decide_retraining(drifted, policy, home, now=T0), launcher, policy, home, now=T0) is not None
    assert second == [None] and launcher.launched == ["run1/item_features"]
    assert [a["report_id"] for a in read_state(home)["attempts"]] == ["run1/item_features"]


def test_a_serving_outage_is_an_alert_never_a_retraining(tmp_path) -> None:
    policy = TriggerPolicy(max_fallback_rate=0.2)
    outage = {"rate": 0.6, "answers": 60, "answers_total": 100}
    quiet = summary(D.PREDICTIONS, 0.0, "run1/predictions",
                    fallback_rate={"reference": 0.0, "current": 0.05}, outage=outage)
    decision = decide_retraining([quiet], policy, Home(tmp_path), now=T0)
    assert not decision.fire and decision.reasons == ["no threshold crossed"]
    [alert] = decision.alerts
    assert "serving outage: 60 of 100 answers (60%)" in alert and "not drift" in alert
    # The run's own outage facts count when no prediction report could be written at all.
    alone = decide_retraining([summary(D.USER_FEATURES, 0.0)], policy, Home(tmp_path), now=T0,
                              outage={"rate": 1.0, "answers": 40, "answers_total": 40})
    assert not alone.fire and "40 of 40 answers (100%)" in alone.alerts[0]
    # A decision round-trips through the pipeline's JSON with its alerts.
    assert RetrainDecision.from_dict(json.loads(json.dumps(decision.to_dict()))).alerts == decision.alerts
