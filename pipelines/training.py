"""The training pipeline (KFP v2): ingest -> validate. Later issues add their steps after these."""

from kfp import dsl

from components.ingest import ingest
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
