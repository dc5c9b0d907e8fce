"""Pipeline step `build_features`: clean events -> the Parquet feature tables, as of a time."""

from kfp.dsl import Dataset, Input, Metrics, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def build_features(
    clean: Input[Dataset],
    as_of: str,
    max_len: int,
    features: Output[Dataset],
    metrics: Output[Metrics],
) -> None:
    """Build user_stats, item_stats, user_recent_items and user_history from the clean events.

    `as_of` ('' = the last event's time) is the build time: later events are left out and every
    entity gets a row at it. `max_len` is the length of each user's recent-items sequence;
    user_history keeps `config.DEFAULT_HISTORY_LEN` items per user (what serving sends).
    """
    from shoprec.components._runtime import log_peak_memory
    from shoprec.features.tables import build_features as build

    tables = build(clean.path, features.path, as_of or None, max_len)
    for name, rows in tables.rows().items():  # counted while writing: the tables are not read back
        metrics.log_metric(f"rows_{name}", rows)
    features.metadata.update(
        {"as_of": tables.as_of.isoformat(), "max_len": max_len, "history_len": tables.history_len,
         "snapshot_id": tables.info.get("snapshot_id"), "source": tables.info.get("source")}
    )
    log_peak_memory(metrics)
