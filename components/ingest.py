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
    from shoprec.data.loaders import load_dataset

    data = load_dataset(dataset, items_path or None, limit_users or None)
    data.write(raw.path)
    raw.metadata.update(
        {"source": data.source, "events": len(data.events),
         "items": 0 if data.items is None else len(data.items)}
    )
    metrics.log_metric("rows_in", len(data.events))
    log_peak_memory(metrics)



