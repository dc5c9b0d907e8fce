"""Monitoring pipeline step 2, `drift_decide`: thresholds and cool-down -> fire or not."""

from kfp.dsl import Artifact, Input, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def drift_decide(
    summary: Input[Artifact],
    home: str,
    max_drift_share: float,
    max_fallback_rate: float,
    max_quality_drop: float,
    cooldown_hours: float,
    decision: Output[Artifact],
) -> bool:
    """Write the decision (fire, reasons, triggering report id, alerts) and return whether to
    fire. A serving outage in the window is an alert (printed, and in the decision's `alerts`
    and metadata), never a reason to retrain. A cool-down of 0 or less is refused."""
    import json
    import sys
    from pathlib import Path

    from shoprec.home import Home
    from shoprec.monitoring.drift import ReportSummary
    from shoprec.monitoring.trigger import TriggerPolicy, decide_retraining

    run = json.loads(Path(summary.path).read_text())
    policy = TriggerPolicy(max_drift_share, max_fallback_rate, max_quality_drop, cooldown_hours)
    result = decide_retraining([ReportSummary.from_dict(r) for r in run["reports"]], policy, Home.at(home),
                               outage=run.get("outage"))
    for alert in result.alerts:
        print(f"ALERT: {alert}", file=sys.stderr)
    Path(decision.path).write_text(json.dumps({**result.to_dict(), "policy": policy.__dict__}))
    decision.metadata.update({"fire": result.fire, "report_id": result.report_id, "alerts": result.alerts})
    return result.fire
