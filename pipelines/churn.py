"""The churn pipeline (KFP v2): the platform's data and feature steps, then the churn model.

ingest -> validate -> build_features -> materialize -> churn_train -> churn_register -> churn_deploy
                                                                                   \\-> churn_monitor

The first four are the training pipeline's own steps (`platform.data_steps`, with the same
parameters): the same validation gate (a failed one stops everything after it) and the
platform's online store, which the churn server reads (`shoprec.kserve.churn`). `churn_train`
builds its point-in-time training set in the home's churn Feast home from the clean events, fits
and evaluates; `churn_register` registers the bundle under `shoprec-churn` and applies the gate;
`churn_deploy` runs only when the gate passed (`dsl.If`), as the recommender's deploy: locally it
moves the churn alias the running churn server follows, on a cluster it rolls out the
`shoprec-churn` InferenceService for the version; `churn_monitor` writes the first feature and
prediction drift reports.
"""

from kfp import dsl

from shoprec.churn.labels import DEFAULT_HORIZON_DAYS, DEFAULT_SNAPSHOTS
from shoprec.components.churn_deploy import churn_deploy
from shoprec.components.churn_monitor import churn_monitor
from shoprec.components.churn_register import churn_register
from shoprec.components.churn_train import churn_train
from shoprec.pipelines.platform import (DataParameters, as_deploy_step, data_steps, on_cluster, retry_transient,
                                        with_data_parameters, with_shared_home)

PIPELINE_NAME = "shoprec-churn"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Event log in; a validated, evaluated, gated and deployed churn-risk model (shoprec-churn) out.",
)
@with_data_parameters
def churn_pipeline(
    data: DataParameters,
    registry_uri: str = "",
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    snapshots: int = DEFAULT_SNAPSHOTS,
    step_days: int = 0,
    hidden: int = 32,
    dropout: float = 0.1,
    epochs: int = 300,
    learning_rate: float = 0.003,
    patience: int = 25,
    resamples: int = 1000,
    seed: int = 0,
    deploy_target: str = "local",
    namespace: str = "shoprec",
    canary_traffic_percent: int = 10,
) -> None:
    """Run the steps in order; each consumes the artifacts of the one before it. The data
    parameters (dataset ... max_len, home) are `platform.DataParameters`.

    horizon_days: N, a user is churned at a snapshot when they make no purchase in the next N
    days. snapshots: how many snapshot times (the latest is the test set). step_days: days
    between snapshots (0 = the horizon). registry_uri: the platform's registry root ('' = the
    home's); the churn model's versions live under <root>/shoprec-churn. deploy_target: local,
    cluster or gitops; canary_traffic_percent: the new churn revision's share on probation
    (100: straight to full traffic).
    """
    steps = data_steps(data)
    clean = steps.validate.outputs["clean"]

    train_task = churn_train(
        clean=clean,
        feature_store=steps.materialize.outputs["feature_store"],
        home=data.home,
        horizon_days=horizon_days,
        snapshots=snapshots,
        step_days=step_days,
        hidden=hidden,
        dropout=dropout,
        epochs=epochs,
        learning_rate=learning_rate,
        patience=patience,
        resamples=resamples,
        seed=seed,
    )
    on_cluster(train_task, "churn_train")
    # The churn Feast home lives on the shared home; it needs none of the platform's store
    # credentials (churn.steps.churn_store_settings keeps it off the production registry).
    with_shared_home(train_task)

    register_task = churn_register(model=train_task.outputs["model"], home=data.home, registry_uri=registry_uri)
    on_cluster(register_task, "churn_register")
    # The registry changes outside the run: never skip registration from cache.
    register_task.set_caching_options(enable_caching=False)
    retry_transient(with_shared_home(register_task))

    # kfp.local resolves a condition on a plain return value ("Output"), not on a named one.
    with dsl.If(register_task.outputs["Output"] == True, name="churn-gate-passed"):  # noqa: E712
        deploy_task = churn_deploy(registry_uri=registry_uri, home=data.home,
                                   decision=register_task.outputs["decision"], target=deploy_target,
                                   namespace=namespace, canary_traffic_percent=canary_traffic_percent)
        as_deploy_step(deploy_task, "churn_deploy")

    monitor_task = churn_monitor(clean=clean, model=train_task.outputs["model"],
                                 decision=register_task.outputs["decision"], home=data.home)
    on_cluster(monitor_task, "churn_monitor")
    # It writes into the home's reports folder and index: never skip it from cache.
    monitor_task.set_caching_options(enable_caching=False)
    with_shared_home(monitor_task)
