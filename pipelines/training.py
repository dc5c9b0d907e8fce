"""The training pipeline (KFP v2): ingest -> validate -> build_features -> materialize.

Later issues add their steps after these."""

from kfp import dsl

from components.build_features import build_features
from components.ingest import ingest
from components.materialize import materialize
from components.validate import validate

PIPELINE_NAME = "shoprec-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Event log in; validated data out (more steps land with later issues).",
)
def training_pipeline(
    dataset: str = "instacart",
    items_path: str = "",
    limit_users: int = 0,
    max_events_per_user_day: int = 1000,
    window_start: str = "1995-01-01",
    window_end: str = "",
    features_as_of: str = "",
    recent_n: int = 50,
    feature_home: str = "",
) -> None:
    """Run the steps in order; a failed validation stops everything after it."""
    ingest_task = ingest(dataset=dataset, items_path=items_path, limit_users=limit_users)
    ingest_task.set_display_name("ingest")
    # The source may change between runs under the same parameters: never serve it from cache.
    ingest_task.set_caching_options(enable_caching=False)

    validate_task = validate(
        raw=ingest_task.outputs["raw"],
        max_events_per_user_day=max_events_per_user_day,
        window_start=window_start,
        window_end=window_end,
    )
    validate_task.set_display_name("validate")

    # Feature tables as of `features_as_of` ('' = the last clean event), then the Feast store
    # of `feature_home` ('' = $SHOPREC_HOME or ./shoprec-home) is applied and materialized.
    features_task = build_features(
        clean=validate_task.outputs["clean"], as_of=features_as_of, recent_n=recent_n
    )
    features_task.set_display_name("build_features")
    materialize_task = materialize(
        features=features_task.outputs["features"], feature_home=feature_home
    )
    materialize_task.set_display_name("materialize")
    # It writes to a store outside the run (the home's online store): never skip it from cache.
    materialize_task.set_caching_options(enable_caching=False)
