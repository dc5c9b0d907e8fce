"""The training pipeline (KFP v2):

ingest -> validate -> build_features -> materialize -> train -> evaluate -> promote -> deploy
                                                            \-> monitor

`deploy` runs only when the promotion gate says so (`dsl.If`); a failed validation stops
everything after it. `monitor` writes the first drift report: the training window against the
newest held-out window of the same data (real temporal drift).
"""

from kfp import dsl

from shoprec.config import DEFAULT_MAX_LEN

from shoprec.components.build_features import build_features
from shoprec.components.deploy import deploy
from shoprec.components.evaluate import evaluate
from shoprec.components.ingest import ingest
from shoprec.components.materialize import materialize
from shoprec.components.monitor import monitor
from shoprec.components.promote import promote
from shoprec.components.train import train
from shoprec.components.validate import validate
from shoprec.pipelines.platform import (CLUSTER, on_cluster, on_gpu_node, reaches_redis, retry_transient,
                                        with_secrets, with_shared_home)

PIPELINE_NAME = "shoprec-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Event log in; a validated, evaluated and gated recommender in production out.",
)
def training_pipeline(
    dataset: str = "instacart",
    items_path: str = "",
    limit_users: int = 0,
    max_events_per_user_day: int = 1000,
    window_start: str = "1995-01-01",
    window_end: str = "",
    max_quarantine_share: float = 0.01,
    timestamp_unit: str = "auto",
    features_as_of: str = "",
    home: str = "",
    use_feature_store: bool = True,
    split: str = "temporal",
    cutoff: str = "",
    max_epochs: int = 200,
    budget_minutes: float = 10.0,
    learning_rate: float = 0.001,
    hidden: int = 64,
    max_len: int = DEFAULT_MAX_LEN,
    dropout: float = 0.2,
    train_workers: int = 0,
    registry_uri: str = "",
    min_improvement: float = 0.0,
    coverage_tolerance: float = 0.02,
    short_history_tolerance: float = 0.01,
    deploy_target: str = "local",
    namespace: str = "shoprec",
    canary_traffic_percent: int = 10,
    monitor_window_days: float = 7.0,
    triggered_by: str = "",
) -> None:
    """Run the steps in order; each consumes the artifacts of the one before it.

    `triggered_by` names the drift report that started this run (set by the monitoring
    pipeline's trigger; '' for a run started by hand): it stays in the run's parameters.
    `train_workers` > 0 trains on a Kubeflow PyTorchJob (1 master + N workers) instead of in the
    train pod (cluster only: it needs the Training Operator).
    """
    ingest_task = ingest(dataset=dataset, items_path=items_path, limit_users=limit_users)
    # Name, CPU/memory requests and limits, non-root user, pipeline label (cluster only).
    on_cluster(ingest_task, "ingest")
    # The source may change between runs under the same parameters: never serve it from cache.
    ingest_task.set_caching_options(enable_caching=False)
    # Cluster only (kfp.local ignores these): the shared home volume, settings and object-store keys.
    with_shared_home(ingest_task)

    validate_task = validate(
        raw=ingest_task.outputs["raw"],
        max_events_per_user_day=max_events_per_user_day,
        window_start=window_start,
        window_end=window_end,
        max_quarantine_share=max_quarantine_share,
        timestamp_unit=timestamp_unit,
    )
    on_cluster(validate_task, "validate")

    # Feature tables as of `features_as_of` ('' = the last clean event), then the Feast store
    # of `home` ('' = $SHOPREC_HOME or ./shoprec-home) is applied and materialized.
    features_task = build_features(
        clean=validate_task.outputs["clean"], as_of=features_as_of, max_len=max_len
    )
    on_cluster(features_task, "build_features")
    materialize_task = materialize(
        features=features_task.outputs["features"], home=home
    )
    on_cluster(materialize_task, "materialize")
    # It writes to a store outside the run (the home's online store): never skip it from cache.
    materialize_task.set_caching_options(enable_caching=False)
    # The only pipeline step Redis admits (NetworkPolicy redis-from-feature-server-and-materialize).
    with_secrets(retry_transient(with_shared_home(reaches_redis(materialize_task))), CLUSTER.feature_store)

    # Training reads the point-in-time training set through the Feast feature service.
    train_task = train(
        clean=validate_task.outputs["clean"],
        feature_store=materialize_task.outputs["feature_store"],
        home=home,
        use_feature_store=use_feature_store,
        split=split,
        cutoff=cutoff,
        max_epochs=max_epochs,
        budget_minutes=budget_minutes,
        learning_rate=learning_rate,
        hidden=hidden,
        max_len=max_len,
        dropout=dropout,
        workers=train_workers,
    )
    on_cluster(train_task, "train")
    # On a cluster the transformer trains on a GPU node (selector + toleration) and on the CUDA
    # image; kfp.local ignores both.
    with_secrets(with_shared_home(on_gpu_node(train_task)), CLUSTER.feature_store)

    evaluate_task = evaluate(clean=validate_task.outputs["clean"], model=train_task.outputs["model"])
    on_cluster(evaluate_task, "evaluate")

    promote_task = promote(
        candidate=train_task.outputs["model"],
        data=validate_task.outputs["clean"],
        registry_uri=registry_uri,
        min_improvement=min_improvement,
        coverage_tolerance=coverage_tolerance,
        short_history_tolerance=short_history_tolerance,
    )
    on_cluster(promote_task, "promote")
    promote_task.after(evaluate_task)
    # The verdict depends on the registry's champion, which changes outside the run.
    promote_task.set_caching_options(enable_caching=False)
    retry_transient(with_shared_home(promote_task))

    # kfp.local resolves a condition on a plain return value ("Output"), not on a named one.
    with dsl.If(promote_task.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
        deploy_task = deploy(
            registry_uri=registry_uri,
            decision=promote_task.outputs["decision"],
            target=deploy_target,
            namespace=namespace,
            canary_traffic_percent=canary_traffic_percent,
        )
        on_cluster(deploy_task, "deploy")
        deploy_task.set_caching_options(enable_caching=False)
        # No retry: a failed rollout has already been undone and recorded; a retry would start
        # a second canary and record a second failure for the same decision.
        with_shared_home(deploy_task)

    monitor_task = monitor(
        clean=validate_task.outputs["clean"],
        features=features_task.outputs["features"],
        home=home,
        window_days=monitor_window_days,
        model=train_task.outputs["model"],
        # The gate's verdict: the reference holds the answers of the model in production.
        decision=promote_task.outputs["decision"],
        registry_uri=registry_uri,
    )
    on_cluster(monitor_task, "monitor")
    # It writes into the home's reports folder and index: never skip it from cache.
    monitor_task.set_caching_options(enable_caching=False)
    with_secrets(with_shared_home(monitor_task), CLUSTER.feature_store)
