"""Pipeline step `ingest`: the event log into the canonical tables."""


from kfp.dsl import Dataset, Metrics, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def ingest(dataset: str, items_path: str, limit_users: int, raw: Output[Dataset],
           metrics: Output[Metrics]) -> None:
    """Load `dataset` ("instacart", "ml-100k" or a file path) into a canonical dataset directory.

    `items_path` ('' for none) names an items file for a user's own events; `limit_users` > 0
    keeps that many users (a real slice for quick runs).
    """
    from shoprec.components._runtime import log_peak_memory
    from shoprec.data.ingest import ingest as ingest_log

    # A file streams batch by batch into the dataset directory: memory is one batch.
    written = ingest_log(dataset, raw.path, items_path or None, limit_users or None)
    raw.metadata.update({"source": written.source, "events": written.events, "items": written.items,
                         "streamed": written.streamed})
    metrics.log_metric("rows_in", written.events)
    log_peak_memory(metrics)



