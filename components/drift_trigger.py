"""Monitoring pipeline step 3, `drift_trigger`: start the training pipeline when decided."""

from kfp.dsl import Artifact, Input, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def drift_trigger(
    decision: Input[Artifact],
    home: str,
    mode: str,
    kfp_host: str,
    training_arguments: str,
    training_pipeline: str,
    triggered: Output[Artifact],
) -> None:
    """mode "local": run `training_pipeline` ("module:function") through kfp.local under the
    home's runs/; mode "kfp": create a run on the cluster through kfp.Client(host=kfp_host,
    '' = in-cluster). `training_arguments` is a JSON object of pipeline arguments. The
    cool-down is re-checked under a lock, so the training starts at most once per period."""
    import json
    from pathlib import Path

    from shoprec.home import Home
    from shoprec.kfp.launchers import launcher_for
    from shoprec.monitoring.trigger import RetrainDecision, TriggerPolicy, fire

    stored = json.loads(Path(decision.path).read_text())
    policy = TriggerPolicy(**stored.pop("policy"))
    launcher = launcher_for(mode, training_pipeline, json.loads(training_arguments or "{}"),
                           Home.at(home), kfp_host)
    result = fire(RetrainDecision.from_dict(stored), launcher, policy, Home.at(home))
    facts = {"fired": result is not None, **(result.__dict__ if result else {})}
    Path(triggered.path).write_text(json.dumps(facts, default=str))
    triggered.metadata.update({"fired": result is not None,
                               "triggered_by": result.report_id if result else None})
