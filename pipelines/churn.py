"""The churn pipeline (KFP v2): the platform's data and feature steps, then the churn model.

ingest -> validate -> build_features -> materialize -> churn_train -> churn_register -> churn_monitor

The first four are the training pipeline's own components: the same validation gate (a failed
one stops everything after it) and the platform's online store, which the churn server reads
(`shoprec.kserve.churn`). `churn_train` builds its point-in-time training set in the home's
churn Feast home from the clean events, fits and evaluates; `churn_register` registers the
bundle under `shoprec-churn` and moves its production alias only when the gate passes;
`churn_monitor` writes the first feature and prediction drift reports.
"""

from kfp import dsl

from shoprec.churn.labels import DEFAULT_HORIZON_DAYS, DEFAULT_SNAPSHOTS
from shoprec.components.build_features import build_features
from shoprec.components.churn_monitor import churn_monitor
from shoprec.components.churn_register import churn_register
from shoprec.components.churn_train import churn_train
from shoprec.components.ingest import ingest
from shoprec.components.materialize import materialize
from shoprec.components.validate import validate
from shoprec.config import DEFAULT_MAX_LEN
from shoprec.pipelines.platform import CLUSTER, on_cluster, reaches_redis, retry_transient, with_secrets, with_shared_home

PIPELINE_NAME = "shoprec-churn"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Event log in; a validated, evaluated and gated churn-risk model (shoprec-churn) out.",
)
def churn_pipeline(
    dataset: str = "instacart",
    items_path: str = "",
    limit_users: int = 0,
    max_events_per_user_day: int = 1000,
    window_start: str = "1995-01-01",
    window_end: str = "",
    max_quarantine_share: float = 0.01,
    timestamp_unit: str = "auto",
    features_as_of: str = "",
    max_len: int = DEFAULT_MAX_LEN,
    home: str = "",
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
) -> None:
    """Run the steps in order; each consumes the artifacts of the one before it.

    horizon_days: N, a user is churned at a snapshot when they make no purchase in the next N
    days. snapshots: how many snapshot times (the latest is the test set). step_days: days
    between snapshots (0 = the horizon). registry_uri: the platform's registry root ('' = the
    home's); the churn model's versions live under <root>/shoprec-churn.
    """
    ingest_task = ingest(dataset=dataset, items_path=items_path, limit_users=limit_users)
    on_cluster(ingest_task, "ingest")
    # The source may change between runs under the same parameters: never serve it from cache.
    ingest_task.set_caching_options(enable_caching=False)
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

    # The platform's feature tables and online store: what the churn server reads per request.
    features_task = build_features(clean=validate_task.outputs["clean"], as_of=features_as_of, max_len=max_len)
    on_cluster(features_task, "build_features")
    materialize_task = materialize(features=features_task.outputs["features"], home=home)
    on_cluster(materialize_task, "materialize")
    materialize_task.set_caching_options(enable_caching=False)
    with_secrets(retry_transient(with_shared_home(reaches_redis(materialize_task))), CLUSTER.feature_store)

    train_task = churn_train(
        clean=validate_task.outputs["clean"],
        feature_store=materialize_task.outputs["feature_store"],
        home=home,
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

    register_task = churn_register(model=train_task.outputs["model"], home=home, registry_uri=registry_uri)
    on_cluster(register_task, "churn_register")
    # The registry changes outside the run: never skip registration from cache.
    register_task.set_caching_options(enable_caching=False)
    retry_transient(with_shared_home(register_task))

    monitor_task = churn_monitor(
        clean=validate_task.outputs["clean"],
        model=train_task.outputs["model"],
        decision=register_task.outputs["decision"],
        home=home,
    )
    on_cluster(monitor_task, "churn_monitor")
    # It writes into the home's reports folder and index: never skip it from cache.
    monitor_task.set_caching_options(enable_caching=False)
    with_shared_home(monitor_task)
