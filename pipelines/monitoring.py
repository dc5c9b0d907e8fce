"""The monitoring pipeline (KFP v2): drift_reports -> drift_decide -> drift_trigger.

Reports compare the newest window of events and of the prediction log with the reference
saved by the training pipeline's `monitor` step; the decision applies the thresholds and
the cool-down; the trigger starts the training pipeline (locally through kfp.local, on a
cluster as a new KFP run) with the triggering report's id in its lineage."""

from kfp import dsl

from shoprec.components.drift_decide import drift_decide
from shoprec.components.drift_reports import drift_reports
from shoprec.components.drift_trigger import drift_trigger
from shoprec.pipelines.platform import LOG_SALT, on_cluster, retry_transient, with_secrets, with_shared_home

PIPELINE_NAME = "shoprec-monitoring"


@dsl.pipeline(name=PIPELINE_NAME, description="Drift reports; retrain when thresholds are crossed.")
def monitoring_pipeline(
    home: str = "",
    current_events: str = "",
    window_days: float = 7.0,
    drift_share: float = 0.5,
    k: int = 10,
    max_drift_share: float = 0.5,
    max_fallback_rate: float = 0.2,
    max_quality_drop: float = 0.2,
    cooldown_hours: float = 24.0,
    trigger_mode: str = "local",
    kfp_host: str = "",
    training_arguments: str = "{}",
    training_pipeline: str = "shoprec.pipelines.training:training_pipeline",
) -> None:
    """home '' = $SHOPREC_HOME or ./shoprec-home; trigger_mode "local" or "kfp"."""
    reports_task = drift_reports(home=home, current_events=current_events, window_days=window_days,
                                 drift_share=drift_share, k=k)
    on_cluster(reports_task, "drift_reports")
    # Reports read a log and events that change between runs: never from cache.
    reports_task.set_caching_options(enable_caching=False)
    # Cluster only (kfp.local ignores these): the shared home volume, settings and object-store keys.
    # The log's salt: the quality report hashes the events' user ids with it to join the log.
    with_secrets(retry_transient(with_shared_home(reports_task)), LOG_SALT)
    decide_task = drift_decide(summary=reports_task.outputs["summary"], home=home,
                               max_drift_share=max_drift_share, max_fallback_rate=max_fallback_rate,
                               max_quality_drop=max_quality_drop, cooldown_hours=cooldown_hours)
    on_cluster(decide_task, "drift_decide")
    decide_task.set_caching_options(enable_caching=False)  # the cool-down state lives outside the run
    with_shared_home(decide_task)
    trigger_task = drift_trigger(decision=decide_task.outputs["decision"], home=home, mode=trigger_mode,
                                 kfp_host=kfp_host, training_arguments=training_arguments,
                                 training_pipeline=training_pipeline)
    on_cluster(trigger_task, "drift_trigger")
    trigger_task.set_caching_options(enable_caching=False)
    with_shared_home(trigger_task)  # no retry: a retry after a started run would start a second one
