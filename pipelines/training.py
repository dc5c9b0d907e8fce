"""The training pipeline (KFP v2):

ingest -> validate -> build_features -> materialize -> train -> evaluate -> promote -> deploy
                                                            \-> monitor

`deploy` runs only when the promotion gate says so (`dsl.If`); a failed validation stops
everything after it. `monitor` writes the first drift report: the training window against the
newest held-out window of the same data (real temporal drift).
"""

from kfp import dsl

from shoprec.components.deploy import deploy
from shoprec.config import DEFAULT_TEST_SESSIONS, DEFAULT_TRAIN_MINUTES
from shoprec.components.evaluate import evaluate
from shoprec.components.monitor import monitor
from shoprec.components.promote import promote
from shoprec.components.train import train
from shoprec.pipelines.platform import (CLUSTER, DataParameters, as_deploy_step, data_steps, on_cluster,
                                        on_gpu_node, retry_transient, with_data_parameters, with_secrets,
                                        with_shared_home)

PIPELINE_NAME = "shoprec-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Event log in; a validated, evaluated and gated recommender in production out.",
)
@with_data_parameters
def training_pipeline(
    data: DataParameters,
    use_feature_store: bool = True,
    split: str = "temporal",
    cutoff: str = "",
    max_epochs: int = 200,
    budget_minutes: float = DEFAULT_TRAIN_MINUTES,
    learning_rate: float = 0.001,
    hidden: int = 64,
    dropout: float = 0.2,
    repeat_head: bool = True,
    validate_on_openings: bool = True,
    test_sessions: int = DEFAULT_TEST_SESSIONS,
    train_workers: int = 0,
    registry_uri: str = "",
    min_improvement: float = 0.0,
    coverage_tolerance: float = 0.02,
    short_history_tolerance: float = 0.01,
    require_all_baselines: bool = True,
    deploy_target: str = "local",
    namespace: str = "shoprec",
    canary_traffic_percent: int = 10,
    monitor_window_days: float = 7.0,
    triggered_by: str = "",
) -> None:
    """Run the steps in order; each consumes the artifacts of the one before it. The data
    parameters (dataset ... max_len, home) are `platform.DataParameters`.

    `triggered_by` names the drift report that started this run (set by the monitoring
    pipeline's trigger; '' for a run started by hand): it stays in the run's parameters.
    `repeat_head` lets the train step keep a learned repeat head where validation prefers it
    to the repeat bonus (repeat-purchase data; components/train.py); `validate_on_openings`
    makes a temporal split validate on each user's newest session opening, and `test_sessions`
    tests each user on up to that many session openings after the cut (components/train.py;
    the evaluate and promote steps rebuild the same test set from the bundle's split).
    `require_all_baselines` makes a first model beat every baseline of the data set to be
    promoted (on repeat data BuyAgain, the decayed frequency and TIFU-KNN too); false lets one
    that trails those through with a WARN (components/promote.py).
    `train_workers` > 0 trains on a Kubeflow PyTorchJob (1 master + N workers) instead of in the
    train pod (cluster only: it needs the Training Operator).
    """
    steps = data_steps(data)
    validate_task, features_task, materialize_task = steps.validate, steps.build_features, steps.materialize
    home, max_len = data.home, data.max_len

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
        repeat_head=repeat_head,
        validate_on_openings=validate_on_openings,
        test_sessions=test_sessions,
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
        require_all_baselines=require_all_baselines,
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
        as_deploy_step(deploy_task, "deploy")

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
